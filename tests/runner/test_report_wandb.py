"""The sweep's W&B layout, offline (no server is reachable here): the report run's tables and plots, each experiment's
summary run (labels, AVG ± CI, FLOPs, kept ratios), the W&B Report built over them, and `proxlab wandb-sync`: a run
whose offline directories (a requeued stage, evaluation resuming the pretrain run) are merged into one run with its
whole history and uploaded once, and a clear failure without network. Runs are read back from their `.wandb` files as
wandb's own protobuf records (proxlab.report.wandb_sync.read_records)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxlab.cli import main as proxlab
from proxlab.core.paths import REPO_ROOT
from proxlab.core.stage import StageSpec
from proxlab.core.tracking import MetricsLogger, artifact_run_id, wandb_run_id
from proxlab.report.sweep import build_report, load_summaries, report_logger_cfg
from proxlab.report.wandb_report import build_wandb_report
from proxlab.report.wandb_sync import (find_pieces, history_rows, kind_of, plan_uploads, read_records, read_run,
                                       record_uploaded, sync_runs)
from sweep_fixtures import table2_sweep
from test_report_stats import add_samples

KEPT = {"raw": (1000, 2.0e6), "rules": (800, 1.6e6), "doc": (900, 1.7e6), "prox": (850, 1.5e6)}  # docs, tokens


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The Table 2 sweep with per-item results and kept counts, its report logged to W&B offline (once)."""
    sweep = table2_sweep(tmp_path_factory.mktemp("wandb_report"))
    add_samples(sweep)
    for path in sweep.glob("*/summary.json"):
        summary = json.loads(path.read_text())
        docs, tokens = KEPT[summary["variant"]]
        path.write_text(json.dumps({**summary, "docs/raw": 1000, "docs/kept": docs, "tokens/variant": tokens}))
    out = build_report(sweep, log_wandb=True, logger_cfg=report_logger_cfg("table2", "offline", "proxlab", None))
    return sweep, out


def summary_of(records) -> dict:
    out = {}
    for r in records:
        if kind_of(r) == "summary":
            out.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update})
    return out


def config_of(records) -> dict:
    [run] = [r.run for r in records if kind_of(r) == "run"]
    out = {u.key: json.loads(u.value_json) for u in run.config.update}
    for r in records:
        if kind_of(r) == "config":
            out.update({u.key: json.loads(u.value_json) for u in r.config.update})
    return out


def test_report_logs_tables_and_plots_to_wandb(logged):
    sweep, out = logged
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    images = {r["image"]: r["path"] for r in records if "image" in r}
    assert {"report/plot/accuracy_vs_flops", "report/plot/paper/table2", "report/plot/accuracy_by_step",
            "report/plot/flops"} <= set(images)
    assert images["report/plot/flops"] == str(out / "flops.png")
    tables = {r["table"]: r for r in records if "table" in r}
    assert {"report/table", "report/paper/table2", "report/avg_by_step", "report/flops"} <= set(tables)
    assert tables["report/flops"]["columns"][-3:] == ["train to target", "total to target", "vs raw"]

    # one row per experiment, numbers (not "43.5 ± 0.9" strings) that W&B's table sorts and groups
    experiments = tables["report/experiments"]
    rows = {r[experiments["columns"].index("variant")]: dict(zip(experiments["columns"], r))
            for r in experiments["data"]}
    assert set(rows) == {"raw", "rules", "doc", "prox"}
    prox, raw = rows["prox"], rows["raw"]
    assert prox["sweep"] == "table2" and prox["experiment"] == "table2_prox" and prox["report_row"] == "tlm_s/prox"
    assert prox["avg_ci_low"] < prox["avg"] < prox["avg_ci_high"] and 0 < prox["avg_se"] < 0.02
    assert prox["delta_avg"] > 0 and prox["significant"] is True and prox["delta_ci_low"] > 0  # paired, vs raw
    assert raw["delta_avg"] is None and raw["significant"] is None  # the baseline itself
    assert prox["docs_kept_ratio"] == 0.85 and prox["tokens_kept_ratio"] == 0.75 and raw["tokens_kept_ratio"] == 1
    assert prox["flops_total"] > raw["flops_total"] == raw["flops_train"]
    assert isinstance(prox["arc_easy"], float) and 0 < prox["arc_easy_se"] < 0.05
    # the AVG-vs-FLOPs chart's error bars: each experiment's interval at its FLOPs
    bars = tables["report/avg_vs_flops"]
    prox_bars = {row[-1]: row[3] for row in bars["data"] if row[1] == "prox"}
    assert bars["columns"] == ["run", "variant", "flops_total", "avg", "bound"] and len(bars["data"]) == 12
    assert prox_bars == {"low": prox["avg_ci_low"], "avg": prox["avg"], "high": prox["avg_ci_high"]}

    pieces = find_pieces(sweep.parent, "table2")
    [report] = pieces[wandb_run_id(sweep, "report")]  # the report's own run, beside the sweep's run directories
    assert report.dir.parent == sweep / "wandb"
    plots = report.dir / "files" / "media" / "images" / "report" / "plot"
    media = {p.name.split("_")[0] for p in plots.rglob("*.png")}
    assert {"accuracy", "flops", "table2"} <= media  # the PNGs themselves went into the W&B run
    run_records = read_run(report.dir, wait_s=20)
    [run] = [r.run for r in run_records if kind_of(r) == "run"]
    assert (run.run_group, run.job_type, run.display_name) == ("table2", "report", "table2/report")
    # the tables are summary values of the run, which W&B's table panels show (runs.summary['report/...'])
    assert {"report/experiments/nrows", "report/avg_vs_flops/nrows"} <= set(summary_of(run_records))


def test_each_experiment_has_a_summary_run_with_labels_intervals_flops_and_kept_ratios(logged):
    sweep, out = logged
    experiments = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                       if json.loads(line).get("table") == "report/experiments")
    rows = {r[experiments["columns"].index("variant")]: dict(zip(experiments["columns"], r))
            for r in experiments["data"]}
    pieces = find_pieces(sweep.parent, "table2")
    for summary in load_summaries(sweep):
        variant = summary["variant"]
        [piece] = pieces[wandb_run_id(summary["run_dir"], "summary")]  # the id the orchestrator's summary run has
        assert piece.dir.parent == Path(summary["run_dir"]) / "wandb"
        records = read_run(piece.dir, wait_s=20)
        [run] = [r.run for r in records if kind_of(r) == "run"]
        assert run.run_group == f"table2_{variant}" and run.job_type == "summary"  # group = the experiment
        assert "sweep:table2" in run.tags and f"variant:{variant}" in run.tags
        labels = config_of(records)["labels"]
        assert (labels["sweep"], labels["variant"], labels["model"], labels["corpus"], labels["report_row"]) == (
            "table2", variant, "tlm_s", "redpajama_v2", f"tlm_s/{variant}")
        values = summary_of(records)
        row = rows[variant]
        assert values["eval/avg/score"] == summary["eval/avg"] == row["avg"]
        assert values["eval/avg/ci_low"] < values["eval/avg/score"] < values["eval/avg/ci_high"]
        assert values["eval/avg/se"] == row["avg_se"] and values["eval/arc_easy/se"] == row["arc_easy_se"]
        assert values["flops/total"] == summary["flops/total"] and values["tokens/train"] == summary["tokens/train"]
        assert values["refine/docs_kept_ratio"] == KEPT[variant][0] / 1000
        assert ("eval/avg/delta" in values) == (variant != "raw")


def test_wandb_report_has_the_sweeps_panels(logged, capsys):
    import wandb_workspaces.reports.v2 as wr

    sweep, out = logged
    report = build_wandb_report(sweep, entity="", project="proxlab")  # offline: nothing looked up
    headings = [b.text for b in report.blocks if isinstance(b, wr.H2)]
    assert headings == ["AVG vs FLOPs", "Accuracy by step, per variant", "Tables", "Loss per variant"]
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    panels = [(p, g.runsets[0]) for g in grids for p in g.panels]

    def one(kind, **match):
        found = [(p, rs) for p, rs in panels
                 if isinstance(p, kind) and all(getattr(p, k) == v for k, v in match.items())]
        assert len(found) == 1, (kind, match, panels)
        return found[0]

    # AVG vs FLOPs with error bars: the report run's avg_vs_flops table (low, AVG, high at each run's FLOPs) drawn
    # as one vertical line per run, the report's own PNG with its error bars, and the summary runs as points
    chart, chart_runs = one(wr.CustomChart, chart_name="wandb/line/v0")
    assert chart.query == {"summaryTable": {"tableKey": "report/avg_vs_flops"}}
    assert chart.chart_fields == {"x": "flops_total", "y": "avg", "stroke": "run"}
    assert chart_runs.filters == "JobType = 'report' and Group = 'table2'"
    media, _ = one(wr.MediaBrowser)
    assert media.media_keys == ["report/plot/accuracy_vs_flops"]
    scatter, scatter_runs = one(wr.ScatterPlot)
    assert (scatter.x, scatter.y) == (wr.SummaryMetric("flops/total"), wr.SummaryMetric("eval/avg/score"))
    assert scatter_runs.filters == "JobType = 'summary' and Config('labels.sweep') = 'table2'"
    # accuracy by step and loss: the pretrain runs, grouped by variant, against train/step
    by_step, pretrain_runs = one(wr.LinePlot, title="AVG by training step")
    loss, _ = one(wr.LinePlot, title="training loss")
    for plot in (by_step, loss):
        assert plot.x == "train/step" and plot.groupby == wr.Config("labels.variant")
    assert by_step.y == ["eval/avg/score"] and loss.y == ["train/loss"]
    assert pretrain_runs.filters == "JobType = 'pretrain' and Config('labels.sweep') = 'table2'"
    # the paper table and the sortable experiments table, as the report run logged them
    tables = [p.table_name for p, _ in panels if isinstance(p, wr.WeavePanelSummaryTable)]
    assert tables == ["report/paper/table2", "report/experiments"]
    logged_tables = {json.loads(line).get("table") for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert {chart.query["summaryTable"]["tableKey"], *tables} <= logged_tables
    model = report._to_model()  # the spec W&B would save, built offline
    assert model.display_name == "table2: pretraining-data ablations" and len(model.spec.blocks) >= 10

    with pytest.raises(SystemExit) as exit_:
        proxlab(["wandb-report", f"runs_dir={sweep.parent}", "sweep=table2"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "CustomChart: AVG vs total FLOPs (vertical bars: 95% intervals) [report]" in printed
    assert "LinePlot: training loss [pretraining]" in printed
    assert "WeavePanelSummaryTable: report/paper/table2 [report]" in printed and "built, not published" in printed
    with pytest.raises(SystemExit, match="entity"):
        proxlab(["wandb-report", f"runs_dir={sweep.parent}", "sweep=table2", "publish=true"])


# ---------------------------------------------------------------------------------------------------------------------
# wandb-sync


def eval_results(step: int, score: float) -> dict:
    return {"step": step, "avg": score, "tasks": {"arc_easy": {"acc": score - 0.01, "acc_norm": score,
                                                               "metric": "acc_norm"}}}


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
    """runs/s1: a pretraining preempted at step 6 (checkpoint at 3) and resumed to step 11, whose wandb service was
    killed before it wrote step 11 (the stage's metrics.jsonl has it, and the run's plan.json names the artifact),
    then evaluated (the evaluate stage's own code adds its results to the pretrain run); runs/s2: a stage that ran
    once."""
    from proxlab.evaluate.stage import log_into_pretrain_run

    root = tmp_path_factory.mktemp("wandb_sync")
    runs, artifacts = root / "runs", root / "artifacts"
    run_dir, pretrain = runs / "s1" / "prox-tiny-abc", artifacts / "pretrain" / "k1"
    logger_cfg = {"mode": "offline", "project": "proxlab", "group": "exp1"}
    labels = {"sweep": "s1", "variant": "prox", "seed": 3}
    jsonl = [{"job": "pretrain", "step": s, "loss": 10 + s} for s in range(1, 4)]
    jsonl += [{"job": "pretrain", "step": s, "loss": 20 + s, "lr": 0.1} for s in range(4, 12)]
    pretrain.mkdir(parents=True)
    (pretrain / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in jsonl))
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(json.dumps([{"stage": "pretrain", "key": "k1", "out_dir": str(pretrain)}]))
    for attempt, steps in ((1, range(1, 7)), (2, range(4, 11))):
        log = MetricsLogger(None, "pretrain", logger_cfg, run_dir, config={"labels": labels, "stage": "pretrain",
                                                                           "key": "k1"},
                            run_id=artifact_run_id(pretrain))
        for step in steps:
            log.log({"loss": 10 * attempt + step, "lr": 0.1}, step=step)
        if attempt == 2:
            log.summary({"final_loss": 30.0})
        log.close()
        time.sleep(1.1)  # offline run directories are named to the second
    spec = StageSpec(stage="evaluate", key="e1", out_dir=str(artifacts / "evaluate" / "e1"), config={},
                     inputs={"checkpoint": str(pretrain)}, run_dir=str(run_dir), logger=logger_cfg)
    log_into_pretrain_run(spec, [eval_results(5, 0.3), eval_results(10, 0.4)])
    other = MetricsLogger(None, "tokenize", logger_cfg, runs / "s2" / "raw-tiny-def",
                          run_id=artifact_run_id(artifacts / "tokenize" / "k2"))
    other.log({"tokens": 5})
    other.close()
    for piece in [p for ps in find_pieces(runs).values() for p in ps]:
        read_run(piece.dir, wait_s=20)  # wandb's service has written each file
    return runs, artifact_run_id(pretrain)


def test_wandb_sync_merges_a_resumed_run_into_one_with_its_whole_history(resumed_runs, capsys):
    runs, run_id = resumed_runs
    pieces = find_pieces(runs, "s1")
    assert list(pieces) == [run_id] and len(pieces[run_id]) == 3  # two attempts and evaluation, one id
    with pytest.raises(SystemExit) as exit_:
        proxlab(["wandb-sync", f"runs_dir={runs}", "sweep=s1", "dry_run=true"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    merged = next((runs / ".wandb-sync").glob(f"offline-run-*-{run_id}"))
    assert "1 W&B run(s) under" in out and "1 to upload" in out
    assert f"would run: {sys.executable} -m wandb sync {merged} (3 offline directories merged)" in out

    records = list(read_records(merged / f"run-{run_id}.wandb"))
    kinds = [kind_of(r) for r in records]
    assert kinds[:2] == ["header", "run"] and kinds.count("run") == 1 and kinds[-1] == "exit"
    assert [r.num for r in records] == list(range(1, len(records) + 1))
    [run] = [r.run for r in records if kind_of(r) == "run"]
    assert run.run_id == run_id and run.job_type == "pretrain" and run.run_group == "exp1" and not run.resume
    assert config_of(records)["labels"] == {"sweep": "s1", "variant": "prox", "seed": 3}
    rows = history_rows(records)
    assert sorted(rows) == list(range(1, 12)) and kinds.count("history") == 11  # every step once
    # steps 4-6 are the resumed attempt's (it restarted from the checkpoint at 3); 11 only the jsonl has
    assert [rows[s]["train/loss"] for s in range(1, 12)] == [11, 12, 13, 24, 25, 26, 27, 28, 29, 30, 31]
    assert all(rows[s]["train/step"] == s for s in rows) and rows[11]["train/lr"] == 0.1
    assert (rows[5]["eval/arc_easy/score"], rows[10]["eval/avg/score"], rows[10]["eval/arc_easy/acc"]) == (
        0.3, 0.4, 0.39)  # evaluation joins the pretrain rows of its checkpoints' steps
    assert "eval/arc_easy/score" not in rows[4]
    step_metrics = {(r.metric.glob_name or r.metric.name): r.metric.step_metric for r in records
                    if kind_of(r) == "metric"}
    assert step_metrics["eval/*"] == step_metrics["train/*"] == "train/step"
    assert summary_of(records)["train/final_loss"] == 30.0


def test_wandb_sync_uploads_each_run_once_until_it_changes(resumed_runs, capsys):
    runs, run_id = resumed_runs
    uploads, done = plan_uploads(runs)
    assert {u.run_id: len(u.pieces) for u in uploads}[run_id] == 3 and len(uploads) == 2 and done == []
    assert sync_runs(runs, uploads, dry_run=True) == []
    single = next(u for u in uploads if u.run_id != run_id)
    assert single.path == single.pieces[0].dir  # a run in one piece is uploaded as it is
    for upload in uploads:  # as a successful `wandb sync` records it
        record_uploaded(runs, upload)
    assert plan_uploads(runs) == ([], sorted(u.run_id for u in uploads))
    with pytest.raises(SystemExit):
        proxlab(["wandb-sync", f"runs_dir={runs}", "dry_run=true"])
    assert "0 to upload, 2 uploaded before with the same files" in capsys.readouterr().out
    # evaluation resumes the pretrain run once more: the run is merged and uploaded again, whole
    from proxlab.evaluate.stage import log_into_pretrain_run

    time.sleep(1.1)
    pieces = find_pieces(runs)[run_id]
    spec = StageSpec(stage="evaluate", key="e2", out_dir=str(runs.parent / "artifacts" / "evaluate" / "e2"),
                     config={}, inputs={"checkpoint": str(runs.parent / "artifacts" / "pretrain" / "k1")},
                     run_dir=str(pieces[0].dir.parent.parent), logger={"mode": "offline", "project": "proxlab"})
    log_into_pretrain_run(spec, [eval_results(10, 0.5)])
    read_run(find_pieces(runs)[run_id][-1].dir, wait_s=20)
    uploads, done = plan_uploads(runs)
    assert [(u.run_id, len(u.pieces)) for u in uploads] == [(run_id, 4)] and len(done) == 1
    assert plan_uploads(runs, force=True)[1] == []  # force: every run again


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sync(runs_dir, env, *extra, sweep="s2"):
    return subprocess.run([sys.executable, "-m", "proxlab.cli", "wandb-sync", f"runs_dir={runs_dir}", f"sweep={sweep}",
                           *extra], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env)


def offline_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # a home without W&B credentials, and a server nobody listens on
    return {**env, "HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / ".config" / "wandb"),
            "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}", **extra}


def test_wandb_sync_without_network_fails_naming_the_run(resumed_runs, tmp_path):
    runs, run_id = resumed_runs
    [[piece]] = find_pieces(runs, "s2").values()
    r = sync(runs, offline_env(tmp_path), "force=true")
    assert r.returncode == 1
    assert f"wandb sync of {piece.dir} failed" in r.stderr and "No API key configured" in r.stderr
    # with a key, wandb retries the dead server for minutes: the timeout ends it and says why. The merged run: wandb's
    # own reader took its run record from the merged file and was setting the run up on the server.
    r = sync(runs, offline_env(tmp_path, WANDB_API_KEY="local-" + "0" * 40), "timeout_s=3", "force=true", sweep="s1")
    [merged] = (runs / ".wandb-sync").glob(f"offline-run-*-{run_id}")
    assert r.returncode == 1
    assert f"wandb sync of {merged} timed out after 3 s" in r.stderr and "reachable" in r.stderr
    assert f"setting up run {run_id}" in r.stderr
    assert "1 of 1 run(s) not synced" in r.stderr
    with pytest.raises(SystemExit, match="no sweep 'nope'"):
        proxlab(["wandb-sync", f"runs_dir={runs}", "sweep=nope"])


def test_an_experiments_stage_runs_carry_its_labels_in_its_group():
    """What the orchestrator gives every stage run (spec.runtime["labels"] → the run's config) and its W&B group."""
    from proxlab.runner.compose import compose_config
    from proxlab.runner.run import experiment_labels, wandb_settings

    cfg = compose_config(["exp=table2", "refine=prox", "train.seed=2"])
    assert experiment_labels(cfg, Path("/runs/table2/prox-tlm_s-abc")) == {
        "sweep": "table2", "experiment": "table2_prox", "variant": "prox", "model": "tlm_s",
        "corpus": "redpajama_v2", "seed": 2, "data_seed": None, "paper_table": "table2", "report_row": "tlm_s/prox",
        "run": "prox-tlm_s-abc"}
    settings = wandb_settings(cfg)
    assert settings["group"] == "table2_prox" and settings["name_prefix"] == "table2_prox/prox/tlm_s/seed2/"
    assert {"sweep:table2", "variant:prox", "seed:2"} <= set(settings["tags"])
