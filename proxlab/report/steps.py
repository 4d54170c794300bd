"""Accuracy by step, as in the paper's Tables 10 and 12–17: for each run evaluated at intermediate checkpoints
(`eval.checkpoints=all`), a table of step × task accuracy and AVG, and one table of AVG by step across the runs, with
the paper's row beside ours where the paper gives AVG at the same steps.

The curves come from summary.json's `eval_by_step` (proxlab.runner.ledger.accuracy_by_step). Accuracies are
percentages with one decimal, as in the paper; AVG is the evaluation's average over the tasks run. The plot draws
each checkpoint's AVG interval (proxlab.report.stats) where its per-sample results are there.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from proxlab.runner.ledger import BY_STEP
from proxlab.report.paper import AVG_BY_STEP, TABLES
from proxlab.report.part import ReportPart, markdown_table
from proxlab.report.stats import SweepStats

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
    table = TABLES.get(summary.get("paper_table") or "")
    return table.row_labels.get(key, key) if table else key


def run_name(summary: dict[str, Any]) -> str:
    return Path(summary.get("run_dir", "")).name


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


def avg_table(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """AVG by step across runs (paper Table 10, Fig. 6's table), with the paper's row when we evaluated at its steps."""
    steps = sorted({p["step"] for s in runs for p in s[BY_STEP]})
    header = ["row", "source", "run", *[step_label(s) for s in steps]]
    body = []
    for s in runs:
        avg = {p["step"]: p.get("avg") for p in s[BY_STEP]}
        body.append([row_label(s), "ours", run_name(s), *["–" if st not in avg else _pct(avg[st]) for st in steps]])
        paper_steps, paper_rows = AVG_BY_STEP.get(s.get("paper_table") or "", ((), {}))
        paper = dict(zip(paper_steps, paper_rows.get(s.get("report_row") or "", ())))
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
        ax.errorbar([p["step"] for p in points], [100 * p["avg"] for p in points],
                    yerr=[below, above] if intervals else None, marker="o", capsize=3,
                    label=f"{row_label(s)} ({run_name(s)})")
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
    header, body = avg_table(runs)
    lines = [f"### Accuracy by step ({metric} × 100)", "", "AVG by step:", "", *markdown_table(header, body)]
    tables = {"avg_by_step": (header, body)}
    for s in runs:
        run_header, run_body = run_table(s)
        lines += ["", f"#### {row_label(s)} ({run_name(s)})", "", *markdown_table(run_header, run_body)]
        tables[f"by_step/{run_name(s)}"] = (run_header, run_body)
    markdown = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{STEM}.md").write_text(markdown)
    tasks = list(dict.fromkeys(t for s in runs for _, t in task_columns(s)))
    with open(out_dir / f"{STEM}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "run", "step", "tokens", "flops_train", *tasks, "avg"])
        for s in runs:
            for p in s[BY_STEP]:
                w.writerow([row_label(s), run_name(s), p["step"], p.get("tokens"), p.get("flops/train"),
                            *[p["tasks"].get(t) for t in tasks], p.get("avg")])
    plot(runs, out_dir / f"{STEM}.png", metric, stats)
    return ReportPart(markdown, tables, {STEM: out_dir / f"{STEM}.png"})
