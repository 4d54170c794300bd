"""Row helpers both multiple-choice families (``general_docs``, ``selection_docs``) build their docs with."""

from __future__ import annotations

import re
from typing import Any


def choice_texts_and_gold(row: dict[str, Any]) -> tuple[list[str], int]:
    """Both shared formats: HF rows (``choices{text,label}`` + ``answerKey``) and oe-eval rows (list + ``gold``)."""
    ch = row["choices"]
    if isinstance(ch, dict):
        key = str(row["answerKey"]).strip()
        return list(ch["text"]), list(ch["label"]).index(key)
    return list(ch), int(row["gold"])


def hellaswag_preprocess(text: str, *, strip: bool) -> str:
    """HellaSwag text cleanup: `` [title]`` -> ``. ``; drop ``[...]``; one pass of double space -> single space.

    ``strip`` is the one difference between the two reference prompt formats, and both are needed because each suite
    reproduces its own reference harness:
      - ``strip=False``: ProX's lighteval ``hellaswag_prompt`` (general / tiny_mc suites, paper Table 2). The text is
        not stripped, so the context keeps its trailing space and an ending such as ``"[step] a"`` keeps its inner
        leading space (``"  a"`` once the delimiter is added).
      - ``strip=True``: lm-eval's ``hellaswag/utils.py`` ``preprocess`` (selection suite, paper Table 3), which strips
        first.
    """
    if strip:
        text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text
