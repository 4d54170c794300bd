"""Our results in the paper's layout: for each row of a paper table, our numbers, the paper's, and the difference.

Accuracies are percentages with one decimal, as in the paper; AVG is the unweighted mean of the table's columns;
`#Win` (where the paper has it) counts the columns where a row is the best of the table's rows of the same source.
Rows the paper has but we have not run show the paper's numbers only; rows we ran that the paper lacks show ours only.
Rows of other methods the paper compares with (Table 3's DSIR, DsDm, QuRating, MATES) read "paper, not reproducible
here". Under the title: the table's notes (`PaperTable.notes`: the paper's inconsistencies that concern it).

Refiners (Table 2): a refined run's row carries its refiner's label (`refiner_label`: `ProX-xs (released)`,
`ProX-s (built)`, `custom: <model>`). The paper's row beside it is the one for that refiner size: Table 2's own for
TLM-S-sized refiners, as the paper's; for another size the table's `counterparts` (Fig. 5's TLM-S rows for ProX-D+C,
none for ProX-D: "–"), and Table 2's own row then stands alone. Table 4 (`write_refiner_table`) sets each refiner's
validation F1 and kept ratio beside the paper's.

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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from proxlab.core.config import refiner_label
from proxlab.models.presets import tokenizer_standin
from proxlab.report.paper import TABLE4, TABLE4_LABELS, TABLE4_NOTES, TABLES, PaperTable
from proxlab.report.part import ReportPart, markdown_table
from proxlab.report.stats import AVG, SweepStats, pm, run_config, signed
from proxlab.runner.ledger import LEDGER

NOT_REPRODUCIBLE = "paper, not reproducible here"
SIZE_PRESETS = {"tlm_xs": "xs", "tlm_s": "s", "tlm_m": "m"}  # a refiner's architecture -> the paper's refiner size


def _ledger(summary: dict[str, Any]) -> dict[str, Any]:
    run_dir = summary.get("run_dir")
    if not run_dir:
        return {}
    try:
        return json.loads((Path(run_dir) / LEDGER).read_text())
    except (OSError, ValueError):
        return {}


def run_refiner(summary: dict[str, Any]) -> str | None:
    """The label of the refiner a run's corpus comes from (`refiner_label`): the summary's `refiner` where it records
    one, else read from the run's saved config; None for raw and rules, and when neither says."""
    if "refiner" in summary:
        return summary["refiner"]
    cfg = (run_config(summary) or {})
    return refiner_label(cfg) if cfg else None


def refiner_size(summary: dict[str, Any]) -> str | None:
    """The paper's name of the run's refiner size (xs | s | m; a built refiner's own name otherwise): from its label
    (`ProX-<name> (...)`), else, for a custom model, from its architecture (refine.doc.size_preset)."""
    label = run_refiner(summary)
    if label is None:
        return None
    named = re.fullmatch(r"ProX-(\S+) \((?:built|released)\)", label)
    if named:
        return named.group(1)
    preset = (summary.get("refiner_presets") or {}).get("doc")
    if preset is None:
        preset = (((run_config(summary) or {}).get("refine") or {}).get("doc") or {}).get(
            "size_preset")
    return SIZE_PRESETS.get(preset)


STANDIN_MARK = "‡"


def run_tokenizer_standin(summary: dict[str, Any]) -> str | None:
    """What a run's tokenizer stands in for, when it is not the paper's for its model (the Llama-2 stand-in of the
    Pythia runs; `models.presets.tokenizer_standin`): the summary's `tokenizer_standin` label, else (runs from before
    it) read from the run's saved config; None for the paper's tokenizer."""
    if "tokenizer_standin" in summary or not summary.get("run_dir"):
        return summary.get("tokenizer_standin")
    model = (run_config(summary) or {}).get("model") or {}
    tok = model.get("tokenizer") or {}
    return tokenizer_standin(model["preset"], tok.get("kind", ""), tok.get("path")) if model.get("preset") else None


def standin_mark(summary: dict[str, Any]) -> str:
    """` ‡` after the row label of a run on a stand-in tokenizer (tokenizer_notes explains it under the table)."""
    return f" {STANDIN_MARK}" if run_tokenizer_standin(summary) else ""


def tokenizer_notes(runs: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """The ‡ footnote over `runs` ((row label, summary)): per stand-in tokenizer, the rows that ran with it."""
    rows: dict[str, list[str]] = {}
    for label, summary in runs:
        standin = run_tokenizer_standin(summary)
        if standin:
            rows.setdefault(standin, []).append(label.removesuffix(f" {STANDIN_MARK}"))
    return [f"{STANDIN_MARK} Our runs of {', '.join(labels)}: {standin} (docs/pretrain.md, \"Tokenizer\")."
            for standin, labels in rows.items()] + ([""] if rows else [])


def eval_results(summary: dict[str, Any]) -> dict[str, Any]:
    """The final evaluate results behind a run's summary (its ledger's evaluate entry: per-task `data` records,
    `skipped` tasks); {} when the run has none."""
    evaluate = (_ledger(summary).get("stages") or {}).get("evaluate") or {}
    return (evaluate.get("extra") or {}).get("results") or {}


@dataclass
class TableRow:
    """One row group of a paper table: our run (if any), the paper's values beside it (if any) and where they come
    from."""

    key: str  # the paper's row key; `<key>@<refiner>` for a run refined with another refiner than the table's
    label: str
    run: dict[str, Any] | None = None
    paper: tuple[float, ...] | None = None
    source: str = "paper"  # "paper" (this table's row), or the other table's row / why there is none
    own_row: bool = True  # `paper` is this table's row (it has the table's #Win)

    @property
    def shows_paper(self) -> bool:
        return self.paper is not None or not self.own_row


def table_rows(table: PaperTable, summaries: list[dict[str, Any]]) -> list[TableRow]:
    """The table's row groups in the paper's order, then our rows the paper lacks. Where the table labels rows by
    refiner (`table.refiner`), a refined run's label names its refiner, and a run refined with another size than the
    paper's gets its own group, beside the paper's row for that size (`table.counterparts`) or none."""
    placed: dict[str, TableRow] = {}
    beside: dict[str, list[TableRow]] = {}
    extra: list[TableRow] = []
    for s in summaries:
        key = s.get("report_row")
        if not key:
            continue
        label = table.row_labels.get(key, key) + standin_mark(s)
        refiner = run_refiner(s) if table.refiner else None
        if refiner is None:
            row = TableRow(key, label, s, table.rows.get(key))
        else:
            label = f"{label} · {refiner}"
            size = refiner_size(s)
            if size == table.refiner or key not in table.rows:
                row = TableRow(key, label, s, table.rows.get(key))
            else:
                cp = table.counterparts.get((key, size))
                source = cp.source if cp else f"paper: none (no {table.row_labels.get(key, key)} run with this refiner)"
                paper = TABLES[cp.table].rows[cp.row] if cp and cp.table else None
                beside.setdefault(key, []).append(TableRow(f"{key}@{refiner}", label, s, paper, source, False))
                continue
        if key in table.rows:
            placed[key] = row
        else:
            extra.append(row)
    out: list[TableRow] = []
    for key, values in table.rows.items():
        out.append(placed.get(key) or TableRow(key, table.row_labels.get(key, key), None, values,
                                               NOT_REPRODUCIBLE if key in table.not_reproducible else "paper"))
        out += beside.get(key, [])
    return out + extra


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


def run_row(summary: dict[str, Any]) -> TableRow | None:
    """The run's row in its paper table (label, and key: `<key>@<refiner>` where the paper's row used another refiner,
    so per-step paper rows of that table do not apply); None outside a paper table."""
    table = TABLES.get(summary.get("paper_table") or "")
    rows = table_rows(table, [summary]) if table is not None else []
    return next((r for r in rows if r.run is not None), None)


def table_notes(table: PaperTable, summaries: list[dict[str, Any]]) -> DataNotes:
    runs = [(row.label, eval_results(row.run)) for row in table_rows(table, summaries) if row.run is not None]
    return data_notes(table.columns, runs)


def our_kept(summary: dict[str, Any]) -> float | None:
    """Documents kept / documents read, in percent (Table 6's Kept column for our runs)."""
    kept, read = summary.get("docs/kept"), summary.get("docs/raw")
    return 100.0 * kept / read if kept is not None and read else None


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
    rows = table_rows(table, summaries)
    ours = {r.key: our_values(r.run, table) for r in rows if r.run is not None}
    by_key = {r.key: r.run for r in rows if r.run is not None}
    label_of_run = {r.run.get("run_dir"): r.label for r in rows if r.run is not None}
    tasks = [task for _, task in table.columns]
    skipped = {key: set(eval_results(s).get("skipped") or {}) for key, s in by_key.items()}
    notes = notes if notes is not None else table_notes(table, summaries)
    header = ["row", "source", *(["Kept"] if table.kept else []), *[notes.label(c, t) for c, t in table.columns],
              "AVG"] + (["#Win"] if table.has_win else [])
    lead = significant_lead(table, by_key, stats) if stats is not None and stats.options.significant_wins_only else None
    ours_wins, paper_wins = wins(ours, lead), wins(dict(table.rows))
    n = len(table.columns)

    def kept(value: float | None) -> list[str]:
        return ([("–" if value is None else f"{value:.1f}%")] if table.kept else [])

    body: list[list[str]] = []
    for row in rows:
        label, key, paper, mine = row.label, row.key, row.paper, ours.get(row.key)
        if mine is not None:
            cells = _cells(mine) if stats is None else _cells_with_errors(mine, stats.accuracy(by_key[key], tasks),
                                                                          tasks)
            for j, (_, task) in enumerate(table.columns):
                if task in skipped.get(key, ()) and mine[j] is None:
                    cells[j] = "skipped"
            if any(v is None for v in mine[:-1]) and mine[-1] is not None:
                cells[-1] += "*"
            body.append([label, "ours", *kept(our_kept(row.run)), *cells]
                        + ([f"{ours_wins[key]}/{n}"] if table.has_win else []))
            versus = stats.versus_baseline(by_key[key], tasks) if stats is not None else {}
            if versus:
                base = stats.baseline(by_key[key])
                base_label = label_of_run.get(base.get("run_dir")) or table.row_labels.get(
                    base.get("report_row"), base.get("report_row") or base["variant"])
                body.append([label, f"Δ {base_label}", *kept(None),
                             *[signed(versus[t]) if t in versus else "–" for t in tasks + [AVG]]]
                            + ([""] if table.has_win else []))
        if row.shows_paper:
            values = paper if paper is not None else (None,) * (n + 1)
            win = f"{paper_wins[key]}/{n}" if row.own_row else ""
            body.append([label, row.source, *kept(table.kept.get(key) if row.own_row else None), *_cells(values)]
                        + ([win] if table.has_win else []))
        if mine is not None and paper is not None:
            diff = tuple(None if a is None else a - b for a, b in zip(mine[:-1], paper[:-1]))
            full = all(v is not None for v in mine[:-1])
            diff = (*diff, mine[-1] - paper[-1] if full else None)
            body.append([label, "Δ", *kept(None), *[("–" if d is None else _difference(d)) for d in diff]]
                        + ([""] if table.has_win else []))
    return header, body


def _difference(d: float) -> str:
    """`+0.7`; a difference that rounds to zero reads +0.0, never -0.0."""
    return f"{round(d, 1) + 0.0:+.1f}"


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
    labelled = [(row.label, row.run) for row in table_rows(table, summaries) if row.run is not None]
    runs = [s for _, s in labelled]
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
    for label, s in labelled:
        versus = stats.versus_baseline(s, tasks)
        compared += len(versus)
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
    lines += [line for note in table.notes for line in (f"Note: {note}", "")]
    if any(row[1] == "ours" and row[header.index("AVG")].endswith("*") for row in body):
        lines += ["\\* average over the tasks we ran (the rest show –), not comparable to the paper's AVG.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in body]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines).rstrip("\n") + "\n"


def to_latex(table: PaperTable, header: list[str], body: list[list[str]], notes: DataNotes | None = None,
             more: Sequence[str] = ()) -> str:
    return latex_table(table.title, header, body, notes=[*(f"Note: {n}" for n in table.notes)] + [
        f"[{i}] {t}" for i, t in enumerate(notes.footnotes if notes else [], 1)] + [m for m in more if m])


def latex_table(caption: str, header: list[str], body: list[list[str]], text_columns: int = 2,
                notes: Sequence[str] = ()) -> str:
    """A booktabs table: the first `text_columns` columns left-aligned, the rest right-aligned; `notes` below it."""
    def esc(s: str) -> str:
        for plain, tex in (("_", r"\_"), ("#", r"\#"), ("%", r"\%"), ("Δ", r"$\Delta$"), ("≤", r"$\le$"),
                           ("±", r"$\pm$"), ("−", "$-$"), ("‡", r"\ddag{}")):
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
    values = {(row[0], "paper" if row[1].startswith("paper") else row[1]): row[avg_col] for row in body
              if row[1] == "ours" or row[1].startswith("paper")}
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
    standins = tokenizer_notes([(row.label, row.run) for row in table_rows(table, summaries) if row.run is not None])
    md = to_markdown(table, header, body, extra + standins + notes.lines())
    (out_dir / f"{table.name}.md").write_text(md)
    (out_dir / f"{table.name}.tex").write_text(to_latex(table, header, body, notes, extra + standins))
    with open(out_dir / f"{table.name}.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    plot_averages(table, header, body, out_dir / f"{table.name}.png")
    return md


# -- Table 4: the refiners' validation F1 and kept ratio ---------------------------------------------------------

TABLE4_STEM = "table4"
TABLE4_HEADER = ["refiner", "source", "run", "Doc-level F1", "Chunk-level F1", "Kept ratio"]


def refiner_scores(summary: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """A run's Table 4 numbers in percent: its built refiners' validation F1 (refiner.select_doc / _chunk, the best
    epoch's), and the tokens ProX-D+C kept (refine.apply_chunk's tokens out / refine.apply_doc's tokens in)."""
    stages = _ledger(summary).get("stages") or {}

    def count(stage: str, name: str) -> float | None:
        return ((stages.get(stage) or {}).get("counts") or {}).get(name)

    doc_f1, chunk_f1 = count("refiner.select_doc", "best_f1"), count("refiner.select_chunk", "best_f1")
    tokens_in, tokens_out = count("refine.apply_doc", "tokens_in"), count("refine.apply_chunk", "tokens_out")
    kept = tokens_out / tokens_in if summary.get("variant") == "prox" and tokens_in and tokens_out is not None \
        else None
    return tuple(None if v is None else 100.0 * v for v in (doc_f1, chunk_f1, kept))  # type: ignore[return-value]


def refiner_table(summaries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Table 4 in the paper's layout: per refiner size the paper's row, under it each of our runs refined with a
    refiner of that size (F1 where built here, kept ratio where ProX-D+C ran), then our refiners of other sizes."""
    ours: dict[str | None, list[list[str]]] = {}
    for s in summaries:
        label = run_refiner(s)
        scores = refiner_scores(s)
        if label is None or all(v is None for v in scores):
            continue
        size = refiner_size(s)
        ours.setdefault(size if size in TABLE4 else None, []).append(
            [label, "ours", Path(s.get("run_dir", "")).name, *_cells(scores[:2]), *_percent(scores[2])])
    body: list[list[str]] = []
    for size, (doc_f1, chunk_f1, kept) in TABLE4.items():
        body += ours.get(size, [])
        body.append([TABLE4_LABELS[size], "paper", "", f"{doc_f1:.1f}", f"{chunk_f1:.1f}", f"{kept:.1f}%"])
    return TABLE4_HEADER, body + ours.get(None, [])


def _percent(value: float | None) -> list[str]:
    return ["–" if value is None else f"{value:.1f}%"]


def write_refiner_table(summaries: list[dict[str, Any]], out_dir: Path) -> ReportPart | None:
    """table4.{md,csv}: the refiners' F1 and kept ratio beside the paper's Table 4; None when no run has either."""
    header, body = refiner_table(summaries)
    if not any(row[1] == "ours" for row in body):
        return None
    title = "Table 4: refiner validation F1 (doc / chunk) and kept ratio (RedPajama-V2 in the paper)"
    md = "\n".join([f"### {title}", "", *markdown_table(header, body), "",
                    *[f"Note: {n}" for n in TABLE4_NOTES]]) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{TABLE4_STEM}.md").write_text(md)
    (out_dir / f"{TABLE4_STEM}.tex").write_text(latex_table(title, header, body, text_columns=3, notes=TABLE4_NOTES))
    with open(out_dir / f"{TABLE4_STEM}.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    return ReportPart(md, {f"paper/{TABLE4_STEM}": (header, body)}, {})
