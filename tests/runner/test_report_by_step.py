"""Accuracy by step (paper Tables 10, 12–17): the evaluate stage's by_step results reach summary.json, and the report
renders them per run and as AVG by step beside the paper's Table 10."""

import csv
import json

import pytest
from sweep_fixtures import STEPS, TOKENS_PER_STEP, TRAIN_FLOPS, write_run

from proxlab.runner.ledger import BY_STEP, SUMMARY
from proxlab.report.sweep import build_report


def test_by_step_results_reach_the_run_summary(table2_sweep):
    summary = json.loads(next(table2_sweep.glob(f"raw-*/{SUMMARY}")).read_text())
    curve = summary[BY_STEP]
    assert [p["step"] for p in curve] == [2500, 5000, 7500, 10000, 12500]
    assert [round(100 * p["avg"], 2) for p in curve] == [37.9, 39.9, 41.6, 41.8, 42.1]
    assert curve[2]["tokens"] == 7500 * TOKENS_PER_STEP
    assert curve[2]["flops/train"] == pytest.approx(TRAIN_FLOPS * 7500 / STEPS)
    assert curve[-1]["tasks"]["arc_easy"] == pytest.approx(0.443)
    # per-task keys stay one number each: the curve is not mistaken for a task by the report
    assert not any(k.startswith("eval/") and not isinstance(v, (int, float, str)) for k, v in summary.items())
    rules = json.loads(next(table2_sweep.glob(f"rules-*/{SUMMARY}")).read_text())
    assert rules[BY_STEP] == []  # eval.checkpoints=final


def test_final_checkpoint_is_appended_when_no_step_directory_held_it(tmp_path):
    # save_interval not dividing max_steps: by_step has 2.5K and 5K; final/ (no step_count saved) is step 12.5K
    summary = write_run(tmp_path / "runs" / "s", tmp_path / "artifacts", "raw", {2500: 37.9, 5000: 39.9},
                        final_step=None)
    assert [p["step"] for p in summary[BY_STEP]] == [2500, 5000, STEPS]
    assert summary[BY_STEP][-1]["avg"] == pytest.approx(summary["eval/avg"])
    assert summary[BY_STEP][-1]["flops/train"] == pytest.approx(TRAIN_FLOPS)


def test_report_renders_accuracy_by_step_tables(table2_sweep):
    out = build_report(table2_sweep)
    md = (out / "accuracy_by_step.md").read_text()
    lines = md.splitlines()
    assert "| row | source | run | 2.5K | 5K | 7.5K | 10K | 12.5K |" in lines
    raw_ours = next(line for line in lines if line.startswith("| Raw | ours |"))
    assert raw_ours.endswith("| 37.9 | 39.9 | 41.6 | 41.8 | 42.1 |")
    assert "| Raw | paper |  | 37.9 | 39.9 | 41.6 | 41.8 | 42.1 |" in lines  # Table 10, same steps
    assert "| ProX-D+C | paper |  | 39.5 | 42.0 | 43.5 | 44.4 | 44.6 |" in lines
    assert not any(line.startswith("| Go+C4+FW") for line in lines)  # evaluated at the end only
    # one step × task table per run, in Table 2's column order (paper Tables 12–17)
    assert "| step | tokens | ARC-C | ARC-E | CSQA | HellaS | MMLU | OBQA | PIQA | SIQA | WinoG | SciQ | AVG |" in lines
    assert ("| 12.5K | 26.2B | 26.1 | 44.3 | 29.7 | 39.1 | 27.3 | 29.2 | 66.9 | 39.0 | 52.0 | 67.4 | 42.1 |"
            in lines)
    assert "| 2.5K | 5.2B | 21.9 | 40.1 |" in md  # raw at 2.5K: every task 4.2 below its final value
    with open(out / "accuracy_by_step.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 and rows[0]["row"] == "Raw" and rows[0]["step"] == "2500"
    assert float(rows[0]["avg"]) == pytest.approx(0.379)
    assert float(rows[0]["flops_train"]) == pytest.approx(TRAIN_FLOPS * 2500 / STEPS)
    assert (out / "accuracy_by_step.png").stat().st_size > 10_000


def test_paper_row_sits_under_ours_when_we_evaluated_more_often(tmp_path):
    # checkpoints every 1.25K steps: the paper's Table 10 row fills its 2.5K columns, "–" between
    sweep = tmp_path / "runs" / "table2"
    write_run(sweep, tmp_path / "artifacts", "raw", {1250: 35.0, 2500: 37.9, 3750: 39.0, 5000: 39.9, 7500: 41.6,
                                                        10000: 41.8, 12500: 42.1})
    lines = (build_report(sweep) / "accuracy_by_step.md").read_text().splitlines()
    assert "| row | source | run | 1250 | 2.5K | 3750 | 5K | 7.5K | 10K | 12.5K |" in lines
    assert "| Raw | paper |  | – | 37.9 | – | 39.9 | 41.6 | 41.8 | 42.1 |" in lines
