"""The paper's tables as data, and our results rendered in the paper's layout beside them."""

import pytest

from proxlab.report.paper import TABLES
from proxlab.report.paper_tables import render, wins, write_paper_table

# Rows whose printed AVG is not the mean of their printed columns in the paper itself (checked against the paper).
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


# -- data notes: substitute splits and forced skips, from the evaluate results the runs' ledgers hold ------------------

def _with_eval_data(summary: dict, suite: str = "general", skip: str | None = None) -> dict:
    """Put the evaluate stage's own per-task data records (computed on the shared data) into a fixture run's ledger;
    `skip`: that task was skipped under eval.on_missing_task=skip + eval.force_skip=true (no score in the summary)."""
    import json
    from pathlib import Path

    from proxlab.core.config import EvalConfig
    from proxlab.evaluate.runner import data_records
    from proxlab.evaluate.tasks.data import resolve_data_dir
    from proxlab.evaluate.tasks.suites import get_suite, resolve_tasks
    from proxlab.runner.ledger import LEDGER, SUMMARY

    run_dir = Path(summary["run_dir"])
    ledger = json.loads((run_dir / LEDGER).read_text())
    results = ledger["stages"]["evaluate"]["extra"]["results"]
    s, root = get_suite(suite), resolve_data_dir()
    tasks = [t for t in resolve_tasks(s, None) if t.name != skip]
    cfg = EvalConfig(suite=suite, tasks=[], limit=None, on_missing_task="skip" if skip else "error",
                     force_skip=bool(skip))
    results["data"] = data_records(s, tasks, cfg, root, {t: {"n": 100} for t in results["tasks"]})
    results.update(data_dir=str(root), force_skip=bool(skip), skipped={})
    if skip:
        results["skipped"] = {skip: [str(root / "eval" / f"{skip}_test.jsonl")]}
        del results["tasks"][skip]
        summary = {k: v for k, v in summary.items() if not k.startswith(f"eval/{skip}")}
    (run_dir / LEDGER).write_text(json.dumps(ledger))
    (run_dir / SUMMARY).write_text(json.dumps(summary))
    return summary


def test_paper_table_footnotes_substitute_splits_and_forced_skips(tmp_path):
    from sweep_fixtures import write_run

    from proxlab.report.sweep import build_report

    sweep = tmp_path / "runs" / "table2"
    raw = _with_eval_data(write_run(sweep, tmp_path / "artifacts", "raw", None))
    prox = _with_eval_data(write_run(sweep, tmp_path / "artifacts", "prox", None), skip="siqa")
    table = TABLES["table2"]
    header, body = render(table, [raw, prox])
    assert "SIQA [1]" in header and "SciQ [2]" in header and "ARC-C" in header  # ARC on test, as the paper
    prox_ours = [r for r in body if r[0] == "ProX-D+C" and r[1] == "ours"][0]
    assert prox_ours[header.index("SIQA [1]")] == "skipped" and prox_ours[header.index("AVG")].endswith("*")
    raw_ours = [r for r in body if r[0] == "Raw" and r[1] == "ours"][0]
    assert raw_ours[header.index("SIQA [1]")] == "39.0"
    md = write_paper_table(table, [raw, prox], tmp_path / "out")
    assert "- [2] SciQ: validation split (paper: test). Ran on eval/sciq_validation.jsonl (805 items)." in md
    assert ("- [1] SIQA: skipped (rows: ProX-D+C), its data missing (eval/siqa_test.jsonl); "
            "eval.on_missing_task=skip, forced with eval.force_skip=true.") in md
    assert "- ARC-C: eval/arc_challenge_test.jsonl [test, 947 of 1172 items]; scored 100: lighteval's seed-42 " \
           "shuffle, first 1000; few-shot: none (0-shot)" in md
    tex = (tmp_path / "out" / "table2.tex").read_text()
    assert "SciQ [2]" in tex and "[2] SciQ: validation split (paper: test)" in tex
    # the sweep report prints the same notes under its own table and under the paper table
    out = build_report(sweep)
    for name in ("table.md", "table2.md"):
        text = (out / name).read_text()
        assert "sciq: validation split (paper: test)" in text.lower() and "skipped" in text, name
    assert "| skipped |" in (out / "table.md").read_text()


def test_no_footnote_when_every_task_ran_on_the_papers_split(tmp_path):
    import json
    from pathlib import Path

    from sweep_fixtures import write_run

    from proxlab.runner.ledger import LEDGER

    summary = _with_eval_data(write_run(tmp_path / "runs" / "t", tmp_path / "artifacts", "raw", None))
    table = TABLES["table2"]
    ledger_path = Path(summary["run_dir"]) / LEDGER
    ledger = json.loads(ledger_path.read_text())
    ledger["stages"]["evaluate"]["extra"]["results"]["data"]["sciq"]["substitute"] = []  # as if run on test
    ledger_path.write_text(json.dumps(ledger))
    header, _ = render(table, [summary])
    assert not any("[" in h for h in header)
    md = write_paper_table(table, [summary], tmp_path / "out")
    assert "differs from the paper" not in md and "Data per task (ours):" in md
