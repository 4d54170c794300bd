"""The W&B side of a sweep's report, laid out for side-by-side ablations (docs/report.md, "W&B").

- `experiment_tables`: one row per experiment with numbers W&B's table UI sorts and groups (labels; AVG with its
  standard error and 95% interval; the paired difference from the baseline with its interval and p-value; each task's
  score; FLOPs; kept ratios), and each experiment's AVG interval as a vertical segment at its total FLOPs (the error
  bars of the AVG-vs-FLOPs chart). The report step logs them into the sweep's report run as `report/experiments` and
  `report/avg_vs_flops`.
- `log_summary_runs`: the same numbers as the summary values of each experiment's summary run (job type `summary`,
  in the experiment's group; the orchestrator opened it with the experiment's totals, the report resumes it).
- `proxlab wandb-report sweep=NAME`: a W&B Report (the `wandb-workspaces` package) over these runs and the sweep's
  pretrain runs: AVG vs FLOPs with error bars, accuracy by step per variant, the paper tables and the experiments
  table, loss per variant. It is built offline; `publish=true` saves it to the W&B server (after `proxlab
  wandb-sync`, which uploads the runs it shows).

Values are fractions (0.435), as every accuracy proxlab logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from proxlab.core.tracking import MetricsLogger, experiment_wandb_settings
from proxlab.report.stats import AVG, Interval, SweepStats

LABELS = ("experiment", "sweep", "variant", "model", "corpus", "seed", "data_seed", "paper_table", "report_row",
          "run")
BOUNDS = ("low", "avg", "high")


def experiment_labels(summary: dict[str, Any]) -> dict[str, Any]:
    """An experiment's labels (as its stage runs carry them, proxlab.runner.run.experiment_labels) from its summary;
    the seeds from its saved config when the summary does not name them."""
    labels = {k: summary.get(k) for k in LABELS if k != "run"}
    labels["run"] = Path(summary["run_dir"]).name
    config = Path(summary["run_dir"]) / "config.yaml"
    if labels["seed"] is None and config.exists():
        train = (yaml.safe_load(config.read_text()) or {}).get("train") or {}
        labels["seed"], labels["data_seed"] = train.get("seed"), train.get("data_seed")
    return labels


def _interval(prefix: str, iv: Interval | None) -> dict[str, float | None]:
    return {f"{prefix}_se": iv and iv.se, f"{prefix}_ci_low": iv and iv.low, f"{prefix}_ci_high": iv and iv.high}


def experiment_rows(summaries: list[dict[str, Any]], stats: SweepStats, tasks: list[str]) -> list[dict[str, Any]]:
    """One dict per experiment: labels, then numbers (None where there is none: no per-sample results, no
    baseline)."""
    raw_tokens = {(s.get("model"), s.get("corpus")): s.get("tokens/variant") for s in summaries
                  if s.get("variant") == "raw"}
    rows = []
    for s in summaries:
        acc = stats.accuracy(s, tasks) if stats.has_samples() else {}
        delta = (stats.versus_baseline(s, tasks) if stats.has_samples() else {}).get(AVG)
        raw = raw_tokens.get((s.get("model"), s.get("corpus")))
        row = {**experiment_labels(s), "avg": s.get("eval/avg"), **_interval("avg", acc.get(AVG)),
               "delta_avg": delta and delta.value, **_interval("delta", delta), "delta_p": delta and delta.p,
               "significant": delta.significant if delta else None}
        for task in tasks:
            row[task] = s.get(f"eval/{task}")
            row[f"{task}_se"] = acc[task].se if task in acc else None
        row.update({"flops_refine": s.get("flops/refine"), "flops_train": s.get("flops/train"),
                    "flops_total": s.get("flops/total"), "tokens_train": s.get("tokens/train"),
                    "docs_kept_ratio": _ratio(s.get("docs/kept"), s.get("docs/raw")),
                    "tokens_kept_ratio": _ratio(s.get("tokens/variant"), raw)})
        rows.append(row)
    return rows


def _ratio(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def experiment_tables(rows: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """{name: (columns, data)}: `experiments` (a row per experiment) and `avg_vs_flops` (three points per experiment:
    its AVG's interval bounds and the AVG itself, at its total FLOPs; the value alone without an interval)."""
    columns = list(rows[0]) if rows else list(LABELS)
    bars = []
    for r in rows:
        if r["avg"] is None or r["flops_total"] is None:
            continue
        values = {"low": r["avg_ci_low"], "avg": r["avg"], "high": r["avg_ci_high"]}
        bars += [[r["run"], r["variant"], r["flops_total"], values[b], b] for b in BOUNDS if values[b] is not None]
    return {"experiments": (columns, [[r.get(c) for c in columns] for r in rows]),
            "avg_vs_flops": (["run", "variant", "flops_total", "avg", "bound"], bars)}


def summary_values(row: dict[str, Any], tasks: list[str]) -> dict[str, float]:
    """A row's numbers under the names the runs use (`eval/avg/score`, `eval/<task>/se`, `flops/total`, ...)."""
    out = {"eval/avg/score": row["avg"], "eval/avg/se": row["avg_se"], "eval/avg/ci_low": row["avg_ci_low"],
           "eval/avg/ci_high": row["avg_ci_high"], "eval/avg/delta": row["delta_avg"],
           "eval/avg/delta_ci_low": row["delta_ci_low"], "eval/avg/delta_ci_high": row["delta_ci_high"],
           "eval/avg/delta_p": row["delta_p"], "flops/refine": row["flops_refine"], "flops/train": row["flops_train"],
           "flops/total": row["flops_total"], "tokens/train": row["tokens_train"],
           "refine/docs_kept_ratio": row["docs_kept_ratio"], "refine/tokens_kept_ratio": row["tokens_kept_ratio"]}
    for task in tasks:
        out[f"eval/{task}/score"], out[f"eval/{task}/se"] = row[task], row[f"{task}_se"]
    return {k: v for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_summary_runs(summaries: list[dict[str, Any]], rows: list[dict[str, Any]], tasks: list[str],
                     logger_cfg: dict[str, Any]) -> None:
    """Each experiment's numbers into its summary run (`logger_cfg`: the report's W&B mode, project and entity)."""
    base = {k: logger_cfg.get(k) for k in ("backend", "mode", "project", "entity") if k in logger_cfg}
    for summary, row in zip(summaries, rows):
        labels = {k: row[k] for k in LABELS}
        logger = MetricsLogger(None, job="summary", logger_cfg=experiment_wandb_settings(base, labels),
                               run_dir=summary["run_dir"], config={"labels": labels})
        try:
            logger.summary(summary_values(row, tasks))
        finally:
            logger.close()


# ---------------------------------------------------------------------------------------------------------------------
# The W&B Report


def runset(name: str, filters: str, entity: str, project: str):
    import wandb_workspaces.reports.v2 as wr

    return wr.Runset(entity=entity, project=project, name=name, filters=filters)


def build_wandb_report(sweep_dir: Path, entity: str = "", project: str = "proxlab"):
    """The sweep's W&B Report (not saved). `entity` empty: build it without looking anything up (offline)."""
    import wandb_workspaces.reports.v2 as wr

    from proxlab.report.sweep import load_summaries

    sweep = Path(sweep_dir).name
    summaries = load_summaries(sweep_dir)
    paper_tables = sorted({s["paper_table"] for s in summaries if s.get("paper_table")})
    in_sweep = f"Config('labels.sweep') = '{sweep}'"
    report_run = runset("report", f"JobType = 'report' and Group = '{sweep}'", entity, project)
    summary_runs = runset("experiments", f"JobType = 'summary' and {in_sweep}", entity, project)
    pretrain_runs = runset("pretraining", f"JobType = 'pretrain' and {in_sweep}", entity, project)
    by_variant = {"groupby": wr.Config("labels.variant"), "groupby_aggfunc": "mean", "groupby_rangefunc": "stderr"}
    wide = wr.Layout(w=24, h=10)
    blocks = [
        wr.MarkdownBlock(text=(
            f"Sweep **{sweep}**: {len(summaries)} experiments. Accuracies are fractions; intervals are 95% bootstrap "
            "intervals over items (`proxlab report`), shaded bands the standard error over the runs of a variant "
            "(seeds, models). Runs carry their experiment's labels in their config (`labels.variant`, "
            "`labels.seed`, ...).")),
        wr.H2(text="AVG vs FLOPs"),
        wr.PanelGrid(runsets=[report_run], panels=[
            wr.CustomChart(query={"summaryTable": {"tableKey": "report/avg_vs_flops"}}, chart_name="wandb/line/v0",
                           chart_fields={"x": "flops_total", "y": "avg", "stroke": "run"},
                           chart_strings={"title": "AVG vs total FLOPs (vertical bars: 95% intervals)"}),
            wr.MediaBrowser(title="AVG vs FLOPs (proxlab report)", media_keys=["report/plot/accuracy_vs_flops"],
                            num_columns=1)]),
        wr.PanelGrid(runsets=[summary_runs], panels=[
            wr.ScatterPlot(title="AVG vs total FLOPs, per experiment", x=wr.SummaryMetric("flops/total"),
                           y=wr.SummaryMetric("eval/avg/score"), log_x=True)]),
        wr.H2(text="Accuracy by step, per variant"),
        wr.PanelGrid(runsets=[pretrain_runs], panels=[
            wr.LinePlot(title="AVG by training step", x="train/step", y=["eval/avg/score"], **by_variant),
            wr.LinePlot(title="each task by training step", x="train/step", metric_regex="eval/.*/score",
                        **by_variant)]),
        wr.H2(text="Tables"),
        wr.PanelGrid(runsets=[report_run], panels=[
            *[wr.WeavePanelSummaryTable(table_name=f"report/paper/{name}", layout=wide) for name in paper_tables],
            wr.WeavePanelSummaryTable(table_name="report/experiments", layout=wide)]),
        wr.H2(text="Loss per variant"),
        wr.PanelGrid(runsets=[pretrain_runs], panels=[
            wr.LinePlot(title="training loss", x="train/step", y=["train/loss"], smoothing_factor=0.6,
                        smoothing_type="exponential", **by_variant)]),
    ]
    return wr.Report(entity=entity, project=project, title=f"{sweep}: pretraining-data ablations"[:128],
                     description=f"proxlab sweep {sweep}: accuracy, FLOPs and loss per corpus variant",
                     blocks=blocks)


def outline(report) -> list[str]:
    """The report's sections and panels, one line each."""
    import wandb_workspaces.reports.v2 as wr

    lines = [f"W&B Report {report.title!r} ({report.entity or '<entity>'}/{report.project})"]
    for block in report.blocks:
        if isinstance(block, wr.H2):
            lines.append(f"  {block.text}")
        elif isinstance(block, wr.PanelGrid):
            for panel in block.panels:
                what = (getattr(panel, "title", None) or getattr(panel, "table_name", None)
                        or (getattr(panel, "chart_strings", None) or {}).get("title") or type(panel).__name__)
                runs = ", ".join(rs.name for rs in block.runsets)
                lines.append(f"    {type(panel).__name__}: {what} [{runs}]")
    return lines


def wandb_report_main(args: dict[str, str]) -> int:
    """`proxlab wandb-report sweep=NAME [runs_dir=runs] [entity=E] [project=P] [publish=true]`."""
    unknown = sorted(set(args) - {"sweep", "runs_dir", "entity", "project", "publish"})
    if unknown or "sweep" not in args:
        raise SystemExit(f"proxlab wandb-report: {'unknown option(s) ' + str(unknown) if unknown else 'sweep= needed'} "
                         "(sweep=NAME runs_dir=PATH entity=E project=P publish=true|false)")
    sweep_dir = Path(args.get("runs_dir", "runs")).resolve() / args["sweep"]
    if not sweep_dir.is_dir():
        raise SystemExit(f"proxlab wandb-report: no sweep directory {sweep_dir}")
    saved = sorted(sweep_dir.glob("*/config.yaml"))
    logger = ((yaml.safe_load(saved[0].read_text()) or {}).get("logger") or {}) if saved else {}
    entity = args.get("entity") or logger.get("entity") or ""
    project = args.get("project") or logger.get("project") or "proxlab"
    publish = args.get("publish", "false").lower() in ("1", "true", "yes")
    if publish and not entity:
        raise SystemExit("proxlab wandb-report: publish=true needs the W&B entity (entity=NAME, or logger.entity)")
    report = build_wandb_report(sweep_dir, entity if publish else "", project)
    print("\n".join(outline(report)), flush=True)
    if publish:
        report.save()
        print(f"[proxlab] published: {report.url}", flush=True)
    else:
        print("[proxlab] built, not published (publish=true entity=NAME saves it; upload the runs first with "
              "`proxlab wandb-sync`)", flush=True)
    return 0
