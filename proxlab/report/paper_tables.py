"""Our results in the paper's layout: for each row of a paper table, our numbers, the paper's, and the difference.

Accuracies are percentages with one decimal, as in the paper; AVG is the unweighted mean of the table's columns;
`#Win` (where the paper has it) counts the columns where a row is the best of the table's rows of the same source.
Rows the paper has but we have not run show the paper's numbers only; rows we ran that the paper lacks show ours only.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from proxlab.report.paper import PaperTable


def our_values(summary: dict[str, Any], table: PaperTable) -> tuple[float | None, ...]:
    vals = []
    for _, task in table.columns:
        v = summary.get(f"eval/{task}")
        vals.append(None if v is None else 100.0 * v)
    known = [v for v in vals if v is not None]
    avg = sum(known) / len(known) if known else None  # over the tasks run; marked with * when some are missing
    return (*vals, avg)


def wins(rows: dict[str, tuple[float | None, ...]]) -> dict[str, int]:
    """Per row: in how many columns (AVG excluded) it is the best of `rows` (ties count for every tied row)."""
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
                out[k] += 1
    return out


def render(table: PaperTable, summaries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    ours = {s.get("report_row"): our_values(s, table) for s in summaries if s.get("report_row")}
    header = ["row", "source", *[c for c, _ in table.columns], "AVG"] + (["#Win"] if table.has_win else [])
    ours_wins, paper_wins = wins(ours), wins(dict(table.rows))
    keys = list(table.rows) + [k for k in ours if k not in table.rows]
    body: list[list[str]] = []
    for key in keys:
        label = table.row_labels.get(key, key)
        paper = table.rows.get(key)
        mine = ours.get(key)
        n = len(table.columns)
        if mine is not None:
            cells = _cells(mine)
            if any(v is None for v in mine[:-1]) and mine[-1] is not None:
                cells[-1] += "*"
            body.append([label, "ours", *cells] + ([f"{ours_wins[key]}/{n}"] if table.has_win else []))
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


def to_markdown(table: PaperTable, header: list[str], body: list[list[str]]) -> str:
    lines = [f"### {table.title}", ""]
    if table.note:
        lines += [f"Note: {table.note}", ""]
    if any(row[header.index("AVG")].endswith("*") for row in body):
        lines += ["\\* average over the tasks we ran (the rest show –), not comparable to the paper's AVG.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def to_latex(table: PaperTable, header: list[str], body: list[list[str]]) -> str:
    return latex_table(table.title, header, body)


def latex_table(caption: str, header: list[str], body: list[list[str]], text_columns: int = 2) -> str:
    """A booktabs table: the first `text_columns` columns left-aligned, the rest right-aligned."""
    def esc(s: str) -> str:
        for plain, tex in (("_", r"\_"), ("#", r"\#"), ("%", r"\%"), ("Δ", r"$\Delta$"), ("≤", r"$\le$")):
            s = s.replace(plain, tex)
        return s

    align = "l" * text_columns + "r" * (len(header) - text_columns)
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + align + "}",
           r"\toprule", " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    out += [r"\bottomrule", r"\end{tabular}", r"\caption{" + esc(caption) + "}", r"\end{table}"]
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
        ys = [float(values[(lbl, src)].rstrip("*")) if values.get((lbl, src), "–") != "–" else 0.0 for lbl in labels]
        ax.bar([x + (i - 0.5) * width for x in range(len(labels))], ys, width, label=src)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("AVG accuracy (%)")
    ax.set_title(table.title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_paper_table(table: PaperTable, summaries: list[dict[str, Any]], out_dir: Path) -> str:
    header, body = render(table, summaries)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = to_markdown(table, header, body)
    (out_dir / f"{table.name}.md").write_text(md)
    (out_dir / f"{table.name}.tex").write_text(to_latex(table, header, body))
    with open(out_dir / f"{table.name}.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    plot_averages(table, header, body, out_dir / f"{table.name}.png")
    return md
