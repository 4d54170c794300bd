"""Our results in the paper's layout: for each row of a paper table, our numbers, the paper's, and the difference.

Accuracies are percentages with one decimal, as in the paper; AVG is the unweighted mean of the table's columns;
`#Win` (where the paper has it) counts the columns where a row is the best of the table's rows of the same source.
Rows the paper has but we have not run show the paper's numbers only; rows we ran that the paper lacks show ours only.

Under each table: a numbered footnote for every column whose task ran on other data than the paper's (a substitute
split or subset, other few-shot exemplars; the column header carries its number) or was skipped (the cell reads
"skipped": `eval.on_missing_task=skip`, which a paper-table experiment needs `eval.force_skip=true` for), and a data
note per task (file, split, items, sample, few-shot source). Both come from the evaluate results of each run (its
ledger's evaluate entry, `data` and `skipped`), written by the evaluate stage.

With per-sample results (proxlab.report.stats): our accuracies read `43.5 ± 0.9` (bootstrap standard error), each
row with a baseline run (`report.baseline_variant`, same model, corpus, budget and evaluation) gets a `Δ <baseline>`
row of paired differences, starred where the interval excludes 0, and a footnote states the interval widths and which
differences are significant. `report.significant_wins_only=true` counts a #Win only where the row's lead over every
other row of the column is significant.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from proxlab.report.paper import PaperTable
from proxlab.report.stats import AVG, SweepStats, pm, signed
from proxlab.runner.ledger import LEDGER


def eval_results(summary: dict[str, Any]) -> dict[str, Any]:
    """The final evaluate results behind a run's summary (its ledger's evaluate entry: per-task `data` records,
    `skipped` tasks); {} when the run has none."""
    run_dir = summary.get("run_dir")
    if not run_dir:
        return {}
    try:
        ledger = json.loads((Path(run_dir) / LEDGER).read_text())
    except (OSError, ValueError):
        return {}
    evaluate = (ledger.get("stages") or {}).get("evaluate") or {}
    return (evaluate.get("extra") or {}).get("results") or {}


@dataclass
class DataNotes:
    """What a table's runs evaluated on: footnote numbers per task, the footnotes, and one data line per task."""

    marks: dict[str, list[int]] = field(default_factory=dict)  # task -> its footnote numbers
    footnotes: list[str] = field(default_factory=list)  # footnote i + 1
    data: list[str] = field(default_factory=list)

    def add(self, task: str, text: str) -> None:
        self.footnotes.append(text)
        self.marks.setdefault(task, []).append(len(self.footnotes))

    def label(self, column: str, task: str) -> str:
        marks = self.marks.get(task)
        return f"{column} [{','.join(map(str, marks))}]" if marks else column

    def lines(self) -> list[str]:
        """Markdown: the numbered footnotes, then the data line of every task."""
        out: list[str] = []
        if self.footnotes:
            out += ["Data that differs from the paper's:", ""]
            out += [f"- [{i}] {text}" for i, text in enumerate(self.footnotes, 1)] + [""]
        if self.data:
            out += ["Data per task (ours):", ""] + [f"- {line}" for line in self.data] + [""]
        return out


def _rows(rows: list[str], of: list[str]) -> str:
    return "" if len(of) <= 1 or sorted(rows) == sorted(of) else f" (rows: {', '.join(rows)})"


def _relative(paths: list[str], data_dir: str | None) -> list[str]:
    prefix = (data_dir or "").rstrip("/") + "/"
    return [p[len(prefix):] if data_dir and p.startswith(prefix) else p for p in paths]


def data_notes(columns: Sequence[tuple[str, str]], runs: Sequence[tuple[str, dict[str, Any]]]) -> DataNotes:
    """Footnotes and data lines for a table of `columns` ((label, task)) over `runs` ((row label, evaluate results)):
    a footnote per distinct substitute (split, subset, few-shot source) and per skipped task, naming the rows it
    concerns unless it is all of them; a data line per task (per distinct note)."""
    notes = DataNotes()
    labels = [label for label, _ in runs]
    for column, task in columns:
        subs: dict[tuple, list[str]] = {}
        skips: dict[tuple, list[str]] = {}
        lines: dict[str, list[str]] = {}
        ran: list[str] = []
        for label, res in runs:
            rec = (res.get("data") or {}).get(task)
            if rec:
                ran.append(label)
                lines.setdefault(rec.get("note") or rec.get("file", "?"), []).append(label)
                if rec.get("substitute"):
                    subs.setdefault((rec.get("file"), rec.get("n_file"), tuple(rec["substitute"])), []).append(label)
            missing = (res.get("skipped") or {}).get(task)
            if missing is not None:
                key = (tuple(_relative(list(missing), res.get("data_dir"))), bool(res.get("force_skip")))
                skips.setdefault(key, []).append(label)
        for (file, n_file, texts), rows in subs.items():
            notes.add(task, f"{column}: {'; '.join(texts)}. Ran on {file} ({n_file} items){_rows(rows, ran)}.")
        for (files, forced), rows in skips.items():
            how = "eval.on_missing_task=skip, forced with eval.force_skip=true" if forced else \
                "eval.on_missing_task=skip"
            notes.add(task, f"{column}: skipped{_rows(rows, labels)}, its data missing ({', '.join(files)}); {how}.")
        for line, rows in lines.items():
            notes.data.append(f"{column}: {line}{_rows(rows, ran)}")
    return notes


def table_notes(table: PaperTable, summaries: list[dict[str, Any]]) -> DataNotes:
    runs = [(table.row_labels.get(s["report_row"], s["report_row"]), eval_results(s)) for s in summaries
            if s.get("report_row")]
    return data_notes(table.columns, runs)


def our_values(summary: dict[str, Any], table: PaperTable) -> tuple[float | None, ...]:
    vals = []
    for _, task in table.columns:
        v = summary.get(f"eval/{task}")
        vals.append(None if v is None else 100.0 * v)
    known = [v for v in vals if v is not None]
    avg = sum(known) / len(known) if known else None  # over the tasks run; marked with * when some are missing
    return (*vals, avg)


def wins(rows: dict[str, tuple[float | None, ...]], lead=None) -> dict[str, int]:
    """Per row: in how many columns (AVG excluded) it is the best of `rows` (ties count for every tied row);
    `lead(best, other, column)`: whether best's lead over other counts (only significant ones), if given."""
    out = {k: 0 for k in rows}
    if not rows:
        return out
    n = len(next(iter(rows.values()))) - 1
    for j in range(n):
        col = {k: v[j] for k, v in rows.items() if v[j] is not None}
        if not col:
            continue
        best = max(col.values())
        for k, v in col.items():
            if round(v, 1) == round(best, 1):
                if lead is None or all(lead(k, other, j) for other in col if other != k):
                    out[k] += 1
    return out


def significant_lead(table: PaperTable, by_key: dict[str, dict[str, Any]], stats: SweepStats):
    """`wins`' lead test: the paired difference of the two rows in that column has an interval above 0."""
    def lead(best: str, other: str, column: int) -> bool:
        task = table.columns[column][1]
        iv = stats.paired(by_key[best], by_key[other], [task]).get(task)
        return iv is not None and iv.low > 0
    return lead


def render(table: PaperTable, summaries: list[dict[str, Any]], notes: DataNotes | None = None,
           stats: SweepStats | None = None) -> tuple[list[str], list[list[str]]]:
    ours = {s.get("report_row"): our_values(s, table) for s in summaries if s.get("report_row")}
    by_key = {s["report_row"]: s for s in summaries if s.get("report_row")}
    tasks = [task for _, task in table.columns]
    skipped = {s.get("report_row"): set(eval_results(s).get("skipped") or {}) for s in summaries if s.get("report_row")}
    notes = notes if notes is not None else table_notes(table, summaries)
    header = ["row", "source", *[notes.label(c, t) for c, t in table.columns], "AVG"] + (["#Win"] if table.has_win
                                                                                          else [])
    lead = significant_lead(table, by_key, stats) if stats is not None and stats.options.significant_wins_only else None
    ours_wins, paper_wins = wins(ours, lead), wins(dict(table.rows))
    keys = list(table.rows) + [k for k in ours if k not in table.rows]
    body: list[list[str]] = []
    for key in keys:
        label = table.row_labels.get(key, key)
        paper = table.rows.get(key)
        mine = ours.get(key)
        n = len(table.columns)
        if mine is not None:
            cells = _cells(mine) if stats is None else _cells_with_errors(mine, stats.accuracy(by_key[key], tasks),
                                                                          tasks)
            for j, (_, task) in enumerate(table.columns):
                if task in skipped.get(key, ()) and mine[j] is None:
                    cells[j] = "skipped"
            if any(v is None for v in mine[:-1]) and mine[-1] is not None:
                cells[-1] += "*"
            body.append([label, "ours", *cells] + ([f"{ours_wins[key]}/{n}"] if table.has_win else []))
            versus = stats.versus_baseline(by_key[key], tasks) if stats is not None else {}
            if versus:
                base = stats.baseline(by_key[key])
                base_label = table.row_labels.get(base.get("report_row"), base.get("report_row") or base["variant"])
                body.append([label, f"Δ {base_label}", *[signed(versus[t]) if t in versus else "–"
                                                         for t in tasks + [AVG]]] + ([""] if table.has_win else []))
        if paper is not None:
            body.append([label, "paper", *_cells(paper)] + ([f"{paper_wins[key]}/{n}"] if table.has_win else []))
        if mine is not None and paper is not None:
            diff = tuple(None if a is None else a - b for a, b in zip(mine[:-1], paper[:-1]))
            full = all(v is not None for v in mine[:-1])
            diff = (*diff, mine[-1] - paper[-1] if full else None)
            body.append([label, "Δ", *[("–" if d is None else f"{d:+.1f}") for d in diff]]
                        + ([""] if table.has_win else []))
    return header, body


def _cells(values: tuple[float | None, ...]) -> list[str]:
    return ["–" if v is None else f"{v:.1f}" for v in values]


def _cells_with_errors(values: tuple[float | None, ...], ivs: dict[str, Any], tasks: list[str]) -> list[str]:
    """Our cells as `43.5 ± 0.9`; AVG's ± only when the samples cover every task it averages."""
    ran = [t for t, v in zip(tasks, values) if v is not None]
    cells = [pm(None if v is None else v / 100, ivs.get(t)) for t, v in zip(tasks, values)]
    avg = ivs.get(AVG) if all(t in ivs for t in ran) else None
    return cells + [pm(None if values[-1] is None else values[-1] / 100, avg)]


def uncertainty_notes(table: PaperTable, summaries: list[dict[str, Any]], stats: SweepStats) -> list[str]:
    """The footnote: how wide our intervals are, and which differences from the baseline are significant."""
    tasks = [task for _, task in table.columns]
    runs = [s for s in summaries if s.get("report_row")]
    accs = [stats.accuracy(s, tasks) for s in runs]
    task_widths = [100 * iv.half_width for ivs in accs for t, iv in ivs.items() if t != AVG]
    avg_widths = [100 * ivs[AVG].half_width for ivs in accs if AVG in ivs]
    if not task_widths:
        return []
    level = f"{100 * stats.options.confidence_level:g}%"
    def spread(widths: list[float]) -> str:
        low, high = f"±{min(widths):.1f}", f"±{max(widths):.1f}"
        return low if low == high else f"{low} to {high}"

    lines = [f"Uncertainty: ± is the standard error, from a {stats.describe()}. Our {level} intervals are "
             f"{spread(task_widths)} points per task" + (f" and {spread(avg_widths)} for AVG." if avg_widths else ".")]
    columns = dict((task, column) for column, task in table.columns) | {AVG: "AVG"}
    significant, compared = [], 0
    for s in runs:
        versus = stats.versus_baseline(s, tasks)
        compared += len(versus)
        label = table.row_labels.get(s["report_row"], s["report_row"])
        significant += [f"{label} {columns[t]} {100 * iv.value:+.1f} (p={iv.p:.3f})" for t, iv in versus.items()
                        if iv.significant]
    if compared:
        lines.append(f"Δ rows: variant − its {stats.options.baseline_variant!r} run over the items both evaluated "
                     f"(paired bootstrap); * its {level} interval excludes 0. Significant: "
                     + (", ".join(significant) if significant else f"none of the {compared} differences") + ".")
    if stats.options.significant_wins_only and table.has_win:
        lines.append("#Win (ours) counts a column only where the row's lead over every other row is significant.")
    return lines + [""]


def to_markdown(table: PaperTable, header: list[str], body: list[list[str]], notes: Sequence[str] = ()) -> str:
    lines = [f"### {table.title}", ""]
    if table.note:
        lines += [f"Note: {table.note}", ""]
    if any(row[1] == "ours" and row[header.index("AVG")].endswith("*") for row in body):
        lines += ["\\* average over the tasks we ran (the rest show –), not comparable to the paper's AVG.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in body]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines).rstrip("\n") + "\n"


def to_latex(table: PaperTable, header: list[str], body: list[list[str]], notes: DataNotes | None = None) -> str:
    return latex_table(table.title, header, body, notes=[f"[{i}] {t}" for i, t in
                                                         enumerate(notes.footnotes if notes else [], 1)])


def latex_table(caption: str, header: list[str], body: list[list[str]], text_columns: int = 2,
                notes: Sequence[str] = ()) -> str:
    """A booktabs table: the first `text_columns` columns left-aligned, the rest right-aligned; `notes` below it."""
    def esc(s: str) -> str:
        for plain, tex in (("_", r"\_"), ("#", r"\#"), ("%", r"\%"), ("Δ", r"$\Delta$"), ("≤", r"$\le$"),
                           ("±", r"$\pm$")):
            s = s.replace(plain, tex)
        return s

    align = "l" * text_columns + "r" * (len(header) - text_columns)
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + align + "}",
           r"\toprule", " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    out += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        out += [r"\par\smallskip{\footnotesize"] + [esc(n) + r"\\" for n in notes] + ["}"]
    out += [r"\caption{" + esc(caption) + "}", r"\end{table}"]
    return "\n".join(out) + "\n"


def plot_averages(table: PaperTable, header: list[str], body: list[list[str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    avg_col = header.index("AVG")
    labels = list(dict.fromkeys(row[0] for row in body))
    values = {(row[0], row[1]): row[avg_col] for row in body if row[1] in ("ours", "paper")}
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels) + 2), 3.6), dpi=120)
    width = 0.4
    for i, src in enumerate(("paper", "ours")):
        ys = [float(values[(lbl, src)].split(" ")[0].rstrip("*")) if values.get((lbl, src), "–") != "–" else 0.0
              for lbl in labels]
        ax.bar([x + (i - 0.5) * width for x in range(len(labels))], ys, width, label=src)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("AVG accuracy (%)")
    ax.set_title(table.title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_paper_table(table: PaperTable, summaries: list[dict[str, Any]], out_dir: Path,
                      stats: SweepStats | None = None) -> str:
    notes = table_notes(table, summaries)
    header, body = render(table, summaries, notes, stats)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = uncertainty_notes(table, summaries, stats) if stats is not None else []
    md = to_markdown(table, header, body, extra + notes.lines())
    (out_dir / f"{table.name}.md").write_text(md)
    (out_dir / f"{table.name}.tex").write_text(to_latex(table, header, body, notes))
    with open(out_dir / f"{table.name}.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    plot_averages(table, header, body, out_dir / f"{table.name}.png")
    return md
