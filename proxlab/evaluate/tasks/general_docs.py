"""The general suite (paper Table 2): lighteval's 0-shot prompts as ProX ran them, rebuilt for lm-eval.

Each builder turns one raw row into a doc with
  ``query``             the context, exactly lighteval's ``Doc.query``;
  ``lighteval_choices`` the choice strings exactly as lighteval's prompt function writes them (mostly ``" " + text``);
  ``choices``           what lm-eval appends after ``target_delimiter`` (``" "``; WinoGrande ``""``), so that
                        ``target_delimiter + choices[i] == lighteval_choices[i]``;
  ``gold``              the gold index;
and ``doc_index`` (row position in the file) and ``raw`` (the row as JSON) for inspection.

Scoring (``process_results``) is lighteval's, computed here rather than by lm-eval's built-in metric so the definition
does not depend on the lm-eval version: ``acc`` = argmax of summed log-likelihoods; ``acc_norm`` (lighteval's
``loglikelihood_acc_norm_nospace``) = argmax of log-likelihood / character length of the lighteval choice string,
minus one if that string starts with a space. Ties go to the first index (numpy argmax). Formats: the reference's
``eval/lighteval/tasks.py`` (GAIR-NLP/ProX) and lighteval's ``src/lighteval/tasks/tasks_prompt_formatting.py`` (at
``a3d1eea1``, the lighteval ProX ran; paper §C.1); the table in ``docs/evaluation.md``.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np

from proxlab.evaluate.tasks.common import choice_texts_and_gold, hellaswag_preprocess
from proxlab.evaluate.tasks.data import build_dataset, raw_json

LETTERS = string.ascii_uppercase

MMLU_SUBJECTS = [
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
]


def _doc(query: str, lighteval_choices: list[str], gold: int, index: int, row: dict[str, Any],
         delimiter: str = " ") -> dict[str, Any]:
    if delimiter:
        for c in lighteval_choices:
            if not c.startswith(delimiter):
                raise ValueError(f"choice {c!r} does not start with the target delimiter {delimiter!r}")
        choices = [c[len(delimiter):] for c in lighteval_choices]
    else:
        choices = list(lighteval_choices)
    if not 0 <= gold < len(choices):
        raise ValueError(f"row {index}: gold {gold} out of range for {len(choices)} choices")
    return {"query": query, "choices": choices, "lighteval_choices": list(lighteval_choices), "gold": int(gold),
            "doc_index": index, "raw": raw_json(row)}


# -- prompt functions (lighteval / ProX tasks.py) ---------------------------------------------------------------------

def arc(row: dict[str, Any], i: int) -> dict[str, Any]:
    texts, gold = choice_texts_and_gold(row)
    return _doc(f"Question: {row['question']}\nAnswer:", [" " + t for t in texts], gold, i, row)


def commonsense_qa(row: dict[str, Any], i: int) -> dict[str, Any]:
    gold = LETTERS.index(str(row["answerKey"]).strip())
    return _doc(row["question"], [" " + t for t in row["choices"]["text"]], gold, i, row)


def hellaswag(row: dict[str, Any], i: int) -> dict[str, Any]:
    # ProX's lighteval hellaswag_prompt: the text is not stripped (see common.hellaswag_preprocess)
    ctx = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()} "
    return _doc(hellaswag_preprocess(ctx, strip=False),
                [" " + hellaswag_preprocess(e, strip=False) for e in row["endings"]], int(row["label"]), i, row)


def mmlu(row: dict[str, Any], i: int) -> dict[str, Any]:
    topic = row["subject"].replace("_", " ")
    query = f"The following are questions about {topic}.\nQuestion: {row['question']}\nAnswer:"
    return _doc(query, [" " + str(c) for c in row["choices"]], int(row["answer"]), i, row)


def openbookqa(row: dict[str, Any], i: int) -> dict[str, Any]:
    query = row.get("question_stem", row.get("question"))
    if isinstance(row["choices"], dict):
        texts, gold = list(row["choices"]["text"]), "ABCDE".index(str(row["answerKey"]).strip())
    else:
        texts, gold = list(row["choices"]), int(row["gold"])
    return _doc(query, [" " + t for t in texts], gold, i, row)


def piqa(row: dict[str, Any], i: int) -> dict[str, Any]:
    return _doc(f"Question: {row['goal']}\nAnswer:", [" " + row["sol1"], " " + row["sol2"]], int(row["label"]), i, row)


def siqa(row: dict[str, Any], i: int) -> dict[str, Any]:
    choices = [" " + row["answerA"], " " + row["answerB"], " " + row["answerC"]]
    return _doc(f"{row['context']} {row['question']}", choices, int(row["label"]) - 1, i, row)


def winogrande(row: dict[str, Any], i: int) -> dict[str, Any]:
    prefix, suffix = row["sentence"].split("_", 1)
    suffix = suffix.strip()
    choices = [f"{row['option1']} {suffix}", f"{row['option2']} {suffix}"]
    return _doc(prefix, choices, int(row["answer"]) - 1, i, row, delimiter="")


def sciq(row: dict[str, Any], i: int) -> dict[str, Any]:
    query = f"{row['support']}\nQuestion: {row['question']}\nAnswer:".strip()
    choices = [" " + row["distractor1"], " " + row["distractor2"], " " + row["distractor3"], " " + row["correct_answer"]]
    return _doc(query, choices, 3, i, row)


BUILDERS = {"arc": arc, "commonsense_qa": commonsense_qa, "hellaswag": hellaswag, "mmlu": mmlu,
            "openbookqa": openbookqa, "piqa": piqa, "siqa": siqa, "winogrande": winogrande, "sciq": sciq}


def load_dataset(**kwargs: Any):
    """lm-eval ``custom_dataset`` entry point of every general-suite task (see ``proxlab.evaluate.tasks.data``)."""
    return build_dataset(BUILDERS, **kwargs)


# -- scoring -----------------------------------------------------------------------------------------------------------

def norm_length(choice: str) -> int:
    """lighteval ``acc_norm`` (nospace) length: code points, minus one if the string starts with a space."""
    return len(choice) - 1 if choice.startswith(" ") else len(choice)


def score_choices(lls: list[float], lighteval_choices: list[str], gold: int) -> dict[str, float]:
    lls_arr = np.asarray(lls, dtype=np.float64)
    lens = np.asarray([max(norm_length(c), 1) for c in lighteval_choices], dtype=np.float64)
    return {"acc": float(int(np.argmax(lls_arr)) == gold), "acc_norm": float(int(np.argmax(lls_arr / lens)) == gold)}


def process_results(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float]:
    lls = [r[0] for r in results]
    if len(lls) != len(doc["lighteval_choices"]):
        raise ValueError(f"{len(lls)} log-likelihoods for {len(doc['lighteval_choices'])} choices")
    return score_choices(lls, doc["lighteval_choices"], int(doc["gold"]))
