"""The evaluate stage on a pretrain artifact: final + every intermediate checkpoint, results / by_step / samples files,
metrics.jsonl lines per step, a table per checkpoint, W&B offline, manifest and _SUCCESS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from proxlab.core.stage import StageSpec, read_jsonl, run_stage
from proxlab.evaluate.stage import list_checkpoints, main

torch.set_num_threads(1)


def make_spec(tmp_path: Path, artifact: Path, **cfg) -> StageSpec:
    config = {"suite": "tiny_mc", "tasks": ["arc_easy", "piqa"], "limit": 4, "num_fewshot": None, "batch_size": 4,
              "seed": 1234, "checkpoints": "final", "on_missing_task": "error", "model": None, **cfg}
    return StageSpec(stage="evaluate", key="k" * 16, out_dir=str(tmp_path / "artifact"), config=config,
                     inputs={"checkpoint": str(artifact)}, run_dir=str(tmp_path / "run"), experiment="t",
                     logger={"mode": "offline", "project": "proxlab-test"},
                     runtime={"labels": {"sweep": "s", "variant": "raw", "seed": 1}})


def test_list_checkpoints(tiny_artifact):
    final, steps = list_checkpoints(tiny_artifact)
    assert final == tiny_artifact / "final" and steps == [(10, tiny_artifact / "step-00000010")]


def test_stage_all_checkpoints(tiny_artifact, tmp_path):
    spec = make_spec(tmp_path, tiny_artifact, checkpoints="all")
    result = run_stage(main, spec)
    out = spec.out
    assert (out / "_SUCCESS").exists() and (out / "manifest.json").exists()
    final = json.loads((out / "results.json").read_text())
    step10 = json.loads((out / "by_step" / "step-00000010.json").read_text())
    assert final["checkpoint"] == "final" and final["step"] == 20 and set(final["tasks"]) == {"arc_easy", "piqa"}
    assert step10["checkpoint"] == "step-00000010" and step10["step"] == 10
    assert final["tasks"] != step10["tasks"] or final["avg"] == step10["avg"]
    for name in ("final", "step-00000010"):
        for task in ("arc_easy", "piqa"):
            assert len((out / "samples" / name / f"general_{task}.jsonl").read_text().splitlines()) == 4
    assert result.counts == {"tasks": 2, "samples": 16, "checkpoints": 2} and result.flops == {}
    assert result.extra["results"]["avg"] == final["avg"]
    lines = read_jsonl(out / "metrics.jsonl")
    steps = [(r["step"], r["eval/avg"]) for r in lines if "eval/avg" in r]
    assert steps == [(10, step10["avg"]), (20, final["avg"])]
    assert [r["table"] for r in lines if "table" in r] == ["eval/table/step-00000010", "eval/table/final"]
    summary = [r for r in lines if r.get("summary")]
    assert summary and summary[-1]["eval/final/avg"] == final["avg"]
    assert any((tmp_path / "run" / "wandb").glob("offline-run-*"))
    tables = list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/table/**/*.table.json"))
    assert len(tables) == 2, tables  # one W&B table per checkpoint
    # ... and the accuracies also went into the pretrain run (its id follows from the artifact), at train/step
    from proxlab.core.tracking import artifact_run_id
    from proxlab.report.wandb_sync import history_rows, kind_of, read_run

    [own] = (tmp_path / "run" / "wandb").glob(f"offline-run-*-{artifact_run_id(spec.out)}")
    records = read_run(own, wait_s=20)  # the stage's own run: the experiment's labels, namespaced names
    [run] = [r.run for r in records if kind_of(r) == "run"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["labels"] == {"sweep": "s", "variant": "raw", "seed": 1} and config["stage"] == "evaluate"
    assert history_rows(records)[20]["eval/avg/score"] == final["avg"]
    [piece] = (tmp_path / "run" / "wandb").glob(f"offline-run-*-{artifact_run_id(tiny_artifact)}")
    records = read_run(piece, wait_s=20)
    assert [r.run.job_type for r in records if kind_of(r) == "run"] == ["pretrain"]
    rows = history_rows(records)
    assert sorted(rows) == [10, 20] and [rows[s]["train/step"] for s in (10, 20)] == [10, 20]
    assert rows[10]["eval/avg/score"] == step10["avg"] and rows[20]["eval/avg/score"] == final["avg"]
    assert rows[20]["eval/piqa/acc"] == final["tasks"]["piqa"]["acc"]
    assert rows[20]["eval/piqa/score"] == final["tasks"]["piqa"][final["tasks"]["piqa"]["metric"]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["samples"] == 16


def test_stage_cli_model_override(tiny_artifact, tmp_path):
    """``python -m proxlab.evaluate.stage --spec`` with ``config.model`` set (evaluate a model, not the input)."""
    spec = make_spec(tmp_path, tmp_path / "unused", model=str(tiny_artifact / "step-00000010"), tasks=["piqa"],
                     limit=2)
    spec.logger = {"mode": "disabled"}
    spec_path = tmp_path / "spec.json"
    spec.save(spec_path)
    env = {**os.environ, "PROXLAB_EVAL_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "proxlab.evaluate.stage", "--spec", str(spec_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((spec.out / "results.json").read_text())
    assert res["tasks"]["piqa"]["n"] == 2 and res["step"] == 10
    assert (spec.out / "_SUCCESS").exists()


def test_torch_device_from_accelerator(monkeypatch):
    from proxlab.evaluate.stage import torch_device

    assert torch_device("cpu") == "cpu" and torch_device(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device("gpu") == "cpu" and torch_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device("gpu") == "cuda" and torch_device("auto") == "cuda" and torch_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="accelerator"):
        torch_device("cuda:0")


def test_stage_config_loads_through_the_schema(tmp_path):
    from proxlab.core.config import EvalConfig
    from proxlab.evaluate.stage import load_config

    spec = make_spec(tmp_path, tmp_path / "unused")
    spec.config = {"suite": "tiny_mc"}
    assert load_config(spec) == EvalConfig(suite="tiny_mc")
    spec.config = {"suite": "tiny_mc", "checkpoints": "some"}
    with pytest.raises(ValueError, match="checkpoints"):
        load_config(spec)
    spec.config = {"suite": "tiny_mc", "device": "cuda"}
    with pytest.raises(KeyError, match="device"):
        load_config(spec)
