"""The FLOPs comparison of the paper's Fig. 8: training + refining FLOPs at the end and to reach a target accuracy,
optionally with the refiner's own pretraining (which the paper's footnote 2 leaves out)."""

import csv

import pytest
from sweep_fixtures import STEPS, TLM_XS_N, TRAIN_FLOPS, write_run

from proxlab.cli import main as proxlab
from proxlab.core.config import ReportConfig
from proxlab.report.sweep import build_report
from proxlab.report.flops import flops_to_reach

REFINER_PRETRAINING = 6 * TLM_XS_N * 26_214_400_000  # TLM-XS on ~26B raw tokens: 4.93e19


def read_rows(out):
    with open(out / "flops.csv") as f:
        return {r["row"]: r for r in csv.DictReader(f)}


def num(v):
    return None if v == "" else float(v)


def test_flops_to_reach_interpolates_between_evaluated_points():
    curve = [(1.0, 0.30), (2.0, 0.40), (3.0, 0.45)]
    assert flops_to_reach(curve, 0.35) == (pytest.approx(1.5), False)
    assert flops_to_reach(curve, 0.45) == (pytest.approx(3.0), False)
    assert flops_to_reach(curve, 0.25) == (1.0, True)  # already there at the first point: an upper bound
    assert flops_to_reach(curve, 0.50) == (None, False)


def test_matched_raw_accuracy_costs_as_in_the_paper(table2_sweep):
    # Fig. 8, 0.7B: raw TLM-S reaches AVG 41.6 at 7.5K steps, "6.7×1e19" FLOPs (6·709.8M·15.73B)
    out = build_report(table2_sweep, options=ReportConfig(target_avg=41.6))
    raw = read_rows(out)["Raw"]
    assert num(raw["flops_train_to_target"]) == pytest.approx(6.70e19, rel=1e-3)
    assert num(raw["target_avg"]) == pytest.approx(0.416)
    # Fig. 5's sweep sets one level per base size (conf/exp/fig5.yaml); other models keep the raw baseline
    out = build_report(table2_sweep, options=ReportConfig(target_avg_by_model={"tlm_s": 41.6, "tlm_m": 42.9}))
    assert num(read_rows(out)["Raw"]["flops_train_to_target"]) == pytest.approx(6.70e19, rel=1e-3)
    assert "Target AVG: 41.6 for tlm_s, 42.9 for tlm_m." in (out / "flops.md").read_text()


def test_default_target_is_the_raw_runs_final_average(table2_sweep):
    out = build_report(table2_sweep)
    rows = read_rows(out)
    assert {r["target_avg"] for r in rows.values()} == {rows["Raw"]["final_avg"]}  # 42.1
    # ProX-D+C crosses 42.1 between 5K (42.02) and 7.5K (43.52): step 5133.3; its refining is counted whole
    prox = rows["ProX-D+C"]
    train = TRAIN_FLOPS * (5000 + 0.08 / 1.5 * 2500) / STEPS
    assert num(prox["flops_train_to_target"]) == pytest.approx(train, rel=1e-6)
    assert num(prox["flops_total_to_target"]) == pytest.approx(train + 2 * TLM_XS_N * 81.5e9, rel=1e-6)
    assert num(rows["ProX-D"]["flops_train_to_target"]) == pytest.approx(
        TRAIN_FLOPS * (5000 + 0.72 / 1.70 * 2500) / STEPS, rel=1e-6)
    assert num(rows["Raw"]["flops_train_to_target"]) == pytest.approx(TRAIN_FLOPS)  # reaches its own at the end
    assert rows["Go+C4+FW"]["upper_bound"] == "True"  # evaluated at the end only
    assert rows["ProX-D+C"]["flops_refiner_pretraining"] == ""  # off by default, as in the paper
    md = (out / "flops.md").read_text()
    rules = "| Go+C4+FW | rules-tlm_s-rules0000 | 1.12e+20 | 0.00e+00 | – | 1.12e+20 | 42.4 | 42.1 | ≤1.12e+20 |"
    assert rules in md
    prox_line = next(line for line in md.splitlines() if line.startswith("| ProX-D+C |"))
    assert prox_line.endswith("| 4.58e+19 | 9.69e+19 | 87% |")  # 87% of raw's total FLOPs to the same accuracy
    tex = (out / "flops.tex").read_text()
    assert r"\begin{tabular}{llrrrrrrrrr}" in tex and r"$\le$1.12e+20" in tex
    assert (out / "flops.png").stat().st_size > 20_000


def test_rows_that_never_reach_the_target_are_marked(table2_sweep):
    out = build_report(table2_sweep, options=ReportConfig(target_avg=44.0))
    rows = read_rows(out)
    assert [r for r, v in rows.items() if v["flops_total_to_target"] == ""] == ["Raw", "Go+C4+FW", "ProX-D"]
    assert num(rows["ProX-D+C"]["flops_train_to_target"]) == pytest.approx(
        TRAIN_FLOPS * (7500 + 0.48 / 0.90 * 2500) / STEPS, rel=1e-6)
    md = (out / "flops.md").read_text()
    assert md.count("| not reached | not reached |") == 3
    assert "Target AVG: 44.0." in md


def test_refiner_pretraining_is_counted_on_request(table2_sweep):
    out = build_report(table2_sweep, options=ReportConfig(include_refiner_pretraining=True))
    rows = read_rows(out)
    # one pretrained TLM-XS base for both refining levels (paper §3.1), 6·N·D
    for row in ("ProX-D", "ProX-D+C"):
        assert num(rows[row]["flops_refiner_pretraining"]) == pytest.approx(REFINER_PRETRAINING)
    assert rows["Raw"]["flops_refiner_pretraining"] == "" and rows["Go+C4+FW"]["flops_refiner_pretraining"] == ""
    prox = rows["ProX-D+C"]
    assert num(prox["flops_total"]) == pytest.approx(TRAIN_FLOPS + 2 * TLM_XS_N * 81.5e9 + REFINER_PRETRAINING)
    assert "4.93e+19" in (out / "flops.md").read_text()

    out = build_report(table2_sweep, options=ReportConfig(include_refiner_pretraining=True,
                                                          refiner_pretraining_flops=5.3e19))  # footnote 2
    assert num(read_rows(out)["ProX-D+C"]["flops_refiner_pretraining"]) == 5.3e19


def test_refiner_of_unknown_size_is_not_guessed(tmp_path):
    sweep = tmp_path / "runs" / "s"
    write_run(sweep, tmp_path / "artifacts", "raw", None)
    write_run(sweep, tmp_path / "artifacts", "prox", None, with_presets=False)  # a summary from before presets
    out = build_report(sweep, options=ReportConfig(include_refiner_pretraining=True))
    assert read_rows(out)["ProX-D+C"]["flops_refiner_pretraining"] == ""
    assert "refiner size unknown" in (out / "flops.md").read_text()


def test_report_command_takes_report_options(table2_sweep, capsys):
    proxlab(["report", f"runs_dir={table2_sweep.parent}", "sweep=table2", "report.target_avg=41.6", "wandb=false"])
    assert num(read_rows(table2_sweep / "report")["Raw"]["flops_train_to_target"]) == pytest.approx(6.70e19,
                                                                                                  rel=1e-3)
    assert "Target AVG: 41.6." in capsys.readouterr().out
    with pytest.raises(SystemExit, match="report.<key>=value"):
        proxlab(["report", f"runs_dir={table2_sweep.parent}", "sweep=table2", "target_avg=41.6"])


def test_sweep_callback_builds_the_report_with_the_sweeps_options(table2_sweep):
    from proxlab.runner.compose import compose_config
    from proxlab.report.sweep import SweepReportCallback

    cfg = compose_config(["exp=smoke", "sweep=table2", f"paths.runs_dir={table2_sweep.parent}", "logger=none",
                          "report.target_avg=41.6"])
    SweepReportCallback().on_multirun_end(cfg)
    assert num(read_rows(table2_sweep / "report")["Raw"]["flops_train_to_target"]) == pytest.approx(6.70e19,
                                                                                                  rel=1e-3)
