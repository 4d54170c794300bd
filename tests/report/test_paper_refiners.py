"""Table 2 labelled by refiner: a run refined with the released 0.3B refiners is set beside Fig. 5's TLM-S on
ProX-xs row (ProX-D: beside nothing), one refined with TLM-S-sized refiners built here beside Table 2's own rows; and
Table 4 sets each refiner's F1 and kept ratio beside the paper's."""

from paper_run_fixtures import write_run

from proxlab.report.paper import TABLE10, TABLE10_STEPS, TABLES
from proxlab.report.paper_tables import render, write_paper_table
from proxlab.report.sweep import build_report

TABLE2, FIG5 = TABLES["table2"], TABLES["fig5"]
BUILT_S = ["refine.doc.model=built", "refine.chunk.model=built", "refiner=s"]
RELEASED = ["refine.doc.model=gair-prox/web-doc-refining-lm", "refine.chunk.model=gair-prox/web-chunk-refining-lm"]


def lines_of(md: str, label: str) -> list[list[str]]:
    """The markdown table rows whose first cell is `label`, as lists of cells."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    return [r for r in rows if r[0] == label]


def test_released_refiners_are_compared_with_fig5_and_prox_d_with_nothing(tmp_path):
    sweep = tmp_path / "runs" / "table2"
    xs_row = FIG5.rows["tlm_s/prox_xs"]  # 43.9: what TLM-S reaches on data refined by the 0.3B refiners
    raw = write_run(sweep, ["exp=table2", "refine=raw"], TABLE2.rows["tlm_s/raw"], "raw")
    doc = write_run(sweep, ["exp=table2", "refine=doc", RELEASED[0]], TABLE2.rows["tlm_s/doc"], "doc")
    prox = write_run(sweep, ["exp=table2", "refine=prox", *RELEASED], xs_row, "prox")
    md = write_paper_table(TABLE2, [raw, doc, prox], tmp_path / "out")

    prox_rows = lines_of(md, "ProX-D+C · ProX-xs (released)")
    assert [r[1] for r in prox_rows] == ["ours", "paper: Fig. 5, TLM-S on ProX-xs data", "Δ"]
    assert prox_rows[1][2:13] == [f"{v:.1f}" for v in xs_row] and prox_rows[1][12] == "43.9"
    assert all(abs(float(d)) < 0.05 for d in prox_rows[2][2:13])  # ours is Fig. 5's row: Δ 0, not -0.7 (44.6)
    # Table 2's own ProX-D+C row (0.7B refiners) stands alone, with its #Win
    assert lines_of(md, "ProX-D+C") == [["ProX-D+C", "paper", *[f"{v:.1f}" for v in TABLE2.rows["tlm_s/prox"]],
                                         "5/10"]]
    doc_rows = lines_of(md, "ProX-D · ProX-xs (released)")
    assert [r[1] for r in doc_rows] == ["ours", "paper: none (no ProX-D run with 0.3B refiners)"]
    assert doc_rows[1][2:13] == ["–"] * 11 and doc_rows[0][12] == "43.5"
    assert [r[1] for r in lines_of(md, "ProX-D")] == ["paper"]
    assert [r[1] for r in lines_of(md, "Raw")] == ["ours", "paper", "Δ"]  # raw and rules carry no refiner
    assert "Note: Table 2's refiners are TLM-S itself (0.7B, §3.2)." in md


def test_built_tlm_s_refiners_keep_table2s_rows(tmp_path):
    sweep = tmp_path / "runs" / "table2"
    prox = write_run(sweep, ["exp=table2", "refine=prox", *BUILT_S], TABLE2.rows["tlm_s/prox"], "prox-built")
    header, body = render(TABLE2, [prox])
    rows = [r for r in body if r[0] == "ProX-D+C · ProX-s (built)"]
    assert [r[1] for r in rows] == ["ours", "paper", "Δ"]
    assert rows[1][header.index("AVG")] == "44.6" and abs(float(rows[2][header.index("AVG")])) < 0.05
    assert not any(r[0] == "ProX-D+C" for r in body)  # Table 2's row is this run's counterpart


def test_sweep_report_by_step_and_table4_follow_the_refiner(tmp_path):
    """The whole report: Table 10's per-step row sits under raw but not under the run refined with the 0.3B
    refiners (its counterpart is Fig. 5's); Table 4 has the built refiner's F1 and each run's kept ratio."""
    sweep = tmp_path / "runs" / "table2"
    steps = dict(zip(TABLE10_STEPS, TABLE10["tlm_s/raw"]))
    write_run(sweep, ["exp=table2", "refine=raw"], TABLE2.rows["tlm_s/raw"], "raw", by_step=steps)
    refined = {"refine.apply_doc": {"tokens_in": 62.5e9, "tokens_out": 19.0e9},
               "refine.apply_chunk": {"tokens_in": 19.0e9, "tokens_out": 14.5e9}}
    write_run(sweep, ["exp=table2", "refine=prox", *RELEASED], FIG5.rows["tlm_s/prox_xs"], "prox-xs", refined,
              by_step=dict(zip(TABLE10_STEPS, TABLE10["tlm_s/prox"])))
    built = {"refiner.select_doc": {"best_f1": 0.801}, "refiner.select_chunk": {"best_f1": 0.7}, **refined}
    write_run(sweep, ["exp=table2", "refine=prox", *BUILT_S], TABLE2.rows["tlm_s/prox"], "prox-s", built)
    out = build_report(sweep)

    by_step = (out / "accuracy_by_step.md").read_text()
    assert [r[1] for r in lines_of(by_step, "Raw")] == ["ours", "paper"]
    assert [r[1] for r in lines_of(by_step, "ProX-D+C · ProX-xs (released)")] == ["ours"]
    table4 = (out / "table4.md").read_text()
    assert lines_of(table4, "ProX-xs (released)") == [["ProX-xs (released)", "ours", "prox-xs", "–", "–", "23.2%"]]
    assert lines_of(table4, "TLM-XS") == [["TLM-XS", "paper", "", "82.6", "75.2", "23.2%"]]
    assert lines_of(table4, "ProX-s (built)") == [["ProX-s (built)", "ours", "prox-s", "80.1", "70.0", "23.2%"]]
    assert lines_of(table4, "TLM-S") == [["TLM-S", "paper", "", "81.3", "75.6", "25.6%"]]
    assert lines_of(table4, "TLM-M") == [["TLM-M", "paper", "", "83.7", "77.3", "28.8%"]]
    rows = [line.split("|")[1].strip() for line in table4.splitlines() if line.startswith("| ")]
    assert rows.index("ProX-xs (released)") < rows.index("TLM-XS") < rows.index("ProX-s (built)") < rows.index("TLM-S")
