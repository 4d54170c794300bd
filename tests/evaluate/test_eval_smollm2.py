"""SmolLM2-135M-Instruct (the only real LM available offline) on the general suite with a sample limit: above chance on
ARC-Easy, PIQA, SciQ and HellaSwag (must-show 1). Slow (tens of minutes on 2 busy cores): marked ``slow``.

The full must-show run is ``python -m proxlab.evaluate.smollm2_general`` (limit 100, 4 per MMLU subject); this test
runs a smaller limit on the four tasks the claim is about, plus a LitGPT-vs-HF check on the real model's tokenizer.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_smollm2_above_chance(tmp_path):
    import torch

    from proxlab.evaluate.runner import evaluate_model, format_table
    from proxlab.models.smollm2 import ensure_smollm2

    torch.set_num_threads(1)
    model_dir = ensure_smollm2()
    res = evaluate_model(str(model_dir), {"suite": "general", "tasks": ["arc_easy", "piqa", "sciq", "hellaswag"],
                                          "limit": 60}, tmp_path)
    print(format_table(res))
    for task in ("arc_easy", "piqa", "sciq", "hellaswag"):
        e = res["tasks"][task]
        assert e["n"] == 60 and e["acc_norm"] > e["chance"], (task, e)


def test_smollm2_litgpt_matches_hf(tmp_path):
    """Must-show 2 on a real model: SmolLM2 converted to a LitGPT checkpoint scores like the HF original."""
    import shutil

    import torch
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    from proxlab.evaluate.lms.litgpt import LitGPTLM
    from proxlab.evaluate.runner import make_lm, run_suite
    from proxlab.models.smollm2 import ensure_smollm2

    torch.set_num_threads(1)
    hf_dir = ensure_smollm2()
    lit_dir = tmp_path / "smollm2-lit"  # a name litgpt's SmolLM2 BOS special case does not match
    lit_dir.mkdir()
    for f in hf_dir.iterdir():
        if f.is_file() and not f.name.startswith("."):
            (lit_dir / f.name).symlink_to(f)
    convert_hf_checkpoint(lit_dir, model_name="SmolLM2-135M-Instruct", dtype="float32")
    lit = LitGPTLM(lit_dir, batch_size=8)
    hf = make_lm(hf_dir, batch_size=8, hf_impl="hflm")
    assert lit.tok_encode("Question: why?\nAnswer:") == hf.tok_encode("Question: why?\nAnswer:")
    cfg = {"suite": "general", "tasks": ["arc_easy", "piqa"], "limit": 20}
    ra, rb = run_suite(lit, cfg, samples_dir=tmp_path / "lit"), run_suite(hf, cfg, samples_dir=tmp_path / "hf")
    import json

    diffs = []
    for task in cfg["tasks"]:
        assert ra["tasks"][task] == rb["tasks"][task], task
        la = [json.loads(x) for x in (tmp_path / "lit" / f"general_{task}.jsonl").read_text().splitlines()]
        lb = [json.loads(x) for x in (tmp_path / "hf" / f"general_{task}.jsonl").read_text().splitlines()]
        diffs += [abs(x - y) for a, b in zip(la, lb) for x, y in zip(a["loglikelihoods"], b["loglikelihoods"])]
    print(f"SmolLM2 LitGPT vs HF: max |loglik diff| = {max(diffs):.2e} over {len(diffs)} requests")
    assert max(diffs) < 1e-4
