"""`proxlab report [sweep=NAME]`: compare the experiments of a sweep from their run directories' `summary.json`.

Writes `runs/<sweep>/report/`: a markdown and a CSV table (variant, kept docs and tokens, FLOPs, accuracy per task,
average; under the markdown, footnotes for tasks run on other data than the paper's or skipped, and each task's data)
and a PNG of average accuracy against total FLOPs; each paper table the runs reproduce, in its layout (paper_report);
the accuracy-by-step tables (report_steps); the FLOPs figure of the paper's Fig. 8 (report_flops). Where the
evaluate artifacts hold per-sample results, every accuracy carries its bootstrap standard error (`43.5 ± 0.9`), the
plots error bars, and `comparisons.{md,csv}` each variant's paired difference from its baseline per task and for AVG
(proxlab.report.stats, docs/report.md). Runs that differ only by `train.seed` / `train.data_seed` are one row: the
mean over the seeds ± their standard deviation, paired seed by seed with the baseline (`seeds.csv`: each seed's own).
Prints the tables, and logs them and the plots to W&B in the sweep's group when W&B is on. Reads only local files, so
it works offline and in tests. Also the last step of a Hydra multirun (`SweepReportCallback`), and the report job of a
sweep submitted as Slurm jobs (`proxlab submit -m`, slurm/report.sh).

A failed experiment is a row too, marked failed (its run directory's `failed.json`, written when a stage failed; a
submitted sweep's `jobs.json` names the jobs that left no result at all), with a list under the table: the stage
that failed, the error, and where its spec and log are.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from proxlab.core.config import ReportConfig
from proxlab.runner.ledger import SUMMARY
from proxlab.runner.sweep import FAILURE, JOBS
from proxlab.report.paper import TABLES
from proxlab.report.paper_tables import (DataNotes, data_notes, eval_results, render, write_paper_table,
                                         write_refiner_table)
from proxlab.report.paper_tables import standin_mark, tokenizer_notes
from proxlab.report.flops import write_flops_report
from proxlab.report.part import ReportPart, markdown_table
from proxlab.report.stats import (AVG, SEED_RUNS, SweepStats, aggregate_seeds, p_value, pm, seed_runs, seeds_note,
                                  signed, span)
from proxlab.report.steps import write_accuracy_by_step

VARIANT_ORDER = {"raw": 0, "rules": 1, "doc": 2, "prox": 3}


def load_summaries(sweep_dir: Path) -> list[dict[str, Any]]:
    """The finished runs of the sweep; a run whose latest attempt failed (its `failed.json`) is a failed row instead."""
    rows = [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob(f"*/{SUMMARY}"))
            if not (p.parent / FAILURE).exists()]
    return sorted(rows, key=lambda r: (r.get("model", ""), VARIANT_ORDER.get(r.get("variant"), 9), r["run_dir"]))


def load_failures(sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's failed experiments: each run directory's `failed.json`, and, for a sweep submitted as jobs
    (`jobs.json`), a record for every job whose run directory holds neither a summary nor a failure (cancelled, out of
    time, never started because the job it depended on failed, or still running). Each names its Slurm job's log."""
    sweep_dir = Path(sweep_dir)
    jobs_file = sweep_dir / JOBS
    jobs = json.loads(jobs_file.read_text())["jobs"] if jobs_file.exists() else []
    by_run = {job["run_dir"]: job for job in jobs}
    failures = []
    for path in sorted(sweep_dir.glob(f"*/{FAILURE}")):
        record = json.loads(path.read_text())
        job = by_run.get(record.get("run_dir"), {})
        if job and str(job.get("job_id")) == str(record.get("slurm_job")):
            record["job_log"] = job["log"]
        failures.append(record)
    for job in jobs:
        run_dir = Path(job["run_dir"])
        if not (run_dir / SUMMARY).exists() and not (run_dir / FAILURE).exists():
            labels = {k: v for k, v in job.items() if k != "log"}  # the job's log, not a run log
            failures.append({**labels, "status": "failed", "stage": None, "slurm_job": job["job_id"],
                             "job_log": job["log"],
                             "error": f"Slurm job {job['job_id']} left no result (queued or running, or it ended "
                                      f"before a stage could fail: cancelled, out of time, killed)"})
    return failures


def failure_rows(failures: list[dict[str, Any]], width: int) -> list[list[Any]]:
    """Failed experiments as rows of the main table: variant, model, "failed: <stage>", then empty cells."""
    rows = []
    for f in failures:
        where = f"failed: {f['stage']}" if f.get("stage") else "failed"
        rows.append([f.get("variant"), f.get("model"), where] + [None] * (width - 3))
    return rows


def failures_markdown(failures: list[dict[str, Any]]) -> str:
    """The list under the table: which stage of which experiment failed, why, and where its spec and log are."""
    if not failures:
        return ""

    def cell(value: Any) -> str:
        return "–" if value in (None, "", []) else str(value).replace("|", "\\|").replace("\n", " ")

    out = io.StringIO()
    out.write(f"\nFailed experiments ({len(failures)}): the stage that failed, its error, its spec, and the log.\n\n")
    out.write("| experiment | overrides | stage | error | spec | log |\n|---|---|---|---|---|---|\n")
    for f in failures:
        log = " ; ".join(str(x) for x in (f.get("log"), f.get("job_log")) if x)
        out.write("| " + " | ".join(cell(v) for v in (f.get("experiment"), " ".join(f.get("overrides") or []),
                                                      f.get("stage"), f.get("error"), f.get("spec"), log)) + " |\n")
    return out.getvalue()


def task_names(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in rows:
        for k in r:
            if k.startswith("eval/") and k.count("/") == 1 and k not in ("eval/avg", "eval/metric"):
                if k[5:] not in names:
                    names.append(k[5:])
    return names


def sweep_notes(rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]], DataNotes]:
    """(task columns, each run's evaluate results, footnotes and data lines): a task every run skipped still gets its
    column, to show the forced skip."""
    results = [eval_results(r) for r in rows]
    tasks = task_names(rows)
    for res in results:
        tasks += [t for t in (res.get("skipped") or {}) if t not in tasks]
    runs = [(f"{r.get('variant')}/{r.get('model')}", res) for r, res in zip(rows, results)]
    return tasks, results, data_notes([(t, t) for t in tasks], runs)


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    tasks, results, notes = sweep_notes(rows)
    header = ["variant", "model", "docs kept", "train tokens", "FLOPs refine", "FLOPs train", "FLOPs total",
              *[notes.label(t, t) for t in tasks], "avg"]
    body = []
    for r, res in zip(rows, results):
        kept = f"{r.get('docs/kept')}/{r.get('docs/raw')}"
        skipped = res.get("skipped") or {}
        scores = [("skipped" if t in skipped and r.get(f"eval/{t}") is None else r.get(f"eval/{t}")) for t in tasks]
        mark = standin_mark(r)  # a stand-in tokenizer (the ‡ note under the table)
        body.append([r.get("variant"), f"{r.get('model')}{mark}" if mark else r.get("model"), kept,
                     r.get("tokens/train"), r.get("flops/refine"),
                     r.get("flops/train"), r.get("flops/total"), *scores, r.get("eval/avg")])
    return header, body


def with_errors(header: list[str], body: list[list[Any]], rows: list[dict[str, Any]], tasks: list[str],
                stats: SweepStats) -> list[list[Any]]:
    """The table's rows with each accuracy as `43.5 ± 0.9` where the run's samples give its interval (AVG: only when
    they cover every task the average is over)."""
    first = len(header) - len(tasks) - 1
    out = []
    for i, row in enumerate(body):
        row = list(row)
        if i < len(rows):
            ivs = stats.accuracy(rows[i])
            ran = [t for t in tasks if isinstance(row[first + tasks.index(t)], float)]
            for j, task in enumerate(tasks):
                if isinstance(row[first + j], float):
                    row[first + j] = pm(row[first + j], ivs.get(task))
            if isinstance(row[-1], float):
                row[-1] = pm(row[-1], ivs.get(AVG) if all(t in ivs for t in ran) else None)
        out.append(row)
    return out


def error_columns(rows: list[dict[str, Any]], tasks: list[str], stats: SweepStats) -> tuple[list[str], list[list]]:
    """CSV columns beside the accuracies: each task's standard error, and AVG's with its interval; in a sweep with rows
    over several seeds, also each row's seed count and the sd of its AVG across seeds."""
    header = [f"{t} se" for t in tasks] + ["avg se", "avg ci low", "avg ci high"]
    if stats.has_seeds():
        header += ["seeds", "avg sd"]
    cells = []
    for r in rows:
        ivs = stats.accuracy(r)
        avg = ivs.get(AVG)
        cells.append([ivs[t].se if t in ivs else None for t in tasks]
                     + ([avg.se, avg.low, avg.high] if avg else [None] * 3)
                     + ([len(seed_runs(r)), avg.sd if avg else None] if stats.has_seeds() else []))
    return header, cells


def seed_table(rows: list[dict[str, Any]], tasks: list[str]) -> tuple[list[str], list[list[Any]]]:
    """seeds.csv: one line per seed of every row over several seeds (the numbers its mean is of)."""
    header = ["variant", "model", "seed", "run", *tasks, "avg"]
    body = [[r.get("variant"), r.get("model"), seed, Path(m["run_dir"]).name, *[m.get(f"eval/{t}") for t in tasks],
             m.get("eval/avg")] for r in rows for seed, m in (r.get(SEED_RUNS) or {}).items()]
    return header, body


def comparisons(rows: list[dict[str, Any]], tasks: list[str], stats: SweepStats
                ) -> tuple[list[str], list[list[str]], list[list[Any]]]:
    """Each variant against its baseline: (markdown header, markdown rows `+1.2* [+0.3, +2.1]`, CSV rows in long
    form: run, baseline, task, Δ, low, high, p, items, significant)."""
    header = ["variant", "model", "vs", *tasks, "AVG", "AVG p"]
    body, long = [], []
    for r in rows:
        base = stats.baseline(r)
        ivs = stats.versus_baseline(r)
        if base is None or not ivs:
            continue
        seeds = f" ({ivs[AVG].seeds} seeds)" if ivs[AVG].seeds > 1 else ""
        body.append([str(r.get("variant")), str(r.get("model")), str(base.get("variant")) + seeds,
                     *[f"{signed(ivs[t])} {span(ivs[t])}" if t in ivs else "–" for t in tasks + [AVG]],
                     p_value(ivs[AVG], stats.options.bootstrap_resamples)])
        for t in tasks + [AVG]:
            if t in ivs:
                iv = ivs[t]
                long.append([Path(r["run_dir"]).name, Path(base["run_dir"]).name, t, iv.value, iv.low, iv.high, iv.p,
                             iv.n, iv.significant] + ([iv.seeds] if stats.has_seeds() else []))
    return header, body, long


def comparisons_markdown(header: list[str], body: list[list[str]], stats: SweepStats) -> str:
    if not body:
        return ""
    level = f"{100 * stats.options.confidence_level:g}%"
    significant = [f"{row[0]} ({row[1]}) {header[3 + j]}" for row in body for j, cell in enumerate(row[3:-1])
                   if "*" in cell.split(" ")[0]]
    lines = [f"### Paired differences from the baseline (Δ in points, {level} interval)", "",
             *markdown_table(header, body), "",
             f"Δ = variant − baseline ({stats.options.baseline_variant!r} run of the same model, corpus, training "
             f"tokens and evaluation) over the items both evaluated; paired {stats.describe()}. * the interval "
             f"excludes 0. Significant: {', '.join(significant) if significant else 'none'}."]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2e}" if abs(v) >= 1e4 else f"{100 * v:.1f}" if 0 <= v <= 1 else f"{v:.3g}"
    return str(v)


def markdown(header: list[str], body: list[list[Any]], metric: str, notes: list[str] | None = None) -> str:
    out = io.StringIO()
    out.write(f"Accuracy columns: {metric} × 100.\n\n")
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for row in body:
        out.write("| " + " | ".join(_fmt(v) for v in row) + " |\n")
    if notes:
        out.write("\n" + "\n".join(notes).rstrip("\n") + "\n")
    return out.getvalue()


def plot(rows: list[dict[str, Any]], path: Path, title: str, stats: SweepStats | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in rows:
        if r.get("eval/avg") is None:
            continue
        iv = stats.accuracy(r).get(AVG) if stats is not None else None
        if iv is not None:  # the AVG's interval, around the reported average
            err = [[100 * (iv.value - iv.low)], [100 * (iv.high - iv.value)]]
            ax.errorbar(r["flops/total"], 100 * r["eval/avg"], yerr=err, fmt="o", ms=6, capsize=3)
        else:
            ax.scatter(r["flops/total"], 100 * r["eval/avg"], s=40)
        seeds = [m["eval/avg"] for m in (r.get(SEED_RUNS) or {}).values() if m.get("eval/avg") is not None]
        if seeds:  # each seed's own AVG, beside the mean
            ax.scatter([r["flops/total"]] * len(seeds), [100 * v for v in seeds], s=12, color="grey", alpha=0.6,
                       zorder=3)
        ax.annotate(f"{r['variant']} ({r['model']})" + (f", {len(seeds)} seeds" if seeds else ""),
                    (r["flops/total"], 100 * r["eval/avg"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("total FLOPs (refining + training)")
    ax.set_ylabel(f"average {rows[0].get('eval/metric', 'acc_norm') if rows else ''} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_report(sweep_dir: Path, log_wandb: bool = False, logger_cfg: dict | None = None,
                 options: ReportConfig | None = None, failures: list[dict[str, Any]] | None = None) -> Path:
    """The sweep's report; `failures`: failed experiments that left no record in the sweep directory (a local sweep's
    config errors), besides those that did."""
    rows = aggregate_seeds(load_summaries(sweep_dir))  # runs that differ only by seed: one row
    failed = load_failures(sweep_dir) + list(failures or [])
    if not rows and not failed:
        raise FileNotFoundError(f"no {SUMMARY} under {sweep_dir}/*/: run the sweep's experiments first")
    options = options or ReportConfig()
    out = Path(sweep_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    stats = SweepStats(rows, options)
    header, body = table(rows)
    tasks = sweep_notes(rows)[0]
    shown = with_errors(header, body, rows, tasks, stats) + failure_rows(failed, len(header))
    body += failure_rows(failed, len(header))
    metric = rows[0].get("eval/metric", "acc_norm") if rows else "acc_norm"
    notes = tokenizer_notes([(f"{r.get('variant')}/{r.get('model')}", r) for r in rows]) + sweep_notes(rows)[2].lines()
    if stats.has_samples():
        notes = [f"± standard error: {stats.describe()}.", ""] + notes
    seeded = [f"- {r.get('variant')} ({r.get('model')}): mean over {seeds_note(r)}" for r in rows if r.get(SEED_RUNS)]
    if seeded:
        notes = ["Rows over several seeds (their numbers are means; per seed in seeds.csv):", "", *seeded, ""] + notes
    md = markdown(header, shown, metric, notes) + failures_markdown(failed)
    (out / "table.md").write_text(md)
    se_header, se_cells = error_columns(rows, tasks, stats)
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header + se_header)
        w.writerows([row + (se_cells[i] if i < len(se_cells) else []) for i, row in enumerate(body)])
    if stats.has_seeds():
        seed_header, seed_body = seed_table(rows, tasks)
        with open(out / "seeds.csv", "w", newline="") as f:
            csv.writer(f).writerows([seed_header, *seed_body])
    parts = [ReportPart(md, {"table": (header, [[_fmt(v) for v in row] for row in shown])}, {})]
    cmp_header, cmp_body, cmp_long = comparisons(rows, tasks, stats)
    if cmp_body:
        cmp_md = comparisons_markdown(cmp_header, cmp_body, stats)
        (out / "comparisons.md").write_text(cmp_md)
        with open(out / "comparisons.csv", "w", newline="") as f:
            csv.writer(f).writerows([["run", "baseline", "task", "delta", "ci_low", "ci_high", "p", "items",
                                      "significant"] + (["seeds"] if stats.has_seeds() else []), *cmp_long])
        parts.append(ReportPart(cmp_md, {"comparisons": (cmp_header, cmp_body)}, {}))
    if rows:
        plot(rows, out / "accuracy_vs_flops.png", f"{Path(sweep_dir).name}: accuracy vs FLOPs", stats)
        parts[0].images["accuracy_vs_flops"] = out / "accuracy_vs_flops.png"
    for name in sorted({r["paper_table"] for r in rows if r.get("paper_table")}):
        if name not in TABLES:
            raise KeyError(f"paper_table={name!r} is not one of {sorted(TABLES)}")
        paper_rows = [r for r in rows if r.get("paper_table") == name]
        parts.append(ReportPart(write_paper_table(TABLES[name], paper_rows, out, stats),
                                {f"paper/{name}": render(TABLES[name], paper_rows, stats=stats)},
                                {f"paper/{name}": out / f"{name}.png"}))
    refiners = write_refiner_table(rows, out)  # paper Table 4, where a run's refiner has F1 or kept ratio
    if refiners is not None:
        parts.append(refiners)
    by_step = write_accuracy_by_step(rows, out, stats) if rows else None
    if by_step is not None:
        parts.append(by_step)
    if rows:
        parts.append(write_flops_report(rows, out, options))
    for part in parts:
        print(part.markdown, flush=True)
    if failed:
        print(f"[proxlab] {len(failed)} of the sweep's {len(rows) + len(failed)} experiments failed (listed above)",
              flush=True)
    print(f"[proxlab] report written to {out}", flush=True)
    if log_wandb:
        from proxlab.core.tracking import MetricsLogger

        from proxlab.report.wandb_report import experiment_rows, experiment_tables, log_summary_runs

        # one row and summary run per run directory (a seed is a run of its own): numbers W&B sorts and groups
        runs = load_summaries(sweep_dir)
        experiments = experiment_rows(runs, stats, tasks)
        logger = MetricsLogger(out / "metrics.jsonl", job="report", logger_cfg=logger_cfg, run_dir=sweep_dir)
        try:
            for part in parts:
                for name, (cols, cells) in part.tables.items():
                    logger.table(f"report/{name}", cols, cells)
                for name, path in part.images.items():
                    logger.image(f"report/plot/{name}", path)
            for name, (cols, cells) in experiment_tables(experiments).items():
                logger.table(f"report/{name}", cols, cells)
        finally:
            logger.close()
        log_summary_runs(runs, experiments, tasks, logger_cfg)  # after: one W&B run at a time in a process
    return out


def sweep_settings(sweep_dir: Path, overrides: dict[str, str]) -> tuple[ReportConfig, dict[str, Any] | None]:
    """`proxlab report`'s options and W&B settings: the `report` and `logger` sections of the sweep's saved run config
    (its first run's config.yaml), under `report.<key>=value` and `wandb=true|false` from the command line."""
    from omegaconf import OmegaConf

    saved = sorted(Path(sweep_dir).glob("*/config.yaml"))
    run_cfg = OmegaConf.load(saved[0]) if saved else OmegaConf.create({})
    unknown = sorted(k for k in overrides if not k.startswith("report.") and k != "wandb")
    if unknown:
        raise SystemExit(f"proxlab report: unknown option(s) {unknown}; use report.<key>=value "
                         f"({', '.join(ReportConfig.__dataclass_fields__)}) or wandb=true|false")
    merged = OmegaConf.merge(OmegaConf.structured(ReportConfig), run_cfg.get("report") or {},
                             OmegaConf.from_dotlist([f"{k[len('report.'):]}={v}" for k, v in overrides.items()
                                                     if k.startswith("report.")]))
    options = ReportConfig(**OmegaConf.to_container(merged))
    logger = run_cfg.get("logger") or {}
    enabled = logger.get("backend") == "wandb" and logger.get("mode", "offline") != "disabled"
    if "wandb" in overrides:
        enabled = overrides["wandb"].lower() in ("1", "true", "yes")
    if not enabled:
        return options, None
    return options, report_logger_cfg(Path(sweep_dir).name, logger.get("mode", "offline"),
                                      logger.get("project", "proxlab"), logger.get("entity"))


def report_logger_cfg(sweep: str, mode: str, project: str, entity: str | None) -> dict[str, Any]:
    """The report's W&B run: in the sweep's group, named `<sweep>/report`, beside the runs it compares."""
    return {"backend": "wandb", "mode": mode, "project": project, "entity": entity, "group": sweep,
            "name_prefix": f"{sweep}/", "tags": ["report", f"sweep:{sweep}"]}


class SweepReportCallback(Callback):
    """Hydra callback: after a multirun, build the report of the sweep its jobs wrote to; after a planned sweep
    (`proxlab plan -m`, dry_run), print the sweep's total cost."""

    def __init__(self) -> None:
        self.costs: list[Any] = []
        self.failures: list[dict[str, Any]] = []  # failed before they had a run directory to record it in

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            cost = job_return.return_value.get("cost")
            if cost is not None:
                self.costs.append(cost)
            failure = job_return.return_value.get("failed")
            if failure is not None and not failure.get("recorded"):
                self.failures.append(failure)

    def on_multirun_end(self, config, **kwargs) -> None:
        if config.get("dry_run"):
            if self.costs:
                from proxlab.runner.planning import describe_sweep_costs

                for line in describe_sweep_costs(self.costs):
                    print(f"[proxlab] {line}", flush=True)
            return
        sweep = config.get("sweep") or config.get("name")
        sweep_dir = Path(config.paths.runs_dir).resolve() / sweep
        if sweep_dir.exists() or self.failures:
            logger_cfg = report_logger_cfg(sweep, config.logger.mode, config.logger.project, config.logger.entity)
            options = ReportConfig(**OmegaConf.to_container(config.report, resolve=True))
            build_report(sweep_dir, log_wandb=config.logger.backend == "wandb", logger_cfg=logger_cfg,
                         options=options, failures=self.failures)
