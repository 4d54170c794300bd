"""Uncertainty in the report (proxlab.report.stats): interval coverage on simulated items, the paper's weighting of
the composites, and the report's `±`, Δ rows and significance marks on a Table 2 sweep with per-sample results."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from proxlab.core.config import ReportConfig
from proxlab.report.stats import AVG, SweepStats, accuracy, paired, read_scores
from proxlab.report.sweep import build_report, load_summaries
from sweep_fixtures import table2_sweep

DRAWS = 400
OPTIONS = ReportConfig()


def _covered_share(hits: int) -> tuple[float, float]:
    """The share of DRAWS 95% intervals that covered the truth, and 3 binomial standard errors around 0.95."""
    return hits / DRAWS, 3 * np.sqrt(0.95 * 0.05 / DRAWS)


def test_intervals_cover_the_true_accuracy_and_difference_in_95_percent_of_draws():
    rng = np.random.default_rng(7)
    n, p_base, p_variant = 300, 0.45, 0.52  # true difference 0.07
    ids = np.arange(n)
    acc_hits = diff_hits = 0
    for _ in range(DRAWS):
        # Paired items: item difficulty shared by both runs, so their scores are correlated, as on a real benchmark.
        u = rng.random(n)
        base = (u < p_base).astype(float)
        variant = (np.where(rng.random(n) < 0.5, u, rng.random(n)) < p_variant).astype(float)
        a, b = {"t": {"t": (ids, variant)}}, {"t": {"t": (ids, base)}}
        acc = accuracy(b, OPTIONS)["t"]
        acc_hits += acc.low <= p_base <= acc.high
        delta = paired(a, b, OPTIONS)["t"]
        diff_hits += delta.low <= p_variant - p_base <= delta.high
    for hits in (acc_hits, diff_hits):
        share, tolerance = _covered_share(hits)
        assert abs(share - 0.95) <= tolerance, (acc_hits, diff_hits)


def _write(path: Path, scores: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"doc_id": i, "doc_index": i, "acc": s, "acc_norm": s}) + "\n"
                            for i, s in enumerate(scores)))


def test_mmlu_is_the_mean_of_its_subjects_and_avg_the_mean_of_tasks(tmp_path):
    # A small subject at 100% and a large one at 20%: subject-weighted 60%, item-weighted 27%.
    _write(tmp_path / "general_mmlu_anatomy.jsonl", [1.0] * 10)
    _write(tmp_path / "general_mmlu_astronomy.jsonl", [1.0] * 40 + [0.0] * 160)
    _write(tmp_path / "general_arc_easy.jsonl", [1.0] * 30 + [0.0] * 70)
    results = {"tasks": {"mmlu": {"metric": "acc_norm"}, "arc_easy": {"metric": "acc_norm"}},
               "subtasks": {"mmlu": {"anatomy": {}, "astronomy": {}}}}
    scores = read_scores(results, tmp_path)
    assert sorted(scores["mmlu"]) == ["anatomy", "astronomy"]
    ivs = accuracy(scores, OPTIONS)
    assert ivs["mmlu"].value == pytest.approx(0.6) and ivs["mmlu"].n == 210
    assert ivs[AVG].value == pytest.approx((0.6 + 0.3) / 2)
    # Resampled within subjects: the all-correct subject adds no spread, so MMLU's SE is half astronomy's.
    assert ivs["mmlu"].se == pytest.approx(0.5 * np.sqrt(0.2 * 0.8 / 200), rel=0.1)
    # AVG's SE: the tasks' independent errors, averaged.
    assert ivs[AVG].se == pytest.approx(0.5 * np.hypot(ivs["mmlu"].se, ivs["arc_easy"].se), rel=0.1)
    # Same data twice: zero difference, p = 1, nothing significant.
    same = paired(scores, scores, OPTIONS)
    assert same[AVG].value == 0 and same[AVG].p == 1 and not same[AVG].significant


def test_bad_bootstrap_settings_are_named():
    with pytest.raises(ValueError, match="report.bootstrap_resamples"):
        SweepStats([], ReportConfig(bootstrap_resamples=5))
    with pytest.raises(ValueError, match="report.confidence_level"):
        SweepStats([], ReportConfig(confidence_level=95))


N_ITEMS = 400


def add_samples(sweep: Path) -> None:
    """Per-item results behind each run's final accuracies: for each task, one fixed order of the items, and a run
    at accuracy v gets the first round(v·N) right, so a better run's correct items include a worse one's."""
    for summary in load_summaries(sweep):
        ledger = json.loads((Path(summary["run_dir"]) / "ledger.json").read_text())
        evaluate = ledger["stages"]["evaluate"]
        for i, (task, entry) in enumerate(evaluate["extra"]["results"]["tasks"].items()):
            order = np.random.default_rng(i).permutation(N_ITEMS)
            scores = np.zeros(N_ITEMS)
            scores[order[:round(entry["acc_norm"] * N_ITEMS)]] = 1.0
            _write(Path(evaluate["out_dir"]) / "samples" / "final" / f"general_{task}.jsonl", scores.tolist())


def _row(md: str, label: str, source: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} | {source} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_prints_errors_differences_and_significance(tmp_path):
    sweep = table2_sweep(tmp_path)
    add_samples(sweep)
    out = build_report(sweep)
    main = (out / "table.md").read_text()
    assert re.search(r"\| raw \| tlm_s \|.* 44\.3 ± 2\.\d \|", main)  # ARC-E: sqrt(.443·.557/400) = 2.5 points
    assert "± standard error: bootstrap over items (2000 resamples, seed 0" in main

    md = (out / "table2.md").read_text()
    header = [c.strip() for c in md.splitlines()[md.splitlines().index(next(
        line for line in md.splitlines() if line.startswith("| row |")))].strip("|").split("|")]
    ours, delta = _row(md, "ProX-D+C", "ours"), _row(md, "ProX-D+C", "Δ Raw")
    col = {name.split(" [")[0]: j for j, name in enumerate(header)}
    assert re.fullmatch(r"51\.9 ± \d\.\d", ours[col["ARC-E"]])
    # ARC-E: 208 vs 177 items right, all of raw's among ProX's: +7.8 points, significant.
    assert delta[col["ARC-E"]] == "+7.8*"
    # ARC-C: 106 vs 104 items: two items apart, not significant.
    assert delta[col["ARC-C"]] == "+0.5"
    assert delta[col["AVG"]].endswith("*")
    assert "Uncertainty: ± is the standard error" in md and "ProX-D+C ARC-E +7.8" in md
    assert "| Raw | Δ Raw |" not in md  # the baseline has no difference from itself
    tex = (out / "table2.tex").read_text()  # the LaTeX table carries the same footnote
    assert r"Uncertainty: $\pm$ is the standard error" in tex and "ProX-D+C ARC-E +7.8 (p=" in tex
    assert "variant $-$ its 'raw' run" in tex

    comparisons = (out / "comparisons.md").read_text()
    assert "| prox | tlm_s | raw |" in comparisons and "Significant:" in comparisons
    csv_rows = (out / "comparisons.csv").read_text().splitlines()
    assert csv_rows[0] == "run,baseline,task,delta,ci_low,ci_high,p,items,significant" and len(csv_rows) == 1 + 3 * 11

    plain_wins = int(_row(md, "ProX-D+C", "ours")[-1].split("/")[0])
    build_report(sweep, options=ReportConfig(significant_wins_only=True))
    strict = (out / "table2.md").read_text()
    strict_wins = int(_row(strict, "ProX-D+C", "ours")[-1].split("/")[0])
    assert plain_wins == 9 and 0 < strict_wins < plain_wins  # leads of a few items are not significant
    assert "#Win (ours) counts a column only where" in strict


def test_report_without_samples_prints_plain_numbers(tmp_path):
    out = build_report(table2_sweep(tmp_path))
    assert "±" not in (out / "table2.md").read_text() and not (out / "comparisons.md").exists()
