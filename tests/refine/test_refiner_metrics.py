"""Refiner quality metrics (paper §A.3): doc keep/drop F1 and line-removal F1."""

from __future__ import annotations

import pytest

from proxlab.refine.programs import run_chunk_programs
from proxlab.refine.refiner_metrics import doc_f1, line_f1, line_f1_corpus


def test_doc_f1_keep_is_the_positive_class():
    pred = [True, True, False, False, True]
    gold = [True, False, False, True, True]
    scores = doc_f1(pred, gold)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"], scores["n"]) == (2, 1, 1, 1, 5)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    # drop class: TP = tn = 1, FP = fn = 1 (predicted drop, gold keep), FN = fp = 1
    assert scores["drop_precision"] == pytest.approx(1 / 2)
    assert scores["drop_recall"] == pytest.approx(1 / 2)
    assert scores["drop_f1"] == pytest.approx(1 / 2)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert scores["accuracy"] == pytest.approx(3 / 5)


def test_doc_f1_perfect_and_all_wrong():
    assert doc_f1([True, False], [True, False])["f1"] == 1.0
    wrong = doc_f1([False, True], [True, False])
    assert wrong["f1"] == 0.0 and wrong["drop_f1"] == 0.0 and wrong["accuracy"] == 0.0


def test_doc_f1_no_positive_anywhere_is_perfect_agreement_on_keep():
    scores = doc_f1([False, False], [False, False])
    assert scores["f1"] == 1.0 and scores["drop_f1"] == 1.0


def test_doc_f1_rejects_length_mismatch():
    with pytest.raises(ValueError):
        doc_f1([True], [True, False])


def test_line_f1_counts():
    scores = line_f1({0, 1, 2, 7}, [1, 2, 3])
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 2, 1)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_line_f1_empty_cases():
    assert line_f1([], [])["f1"] == 1.0  # both say: nothing to remove
    missed = line_f1([], [4])
    assert missed["precision"] == 0.0 and missed["recall"] == 0.0 and missed["f1"] == 0.0
    spurious = line_f1([4], [])
    assert spurious["f1"] == 0.0


def test_line_f1_corpus_micro_and_macro():
    pairs = [({0, 1}, {0, 1}), ({5}, {6}), (set(), set())]
    scores = line_f1_corpus(pairs)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["n_docs"]) == (2, 1, 1, 3)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert line_f1_corpus([])["n_docs"] == 0


def test_line_f1_from_program_results():
    text = "\n".join(f"line {i} has four words" for i in range(10))
    predicted = run_chunk_programs(text, ["remove_lines(start=0, end=2)"], mode="strict")
    gold = run_chunk_programs(text, ["remove_lines(start=1, end=3)"], mode="strict")
    scores = line_f1(predicted.removed_lines, gold.removed_lines)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 1, 1)
