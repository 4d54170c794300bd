"""The paper's tables as data, and our results rendered in the paper's layout beside them."""

import pytest

from proxlab.report.paper import TABLES
from proxlab.report.paper_tables import render, wins, write_paper_table

# Rows whose printed AVG is not the mean of their printed columns in the paper itself (checked against prox.md).
PAPER_AVG_QUIRKS = {("table2", "tlm_s/rules"), ("table5", "tinyllama_1b/base"), ("table5", "tinyllama_1b/prox"),
                    ("table5", "mistral_7b/doc")}


def test_transcribed_rows_are_consistent():
    for table in TABLES.values():
        for key, values in table.rows.items():
            assert len(values) == len(table.columns) + 1, (table.name, key)
            mean = sum(values[:-1]) / len(table.columns)
            if (table.name, key) not in PAPER_AVG_QUIRKS:
                assert mean == pytest.approx(values[-1], abs=0.051), (table.name, key)


def test_paper_win_counts_match_table2():
    got = wins(dict(TABLES["table2"].rows))
    assert got == {"tlm_s/raw": 0, "tlm_s/rules_gopher": 0, "tlm_s/rules_c4": 2, "tlm_s/rules_fineweb": 2,
                   "tlm_s/rules": 0, "tlm_s/doc": 2, "tlm_s/prox": 5}


def summary(row, scale=1.0):
    tasks = [t for _, t in TABLES["table2"].columns]
    return {"report_row": row, **{f"eval/{t}": scale * (0.3 + 0.01 * i) for i, t in enumerate(tasks)}}


def test_ours_paper_and_difference_rows(tmp_path):
    table = TABLES["table2"]
    header, body = render(table, [summary("tlm_s/raw"), summary("tlm_s/prox", 1.1)])
    assert header[:3] == ["row", "source", "ARC-C"] and header[-2:] == ["AVG", "#Win"]
    raw = [r for r in body if r[0] == "Raw"]
    assert [r[1] for r in raw] == ["ours", "paper", "Δ"]
    assert raw[0][2] == "30.0" and raw[1][2] == "26.1" and raw[2][2] == "+3.9"
    assert raw[0][-1] == "0/10" and [r for r in body if r[0] == "ProX-D+C"][0][-1] == "10/10"
    assert [r[1] for r in body if r[0] == "Gopher rules"] == ["paper"]  # not run: the paper's row alone
    md = write_paper_table(table, [summary("tlm_s/raw")], tmp_path)
    assert "| Raw | ours |" in md
    for ext in ("md", "csv", "tex", "png"):
        assert (tmp_path / f"table2.{ext}").stat().st_size > 100
    assert r"\begin{tabular}" in (tmp_path / "table2.tex").read_text()
