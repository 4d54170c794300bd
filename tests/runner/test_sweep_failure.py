"""A local sweep (`proxlab run -m`) survives a failed experiment: the others run, the report shows the failed row with
its stage, error, spec and log, and the command exits non-zero at the end.

Three experiments that differ only in the sciq data file the evaluate stage reads; the middle one's file has a corrupt
line, which nothing notices before that stage reads it. Tiny (60 documents, 2 steps, 4 eval samples): prepare,
tokenizer, tokenize and pretrain run once and are shared, so the sweep costs one training and three evaluations.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from proxlab.core.paths import REPO_ROOT
from proxlab.runner.sweep import FAILURE

SCIQ = REPO_ROOT.parent / "shared" / "data" / "eval" / "sciq_validation.jsonl"
TINY = ["exp=smoke", "logger=none", "corpus.num_docs=60", "corpus.docs_per_shard=20", "train.max_steps=2",
        "train.warmup_steps=1", "train.save_interval=2", "eval.limit=4", "eval.tasks=[sciq]",
        "model.tokenizer.vocab_size=300"]


def test_a_failed_experiment_does_not_end_the_sweep(tmp_path):
    lines = SCIQ.read_text().splitlines(keepends=True)
    good_a, good_b, bad = tmp_path / "sciq_a.jsonl", tmp_path / "sciq_b.jsonl", tmp_path / "sciq_corrupt.jsonl"
    good_a.write_text("".join(lines[:40]))
    good_b.write_text("".join(lines[40:80]))
    bad.write_text("".join(lines[:3]) + '{"question": "cut off\n')  # a truncated record: invalid JSON on line 4

    proc = subprocess.run(
        [sys.executable, "-m", "proxlab.cli", "run", "-m", *TINY, f"+eval.task_files.sciq={good_a},{bad},{good_b}",
         f"paths.runs_dir={tmp_path / 'runs'}", f"paths.artifacts_dir={tmp_path / 'artifacts'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-5000:]

    sweep = tmp_path / "runs" / "smoke"
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    failures = [json.loads(p.read_text()) for p in sweep.glob(f"*/{FAILURE}")]
    # The two good experiments finished, the third one after the failure; they shared everything up to evaluate.
    assert len(summaries) == 2 and all(0 <= s["eval/sciq"] <= 1 for s in summaries), out[-5000:]
    assert out.index("the sweep goes on") < out.rindex("finished in")
    assert any(set(s["reused_stages"]) == {"prepare", "tokenizer", "tokenize", "pretrain"} for s in summaries)
    # The failed one says which stage failed, and where its spec and log are.
    (failed,) = failures
    assert failed["status"] == "failed" and failed["stage"] == "evaluate" and failed["exit_code"] == 1
    assert f"+eval.task_files.sciq={bad}" in failed["overrides"]
    spec = json.loads(Path(failed["spec"]).read_text())
    assert spec["stage"] == "evaluate" and Path(failed["spec"]).parent == Path(failed["stage_dir"])
    assert Path(failed["log"]).parent == Path(failed["run_dir"])
    assert not (Path(failed["run_dir"]) / "summary.json").exists()
    assert f"{bad}:4: invalid JSON" in out  # the stage's own error, in the sweep's output

    # The report: two result rows and the failed row, then what failed and where to look.
    table = (sweep / "report" / "table.md").read_text()
    assert table.count("| raw | tiny | 60/60 |") == 2
    assert "| raw | tiny | failed: evaluate |" in table
    assert "Failed experiments (1)" in table and failed["spec"] in table and failed["log"] in table
    rows = list(csv.reader((sweep / "report" / "table.csv").open()))
    assert [r[2] for r in rows[1:]].count("failed: evaluate") == 1 and len(rows) == 4
    # The end of the sweep names the failed experiment once more.
    tail = out[out.rindex("experiment(s) of the sweep failed"):]
    assert str(bad) in tail and "stage evaluate failed" in tail
