"""The foundation end to end on CPU: a raw-vs-rules sweep through every real stage (datatrove, LitData, LitGPT on
Fabric, lm-eval, W&B offline), reuse on rerun, and SIGKILL-then-rerun equal to an uninterrupted run.

Smaller than `make demo` (fewer documents, steps and eval samples) so it fits in CI's default suite (about 5.5 min on
2 quiet cores); the same code paths run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxlab.core.paths import REPO_ROOT
from proxlab.core.stage import read_jsonl

SMALL = ["exp=smoke", "corpus.num_docs=300", "corpus.docs_per_shard=100", "train.max_steps=12",
         "train.save_interval=4", "train.log_interval=2", "eval.limit=20", "model.tokenizer.vocab_size=1024"]


def proxlab_cmd(tmp: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "proxlab.cli", "run", *SMALL, *overrides,
            f"paths.artifacts_dir={tmp / 'artifacts'}", f"paths.runs_dir={tmp / 'runs'}"]


def run(tmp: Path, *overrides: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    r = subprocess.run(proxlab_cmd(tmp, *overrides), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r


def summaries(tmp: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["variant"]: json.loads(p.read_text())
            for p in (tmp / "runs" / "smoke").glob("*/summary.json")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    t0 = time.perf_counter()
    first = run(tmp, "-m", "refine=raw,rules")
    first_s = time.perf_counter() - t0
    return tmp, first, first_s


def test_sweep_produces_artifacts_runs_metrics_and_report(sweep):
    tmp, _, _ = sweep
    runs = summaries(tmp)
    assert set(runs) == {"raw", "rules"}
    raw, rules = runs["raw"], runs["rules"]
    assert raw["docs/kept"] == raw["docs/raw"] == 300
    assert 0 < rules["docs/kept"] < 300  # the rules drop some of the web documents
    for s in (raw, rules):
        assert s["tokens/train"] == 12 * 8 * 256
        assert s["flops/train"] > 0 and s["flops/total"] == s["flops/refine"] + s["flops/train"]
        for task in ("arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq"):
            assert 0.0 <= s[f"eval/{task}"] <= 1.0
        assert s["eval/avg"] == pytest.approx(sum(s[f"eval/{t}"] for t in
                                                  ("arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq")) / 5)
        run_dir = Path(s["run_dir"])
        metrics = read_jsonl(run_dir / "metrics.jsonl")
        assert any(m.get("job") == "pretrain" and "loss" in m for m in metrics)
        assert any(m.get("job") == "summary" and "eval/avg" in m and "flops/total" in m for m in metrics)
        assert list((run_dir / "wandb").glob("offline-run-*"))  # W&B offline, one run per stage job
        ledger = json.loads((run_dir / "ledger.json").read_text())
        assert ledger["totals"]["flops/train"] == s["flops/train"]
        for entry in ledger["stages"].values():
            manifest = json.loads((Path(entry["out_dir"]) / "manifest.json").read_text())
            assert manifest["git"]["commit"] is not None and "torch" in manifest["packages"]
            assert (Path(entry["out_dir"]) / "_SUCCESS").exists()
    # raw and rules share the prepared corpus and the tokenizer, and nothing else upstream of training
    assert set(rules["reused_stages"]) >= {"prepare", "tokenizer"} or set(raw["reused_stages"]) >= {"prepare",
                                                                                                    "tokenizer"}
    report = tmp / "runs" / "smoke" / "report"
    table = (report / "table.md").read_text()
    assert "| raw |" in table and "| rules |" in table
    assert (report / "table.csv").exists() and (report / "accuracy_vs_flops.png").stat().st_size > 1000


def test_rerun_reuses_every_stage(sweep):
    tmp, _, first_s = sweep
    t0 = time.perf_counter()
    again = run(tmp, "-m", "refine=raw,rules")
    again_s = time.perf_counter() - t0
    assert again.stdout.count("reused 5/5 stages") == 1 and again.stdout.count("reused 6/6 stages") == 1
    assert "running proxlab." not in again.stdout
    print(f"first sweep {first_s:.1f} s, rerun {again_s:.1f} s ({100 * again_s / first_s:.1f}%)")


def wait_for(predicate, timeout_s: float, proc: subprocess.Popen, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(poll_s)


@pytest.mark.parametrize("kill_in", ["tokenize", "pretrain"])
def test_sigkill_then_rerun_equals_uninterrupted(sweep, tmp_path, kill_in):
    ref = summaries(sweep[0])["raw"]
    art = tmp_path / "artifacts"
    proc = subprocess.Popen(proxlab_cmd(tmp_path, "refine=raw"), cwd=REPO_ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if kill_in == "tokenize":  # inside tokenization: a split is being written (it takes a second or two)
            wait_for(lambda: any((art / "tokenize").glob("*/.tmp-train")), 600, proc, poll_s=0.01)
        else:
            wait_for(lambda: any((art / "pretrain").glob("*/step-*")), 900, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stage_dir = next((art / kill_in).glob("*"))
    assert not (stage_dir / "_SUCCESS").exists()  # it really was interrupted
    run(tmp_path, "refine=raw")
    got = summaries(tmp_path)["raw"]
    for key in ("docs/kept", "tokens/variant", "tokens/train", "flops/train", "train/final_loss", "eval/avg",
                "eval/arc_easy", "eval/hellaswag", "eval/piqa"):
        assert got[key] == pytest.approx(ref[key], abs=1e-5), key
