"""The data-selection suite (paper Table 3): lm-eval's own prompt formats and metrics, on local files, 0 or 2 shots.

ProX compared data-selection methods with lm-evaluation-harness (acc_norm where the task has it, else acc), so these
tasks reproduce lm-eval's built-in task definitions (``lm_eval/tasks/{arc,hellaswag,logiqa,openbookqa,piqa,winogrande,
sciq}``) and keep lm-eval's metrics: ``acc_norm`` = argmax of log-likelihood / character length of the choice string
(``doc_to_choice``, without the target delimiter). WinoGrande uses lm-eval's partial scoring (the two options as two
contexts, the shared rest of the sentence as the scored continuation) and reports acc.

Each doc has ``query`` (context; WinoGrande: the gold index, lm-eval's multiple-input convention), ``choices``,
``gold``; WinoGrande also ``contexts`` and ``suffix``.
"""

from __future__ import annotations

from typing import Any

from proxlab.evaluate.tasks.common import choice_texts_and_gold, hellaswag_preprocess
from proxlab.evaluate.tasks.data import build_dataset, raw_json


def _doc(query: Any, choices: list[str], gold: int, i: int, row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"query": query, "choices": list(choices), "gold": int(gold), "doc_index": i, "raw": raw_json(row), **extra}


def arc(row: dict[str, Any], i: int) -> dict[str, Any]:
    texts, gold = choice_texts_and_gold(row)
    return _doc(f"Question: {row['question']}\nAnswer:", texts, gold, i, row)


def hellaswag(row: dict[str, Any], i: int) -> dict[str, Any]:
    # lm-eval hellaswag/utils.py: its preprocess strips (see common.hellaswag_preprocess)
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return _doc(hellaswag_preprocess(row["activity_label"] + ": " + ctx, strip=True),
                [hellaswag_preprocess(e, strip=True) for e in row["endings"]], int(row["label"]), i, row)


def logiqa(row: dict[str, Any], i: int) -> dict[str, Any]:
    """lm-eval ``logiqa/utils_logiqa.py``. Accepts EleutherAI/logiqa rows (``context, question, options, label``
    with label ``a``-``d``) and lucasmccabe/logiqa rows (``context, query, options, correct_option`` 0-3)."""
    question = row.get("question", row.get("query"))
    options = list(row["options"])
    if "label" in row:
        gold = ["a", "b", "c", "d"].index(str(row["label"]).strip().lower())
    else:
        gold = int(row["correct_option"])
    prompt = "Passage: " + row["context"] + "\n"
    prompt += "Question: " + question + "\nChoices:\n"
    for letter, option in zip("abcd", options):
        prompt += f"{letter.upper()}. {option}\n"
    prompt += "Answer:"
    return _doc(prompt, options, gold, i, row)


def openbookqa(row: dict[str, Any], i: int) -> dict[str, Any]:
    query = row.get("question_stem", row.get("question"))
    if isinstance(row["choices"], dict):
        texts = list(row["choices"]["text"])
        gold = list(row["choices"]["label"]).index(str(row["answerKey"]).lstrip())
    else:
        texts, gold = list(row["choices"]), int(row["gold"])
    return _doc(query, texts, gold, i, row)


def piqa(row: dict[str, Any], i: int) -> dict[str, Any]:
    return _doc(f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], int(row["label"]), i, row)


def winogrande(row: dict[str, Any], i: int) -> dict[str, Any]:
    """lm-eval ``winogrande/preprocess_winogrande.py`` (partial scoring)."""
    sentence = row["sentence"]
    idx = sentence.index("_")
    contexts = [sentence[:idx] + row["option1"], sentence[:idx] + row["option2"]]
    suffix = sentence[idx + 1:].strip()
    gold = {"1": 0, "2": 1}[str(row["answer"])]
    return _doc(gold, contexts, gold, i, row, contexts=contexts, suffix=suffix)


def sciq(row: dict[str, Any], i: int) -> dict[str, Any]:
    query = f"{row['support'].lstrip()}\nQuestion: {row['question']}\nAnswer:"
    return _doc(query, [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]], 3, i, row)


BUILDERS = {"arc": arc, "hellaswag": hellaswag, "logiqa": logiqa, "openbookqa": openbookqa, "piqa": piqa,
            "winogrande": winogrande, "sciq": sciq}


def load_dataset(**kwargs: Any):
    """lm-eval ``custom_dataset`` entry point of every selection-suite task."""
    return build_dataset(BUILDERS, **kwargs)
