"""Accuracy by step, as in the paper's Tables 10 and 12–17: for each run evaluated at intermediate checkpoints
(`eval.checkpoints=all`), a table of step × task accuracy and AVG, and one table of AVG by step across the runs, with
the paper's row beside ours where the paper gives AVG at the same steps.

The curves come from summary.json's `eval_by_step` (proxlab.runner.ledger.accuracy_by_step). Accuracies are
percentages with one decimal, as in the paper; AVG is the evaluation's average over the tasks run. Each checkpoint's
AVG carries its own uncertainty, from that checkpoint's per-sample results (`samples/step-XXXXXXXX/`, which the
evaluate stage writes for every checkpoint it evaluates; proxlab.report.stats): `± SE` in the AVG table, its interval
as error bars on the plot; a checkpoint without samples gets neither (never the final checkpoint's). A row over
several seeds shows the mean curve (± the sd across seeds), with each seed's points on the plot.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from proxlab.runner.ledger import BY_STEP
from proxlab.report.paper import AVG_BY_STEP, TABLES
from proxlab.report.paper_tables import run_row
from proxlab.report.part import ReportPart, markdown_table
from proxlab.report.stats import SEED_RUNS, Interval, SweepStats

STEM = "accuracy_by_step"


def step_label(step: int) -> str:
    """The paper's step labels: 2500 → 2.5K, 12500 → 12.5K; small steps as they are."""
    return f"{step / 1000:g}K" if step >= 1000 and step % 100 == 0 else str(step)


def count_label(n: float | None) -> str:
    """Tokens as the paper writes them: 26.2B, 52.4B, 122.9K."""
    if n is None:
        return "–"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:g}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def row_label(summary: dict[str, Any]) -> str:
    """The paper's name of the run's row (Table 2's "ProX-D+C"), else its row key, else model/variant."""
    key = summary.get("report_row") or f"{summary.get('model')}/{summary.get('variant')}"
    row = run_row(summary)  # with its refiner's label where the table labels rows by refiner (Table 2)
    return row.label if row is not None else key


def run_name(summary: dict[str, Any]) -> str:
    """The run directory's name; a row over seeds: its first seed's, with the count."""
    name = Path(summary.get("run_dir", "")).name
    seeds = summary.get(SEED_RUNS)
    return f"{name} ({len(seeds)} seeds)" if seeds else name


def _pm(value: float | None, iv: Interval | None) -> str:
    """A step's AVG: `41.6 ± 0.8` (± its SE, or over seeds their sd), or the value alone."""
    if value is None or iv is None:
        return _pct(value)
    return f"{100 * value:.1f} ± {100 * (iv.sd if iv.seeds > 1 and iv.sd is not None else iv.se):.1f}"


def task_columns(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(column title, task) in the paper table's order for the tasks it has, then any other task the run evaluated."""
    tasks: list[str] = []
    for point in summary.get(BY_STEP, []):
        tasks += [t for t in point["tasks"] if t not in tasks]
    table = TABLES.get(summary.get("paper_table") or "")
    paper = [(title, task) for title, task in table.columns if task in tasks] if table else []
    return paper + [(t, t) for t in tasks if t not in {task for _, task in paper}]


def run_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One run's step × task table (paper Tables 12–17): step, training tokens, each task, AVG."""
    columns = task_columns(summary)
    header = ["step", "tokens", *[title for title, _ in columns], "AVG"]
    body = [[step_label(p["step"]), count_label(p.get("tokens")), *[_pct(p["tasks"].get(t)) for _, t in columns],
             _pct(p.get("avg"))] for p in summary.get(BY_STEP, [])]
    return header, body


def avg_table(runs: list[dict[str, Any]], stats: SweepStats | None = None) -> tuple[list[str], list[list[str]]]:
    """AVG by step across runs (paper Table 10, Fig. 6's table), with the paper's row when we evaluated at its steps;
    our AVG with its ± where that checkpoint's per-sample results are there."""
    steps = sorted({p["step"] for s in runs for p in s[BY_STEP]})
    header = ["row", "source", "run", *[step_label(s) for s in steps]]
    body = []
    for s in runs:
        avg = {p["step"]: p.get("avg") for p in s[BY_STEP]}
        ivs = stats.avg_by_step(s) if stats is not None else {}
        body.append([row_label(s), "ours", run_name(s),
                     *["–" if st not in avg else _pm(avg[st], ivs.get(st)) for st in steps]])
        paper_steps, paper_rows = AVG_BY_STEP.get(s.get("paper_table") or "", ((), {}))
        row = run_row(s)  # a run refined with another refiner than the paper's row has no per-step paper row
        paper = dict(zip(paper_steps, paper_rows.get(row.key if row is not None else "", ())))
        if paper and set(paper) <= set(steps):  # our checkpoints include the paper's (e.g. every 500 vs 2.5K steps)
            body.append([row_label(s), "paper", "", *[f"{paper[st]:.1f}" if st in paper else "–" for st in steps]])
    return header, body


def plot(runs: list[dict[str, Any]], path: Path, metric: str, stats: SweepStats | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for s in runs:
        points = [p for p in s[BY_STEP] if p.get("avg") is not None]
        intervals = stats.avg_by_step(s) if stats is not None else {}
        below = [100 * (p["avg"] - intervals[p["step"]].low) if p["step"] in intervals else 0.0 for p in points]
        above = [100 * (intervals[p["step"]].high - p["avg"]) if p["step"] in intervals else 0.0 for p in points]
        line = ax.errorbar([p["step"] for p in points], [100 * p["avg"] for p in points],
                           yerr=[below, above] if intervals else None, marker="o", capsize=3,
                           label=f"{row_label(s)} ({run_name(s)})")
        for member in (s.get(SEED_RUNS) or {}).values():  # each seed's own curve, as points in the row's colour
            seed_points = [p for p in member.get(BY_STEP) or [] if p.get("avg") is not None]
            ax.scatter([p["step"] for p in seed_points], [100 * p["avg"] for p in seed_points], s=10, alpha=0.5,
                       color=line.lines[0].get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel(f"AVG {metric} (%)")
    ax.set_title("accuracy by step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_accuracy_by_step(rows: list[dict[str, Any]], out_dir: Path, stats: SweepStats | None = None
                           ) -> ReportPart | None:
    """Write accuracy_by_step.{md,csv,png} for the runs that have per-step results; None when no run has any."""
    runs = [s for s in rows if s.get(BY_STEP)]
    if not runs:
        return None
    metric = runs[0].get("eval/metric", "acc_norm")
    header, body = avg_table(runs, stats)
    lines = [f"### Accuracy by step ({metric} × 100)", "", "AVG by step:", "", *markdown_table(header, body)]
    if any("±" in cell for row in body for cell in row):
        lines += ["", "± the standard error of that checkpoint's AVG, from its own per-sample results "
                      "(a row over seeds: the sd of its seeds' AVG)."]
    tables = {"avg_by_step": (header, body)}
    for s in runs:
        run_header, run_body = run_table(s)
        lines += ["", f"#### {row_label(s)} ({run_name(s)})", "", *markdown_table(run_header, run_body)]
        tables[f"by_step/{run_name(s)}"] = (run_header, run_body)
    markdown = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{STEM}.md").write_text(markdown)
    tasks = list(dict.fromkeys(t for s in runs for _, t in task_columns(s)))
    seeded = any(s.get(SEED_RUNS) for s in runs)  # then a `seed` column: "mean", or each seed's own rows
    with open(out_dir / f"{STEM}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "run", "step", "tokens", "flops_train", *tasks, "avg"] + (["seed"] if seeded else []))
        for s in runs:
            curves = [("mean" if s.get(SEED_RUNS) else "", s, run_name(s))]
            curves += [(seed, m, Path(m["run_dir"]).name) for seed, m in (s.get(SEED_RUNS) or {}).items()]
            for seed, curve, name in curves:
                for p in curve.get(BY_STEP) or []:
                    w.writerow([row_label(s), name, p["step"], p.get("tokens"), p.get("flops/train"),
                                *[p["tasks"].get(t) for t in tasks], p.get("avg")] + ([seed] if seeded else []))
    plot(runs, out_dir / f"{STEM}.png", metric, stats)
    return ReportPart(markdown, tables, {STEM: out_dir / f"{STEM}.png"})
