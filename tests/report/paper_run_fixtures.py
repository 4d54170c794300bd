"""Finished runs for the paper-table tests, written the way a run leaves them: `config.yaml` composed from conf/ with
Hydra (as run.py saves it, resolved), `ledger.json` and `summary.json` from the orchestrator's own Ledger and
experiment_summary, and an evaluate entry whose accuracies are a paper row's (so each Δ is known in advance)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from proxlab.report.paper import TABLES
from proxlab.runner.compose import compose_config
from proxlab.runner.ledger import SUMMARY, Ledger, StageEntry, experiment_summary
from proxlab.runner.run import run_labels

TLM_S_N = 709_830_144  # non-embedding parameters (paper Table 8)
STEPS, TOKENS_PER_STEP = 12_500, 1024 * 2048


def run_config(overrides: list[str]):
    """The experiment's config as run.py saves it in the run directory (resolved, without Hydra's own node)."""
    cfg = compose_config(overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def write_run(sweep_dir: Path, overrides: list[str], values: tuple[float, ...], name: str,
              stages: dict[str, dict[str, float]] | None = None, by_step: dict[int, float] | None = None) -> dict:
    """A finished run of `overrides` whose evaluation scored `values` (a Table 2-layout row, percent, AVG last);
    `stages`: more ledger entries {stage name: counts} (refining, refiner builds); `by_step`: {step: AVG} of the
    checkpoints evaluated on the way (each task shifted by the AVG difference)."""
    cfg = run_config(overrides)
    run_dir = sweep_dir / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tasks = [task for _, task in TABLES["table2"].columns]

    def results(avg: float, step: int | None, checkpoint: str) -> dict:
        scores = {t: (v + avg - values[-1]) / 100 for t, v in zip(tasks, values[:-1])}
        return {"suite": "general", "checkpoint": checkpoint, "step": step, "metric": "acc_norm",
                "tasks": {t: {"acc": v, "acc_norm": v, "metric": "acc_norm", "n": 100} for t, v in scores.items()},
                "avg": sum(scores.values()) / len(scores), "n_samples": 100 * len(scores)}

    artifacts = sweep_dir.parent / "artifacts" / name
    evaluate = artifacts / "evaluate"
    (evaluate / "by_step").mkdir(parents=True)
    for step, avg in (by_step or {}).items():
        (evaluate / "by_step" / f"step-{step:08d}.json").write_text(json.dumps(results(avg, step, f"step-{step:08d}")))
    ledger = Ledger(run_dir)
    for stage, counts in (stages or {}).items():
        ledger.add(StageEntry(stage, f"{stage}-{name}", str(artifacts / stage), False, counts))
    ledger.add(StageEntry("pretrain", f"p-{name}", str(artifacts / "pretrain"), False,
                          {"steps": STEPS, "tokens": STEPS * TOKENS_PER_STEP, "epochs": 1.0},
                          {"train": 6.0 * TLM_S_N * STEPS * TOKENS_PER_STEP}))
    ledger.add(StageEntry("evaluate", f"e-{name}", str(evaluate), False, {"tasks": 10},
                          extra={"results": results(values[-1], STEPS, "final")}))
    summary = experiment_summary(ledger, run_labels(cfg, run_dir))
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary
