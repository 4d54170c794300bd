"""A finished Table 2 sweep without training: run directories written by the orchestrator's own ledger and summary code
from fake evaluate artifacts that hold the paper's numbers (Table 2 per task at 12.5K steps, Table 10's AVG by step).

Per-task values at an earlier step are the final ones shifted by that step's AVG difference, so each checkpoint's
average (the mean of its tasks, as the evaluate stage computes it) is Table 10's AVG plus the final row's rounding
(raw 42.10, ProX-D 43.48, ProX-D+C 44.62, Go+C4+FW 42.36)."""

from __future__ import annotations

import json
from pathlib import Path

from proxlab.runner.ledger import SUMMARY, Ledger, StageEntry, experiment_summary
from proxlab.report.paper import TABLE10, TABLE10_STEPS, TABLES

TOKENS_PER_STEP = 1024 * 2048  # TLM-S: global batch 1024 × 2048 tokens
STEPS = 12_500
TLM_S_N = 709_830_144  # non-embedding parameters (paper Table 8)
TLM_XS_N = 313_324_800
TRAIN_FLOPS = 6 * TLM_S_N * STEPS * TOKENS_PER_STEP  # 1.116e20
REFINE_FLOPS = {"raw": 0.0, "rules": 0.0, "doc": 2 * TLM_XS_N * 62.5e9, "prox": 2 * TLM_XS_N * (62.5e9 + 19e9)}
REFINERS = {"raw": {}, "rules": {}, "doc": {"doc": "tlm_xs"}, "prox": {"doc": "tlm_xs", "chunk": "tlm_xs"}}


def eval_results(task_values: dict[str, float], step: int | None, checkpoint: str) -> dict:
    """An evaluate results dict in proxlab.evaluate.runner's format (fractions, acc_norm reported)."""
    tasks = {t: {"acc": v - 0.01, "acc_norm": v, "chance": 0.25, "metric": "acc_norm", "n": 100}
             for t, v in task_values.items()}
    return {"suite": "general", "checkpoint": checkpoint, "step": step, "metric": "acc_norm", "tasks": tasks,
            "avg": sum(task_values.values()) / len(task_values), "n_samples": 100 * len(tasks)}


def write_run(sweep_dir: Path, artifacts: Path, variant: str, by_step: dict[int, float] | None,
              final_step: int | None = STEPS, with_presets: bool = True) -> dict:
    """One run directory (ledger.json, summary.json) as run.py writes it; `by_step`: {step: paper AVG} of the
    checkpoints the evaluate stage wrote to by_step/ (None: eval.checkpoints=final)."""
    row = f"tlm_s/{variant}"
    final = TABLES["table2"].rows[row]
    tasks = [task for _, task in TABLES["table2"].columns]

    def values(avg: float) -> dict[str, float]:
        return {t: (v + avg - final[-1]) / 100 for t, v in zip(tasks, final[:-1])}

    key = f"{variant}0000"
    evaluate = artifacts / "evaluate" / key
    evaluate.mkdir(parents=True)
    for step, avg in (by_step or {}).items():
        name = f"step-{step:08d}"
        (evaluate / "by_step").mkdir(exist_ok=True)
        (evaluate / "by_step" / f"{name}.json").write_text(json.dumps(eval_results(values(avg), step, name)))
    run_dir = sweep_dir / f"{variant}-tlm_s-{key}"
    run_dir.mkdir(parents=True)
    ledger = Ledger(run_dir)
    if REFINE_FLOPS[variant]:
        ledger.add(StageEntry("refine.apply_doc", "r" + key, str(artifacts / "refine" / key), False, {"docs_out": 900},
                              {"refine": REFINE_FLOPS[variant]}))
    ledger.add(StageEntry("pretrain", "p" + key, str(artifacts / "pretrain" / key), False,
                          {"steps": STEPS, "tokens": STEPS * TOKENS_PER_STEP, "epochs": 1.0},
                          {"train": float(TRAIN_FLOPS)}, extra={"final_loss": 2.5}))
    ledger.add(StageEntry("evaluate", key, str(evaluate), False, {"tasks": 10},
                          extra={"results": eval_results(values(final[-1]), final_step, "final")}))
    labels = {"experiment": f"table2_{variant}", "sweep": sweep_dir.name, "variant": variant, "model": "tlm_s",
              "corpus": "redpajama_v2", "run_dir": str(run_dir), "paper_table": "table2", "report_row": row}
    if with_presets:
        labels["refiner_presets"] = REFINERS[variant]
    summary = experiment_summary(ledger, labels)
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def paper_curve(variant: str) -> dict[int, float]:
    return dict(zip(TABLE10_STEPS, TABLE10[f"tlm_s/{variant}"]))


def table2_sweep(root: Path) -> Path:
    """raw, ProX-D and ProX-D+C evaluated every 2.5K steps; Go+C4+FW ("rules") at the end only."""
    sweep = root / "runs" / "table2"
    for variant in ("raw", "doc", "prox"):
        write_run(sweep, root / "artifacts", variant, paper_curve(variant))
    write_run(sweep, root / "artifacts", "rules", None)
    return sweep
