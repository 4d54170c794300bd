"""Refining-model quality metrics of the paper (§A.3, Table 4).

* Doc level: binary F1 with keep = 1 (positive class) and drop = 0. ``doc_f1`` also reports the drop-class scores,
  accuracy and the macro average, because "F1" in Table 4 does not say which class; keep-class F1 is the literal
  reading of "keep (1) / drop (0) F1".
* Chunk level: line-wise F1 over the sets of predicted and labelled removed line numbers of a document:
  TP = |pred ∩ gold|, FP = |pred \\ gold|, FN = |gold \\ pred|. ``normalize`` ops are not evaluated.
  ``line_f1_corpus`` gives the micro average (counts summed over documents) and the macro average (mean of
  per-document F1).

Empty cases: when TP = FP = FN = 0 (nothing predicted, nothing labelled) precision, recall and F1 are 1.0, since
prediction and label agree; otherwise a zero denominator gives 0.0. Standard library only.
"""

from __future__ import annotations

from typing import Iterable, Sequence


def _safe_ratio(numerator: int, denominator: int, empty: float) -> float:
    return numerator / denominator if denominator else empty


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1. With no positives predicted and none labelled (tp=fp=fn=0) all three are 1.0."""
    nothing_to_find = tp + fp + fn == 0
    precision = _safe_ratio(tp, tp + fp, 1.0 if nothing_to_find else 0.0)
    recall = _safe_ratio(tp, tp + fn, 1.0 if nothing_to_find else 0.0)
    f1 = _safe_ratio(2 * precision * recall, precision + recall, 0.0) if not nothing_to_find else 1.0
    return {"precision": precision, "recall": recall, "f1": f1}


def doc_f1(pred_keep: Sequence[bool], gold_keep: Sequence[bool]) -> dict[str, float]:
    """Doc-level keep/drop scores over a set of documents.

    Returns ``precision``, ``recall``, ``f1`` for the keep class (positive), ``drop_precision``, ``drop_recall``,
    ``drop_f1`` for the drop class, ``macro_f1`` (their mean), ``accuracy``, and the counts ``tp fp fn tn`` (keep
    positive) and ``n``.
    """
    if len(pred_keep) != len(gold_keep):
        raise ValueError(f"pred_keep has {len(pred_keep)} items, gold_keep {len(gold_keep)}")
    tp = fp = fn = tn = 0
    for pred, gold in zip(pred_keep, gold_keep):
        if pred and gold:
            tp += 1
        elif pred:
            fp += 1
        elif gold:
            fn += 1
        else:
            tn += 1
    keep = _prf(tp, fp, fn)
    drop = _prf(tn, fn, fp)  # drop as the positive class: TP=tn, FP=fn (predicted drop, gold keep), FN=fp
    n = tp + fp + fn + tn
    return {
        **keep,
        "drop_precision": drop["precision"],
        "drop_recall": drop["recall"],
        "drop_f1": drop["f1"],
        "macro_f1": (keep["f1"] + drop["f1"]) / 2,
        "accuracy": _safe_ratio(tp + tn, n, 1.0),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n": n,
    }


def line_f1(pred_removed: Iterable[int], gold_removed: Iterable[int]) -> dict[str, float]:
    """Line-wise F1 of one document's removed line numbers. Both empty → precision = recall = F1 = 1.0."""
    pred, gold = set(pred_removed), set(gold_removed)
    tp = len(pred & gold)
    fp = len(pred - gold)
    fn = len(gold - pred)
    return {**_prf(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn}


def line_f1_corpus(pairs: Iterable[tuple[Iterable[int], Iterable[int]]]) -> dict[str, float]:
    """Line F1 over many documents from (pred_removed, gold_removed) pairs.

    ``precision recall f1``: micro average (TP/FP/FN summed over documents, so long documents weigh more);
    ``macro_f1``: mean of the per-document F1; plus the summed counts and ``n_docs``.
    """
    tp = fp = fn = 0
    per_doc_f1 = []
    for pred, gold in pairs:
        scores = line_f1(pred, gold)
        tp += scores["tp"]
        fp += scores["fp"]
        fn += scores["fn"]
        per_doc_f1.append(scores["f1"])
    return {
        **_prf(tp, fp, fn),
        "macro_f1": _safe_ratio(sum(per_doc_f1), len(per_doc_f1), 1.0),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_docs": len(per_doc_f1),
    }
