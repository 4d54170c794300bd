"""The LitGPT-checkpoint lm-eval model: tiny_mc end to end, parity with the same weights in Hugging Face format
(must-show 2), greedy generation with stop sequences, few-shot and missing-data behaviour, the math pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.api.instance import Instance

from proxlab.evaluate.tasks import general_docs as g
from proxlab.evaluate.tasks import math_docs as mt
from proxlab.evaluate.tasks.data import MissingTaskData, lighteval_subset, read_jsonl, resolve_data_dir
from proxlab.evaluate.lms.litgpt import LitGPTLM
from proxlab.evaluate.runner import evaluate_model, make_lm, run_suite

DATA_DIR = resolve_data_dir()
torch.set_num_threads(1)  # 2 busy shared cores: one thread is faster and steadier


@pytest.fixture(scope="module")
def lit_lm(tiny_artifact):
    return LitGPTLM(tiny_artifact, batch_size=4)


@pytest.fixture(scope="module")
def hf_lm(tiny_hf):
    return make_lm(tiny_hf, batch_size=4, hf_impl="hflm")


@pytest.fixture(scope="module")
def hf_shared_lm(tiny_hf):
    return make_lm(tiny_hf, batch_size=4, hf_impl="shared")


def mc_requests(n_per_task: int = 4) -> list[Instance]:
    reqs = []
    for task, builder in (("arc_easy_test", g.arc), ("hellaswag_validation", g.hellaswag),
                          ("winogrande_xl_validation", g.winogrande), ("sciq_validation", g.sciq)):
        docs = lighteval_subset([builder(r, i) for i, r in enumerate(read_jsonl(DATA_DIR / "eval" / f"{task}.jsonl"))],
                                n_per_task)
        delim = "" if "winogrande" in task else " "
        for d in docs:
            for j, c in enumerate(d["choices"]):
                reqs.append(Instance("loglikelihood", d, (d["query"], delim + c), j))
    long_ctx = " ".join(r["question"] for r in read_jsonl(DATA_DIR / "eval" / "arc_easy_test.jsonl")[:60])
    reqs.append(Instance("loglikelihood", {}, (long_ctx, " the end of a long context"), 0))  # > block_size: truncated
    return reqs


def test_tiny_mc_on_litgpt_checkpoint(tiny_artifact, tmp_path):
    res = evaluate_model(str(tiny_artifact), {"suite": "tiny_mc", "limit": 6, "batch_size": 4}, tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["tasks"] == res["tasks"] and on_disk["checkpoint"] == "final" and on_disk["step"] == 20
    assert list(res["tasks"]) == ["arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq"]
    avg = sum(e["acc_norm"] for e in res["tasks"].values()) / 5
    assert res["avg"] == pytest.approx(avg) and res["metric"] == "acc_norm"
    for name, e in res["tasks"].items():
        assert e["n"] == 6 and e["metric"] == "acc_norm" and 0 <= e["acc"] <= 1 and 0 <= e["acc_norm"] <= 1
        rows = [json.loads(x) for x in (tmp_path / "samples" / f"general_{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 6
        # the per-sample scores re-derive from the logged log-likelihoods with lighteval's definitions
        for r in rows:
            assert len(r["loglikelihoods"]) == len(r["continuations"]) >= 2
            assert g.score_choices(r["loglikelihoods"], r["continuations"], r["gold"]) == {"acc": r["acc"], "acc_norm": r["acc_norm"]}
        assert e["acc"] == pytest.approx(sum(r["acc"] for r in rows) / 6)
        assert e["acc_norm"] == pytest.approx(sum(r["acc_norm"] for r in rows) / 6)
        assert e["chance"] == pytest.approx(sum(1 / len(r["continuations"]) for r in rows) / 6)
    assert res["tasks"]["piqa"]["chance"] == 0.5 and res["tasks"]["sciq"]["chance"] == 0.25
    hs = [json.loads(x) for x in (tmp_path / "samples" / "general_hellaswag.jsonl").read_text().splitlines()]
    assert all(r["context"].endswith(" ") and r["continuations"][0].startswith(" ") for r in hs)


def test_same_tokens_and_loglikelihoods_as_hf(lit_lm, hf_lm, hf_shared_lm):
    assert lit_lm.tok_encode("Hello world") == hf_lm.tok_encode("Hello world")
    assert lit_lm.tok_encode("Hello world")[0] == lit_lm.lit_tokenizer.bos_id  # BOS on both sides
    reqs = mc_requests()
    a = lit_lm.loglikelihood(reqs, disable_tqdm=True)
    b = hf_lm.loglikelihood(reqs, disable_tqdm=True)
    c = hf_shared_lm.loglikelihood(reqs, disable_tqdm=True)
    diff_hf = max(abs(x[0] - y[0]) for x, y in zip(a, b))
    diff_shared = max(abs(x[0] - y[0]) for x, y in zip(b, c))
    print(f"max |loglik LitGPT - HF| = {diff_hf:.2e}; max |HF - HF shared-context| = {diff_shared:.2e} "
          f"over {len(reqs)} requests")
    assert diff_hf < 1e-4 and diff_shared < 1e-4
    assert [x[1] for x in a] == [y[1] for y in b] == [z[1] for z in c]
    assert len({round(x[0], 3) for x in a}) > len(a) // 2  # not degenerate


def test_same_accuracies_as_hf(lit_lm, hf_lm):
    cfg = {"suite": "general", "tasks": ["arc_easy", "winogrande"], "limit": 12}
    ra, rb = run_suite(lit_lm, cfg), run_suite(hf_lm, cfg)
    for t in cfg["tasks"]:
        assert ra["tasks"][t] == rb["tasks"][t], t


def test_greedy_generation_matches_hf_and_stops(lit_lm, hf_lm):
    ctxs = ["Question: What is the capital of France?\nAnswer:", "The cat sat on the", "1 + 1 = 2. 2 + 2 ="]
    gk = {"until": ["\n\nQuestion:"], "max_gen_toks": 24, "do_sample": False}
    reqs = [Instance("generate_until", {}, (c, dict(gk)), 0) for c in ctxs]
    a = lit_lm.generate_until(reqs, disable_tqdm=True)
    b = hf_lm.generate_until([Instance("generate_until", {}, (c, dict(gk)), 0) for c in ctxs], disable_tqdm=True)
    assert a == b and all(len(x) > 0 for x in a)
    # a stop string taken from the middle of the free output cuts the output right before it
    text = a[0]
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = lit_lm.generate_until([Instance("generate_until", {}, (ctxs[0], {"until": [stop], "max_gen_toks": 24}), 0)],
                                disable_tqdm=True)[0]
    assert cut == text.split(stop)[0] and stop not in cut


def test_selection_fewshot_and_missing_task(lit_lm):
    with pytest.raises(MissingTaskData, match="logiqa"):
        run_suite(lit_lm, {"suite": "selection", "tasks": ["logiqa", "piqa"], "limit": 2})
    res = run_suite(lit_lm, {"suite": "selection", "tasks": ["logiqa", "arc_easy", "winogrande"], "limit": 3,
                             "num_fewshot": 2, "on_missing_task": "skip"})
    assert list(res["tasks"]) == ["arc_easy", "winogrande"] and "logiqa" in res["skipped"]
    assert res["tasks"]["winogrande"]["metric"] == "acc" and res["tasks"]["winogrande"]["acc_norm"] is None
    assert res["tasks"]["arc_easy"]["metric"] == "acc_norm" and res["num_fewshot"] == 2


def test_math_pipeline_prompts(lit_lm, tmp_path):
    res = run_suite(lit_lm, {"suite": "math", "tasks": [], "limit": 1, "max_gen_toks": 4}, samples_dir=tmp_path)
    assert set(res["tasks"]) == set(mt.QA_TASKS + mt.PS_TASKS) and res["metric"] == "acc"
    from proxlab.evaluate.tasks.suites import MATH

    for task, (file, shots) in MATH.items():
        rec = json.loads((tmp_path / f"math_{task}.jsonl").read_text().splitlines()[0])
        shots_rows = read_jsonl(DATA_DIR / "math_eval" / "fewshot" / f"{task}.jsonl")
        assert len(shots_rows) == shots
        doc = mt.BUILDERS[task](read_jsonl(DATA_DIR / file)[0], 0)
        demo = "\n\n\n".join(mt.render_exemplar(task, r["question"], r["answer"]) for r in shots_rows)
        assert rec["prompt"] == demo + "\n\n\n" + doc["prompt"], task
        assert rec["gt"] == doc["gt"] and rec["acc"] in (0.0, 1.0)
        assert res["tasks"][task]["n"] == 1


def test_continuation_longer_than_the_window_is_scored_in_blocks(tiny_artifact, tiny_hf):
    # A tiny model's short window and a long HellaSwag ending: every continuation token is still scored, each block
    # with as much preceding text as fits. Checked against the same weights run by transformers on each window.
    from transformers import AutoModelForCausalLM

    window = 16
    lm = LitGPTLM(tiny_artifact, batch_size=4, max_length=window)
    ctx = lm.tok_encode("A man is sitting on a roof. He")
    cont = lm.tok_encode(" is using wrap to wrap a pair of skis, then he climbs down the ladder and walks across the "
                         "yard to the garage where his friends are waiting with more skis", add_special_tokens=False)
    assert len(cont) > 2 * window
    windows = lm.score_windows(ctx, cont)
    assert len(windows) >= 3
    assert [tok for _, targets in reversed(windows) for tok in targets] == cont  # each token exactly once
    whole = ctx + cont
    hf = AutoModelForCausalLM.from_pretrained(tiny_hf, torch_dtype=torch.float32).eval()
    expected = 0.0
    for inp, targets in windows:
        assert 0 < len(inp) <= window and len(targets) <= len(inp)
        assert (inp + targets[-1:])[-len(targets):] == targets  # the input's last positions predict the targets
        assert any(whole[i: i + len(inp) + 1] == inp + targets[-1:] for i in range(len(whole)))  # a slice of the text
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([inp])).logits[0].float(), -1)
        rows = logp[len(inp) - len(targets):]
        expected += float(rows.gather(-1, torch.tensor(targets)[:, None]).sum())
    ((ll, greedy),) = lm._loglikelihood_tokens([(None, ctx, cont)], disable_tqdm=True)
    assert ll == pytest.approx(expected, abs=1e-3) and ll < 0 and isinstance(greedy, bool)
