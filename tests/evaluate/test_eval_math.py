"""Math suite: question building, answer extraction and scoring of the math-evaluation-harness.

Must-show 3: for every math task, the gold solutions fed back as predictions score 100%, and wrong answers score 0.
"""

from __future__ import annotations

import functools
import json

import pytest

from proxlab.evaluate.tasks import math_docs as mt
from proxlab.evaluate.tasks.data import read_jsonl, resolve_data_dir
from proxlab.evaluate.tasks.math_grader import extract_answer, math_equal, math_equal_timeout, strip_string
from proxlab.evaluate.tasks.suites import MATH

DATA_DIR = resolve_data_dir()
TASKS = list(MATH)


@functools.lru_cache(maxsize=None)
def _docs(task: str) -> tuple:
    rows = read_jsonl(DATA_DIR / MATH[task][0])
    return tuple(mt.BUILDERS[task](r, i) for i, r in enumerate(rows))


def docs(task: str) -> list[dict]:
    return [dict(d) for d in _docs(task)]


def gold_generations(task: str, doc: dict) -> list[str]:
    """The gold answer written the way the task's exemplars write theirs (plus the reference solution if any)."""
    raw = json.loads(doc["raw"])
    if task in ("mathqa", "mmlu_stem", "sat_math"):
        return [f"Let's think. Some reasoning.\nFinal Answer: The final answer is ({doc['answer']})."]
    if task == "math":
        return [raw["solution"],
                f"Some reasoning.\nFinal Answer: The final answer is ${doc['answer']}$. I hope it is correct."]
    gens = [f"Some reasoning with 3 numbers 12 and 7. The answer is {doc['answer']}."]
    if task == "gsm8k":
        gens.append(raw["answer"])  # the reference chain of thought, ending "#### N": scored by the last number
    return gens


@pytest.mark.parametrize("task", TASKS)
def test_gold_solutions_score_100(task):
    ds = docs(task)
    assert len(ds) > 20
    for form in range(len(gold_generations(task, ds[0]))):
        scores = [mt.score_generation(gold_generations(task, d)[form], d)[1] for d in ds]
        wrong = [(d["doc_index"], d["gt"]) for d, s in zip(ds, scores) if not s]
        assert not wrong, f"{task} form {form}: {len(wrong)}/{len(ds)} gold answers scored wrong, e.g. {wrong[:5]}"
    # and through the lm-eval process_results hook
    assert mt.process_results(ds[0], [gold_generations(task, ds[0])[0]]) == {"acc": 1.0}


@pytest.mark.parametrize("task", TASKS)
def test_wrong_answers_score_0(task):
    ds = docs(task)[:40]
    for d in ds:
        if task in ("mathqa", "mmlu_stem", "sat_math"):
            letter = "B" if d["gt"] == "A" else "A"
            gen = f"Reasoning.\nFinal Answer: The final answer is ({letter})."
        elif task == "math":
            gen = "Reasoning.\nFinal Answer: The final answer is $987654.321$. I hope it is correct."
        else:
            gen = "Reasoning. The answer is 987654.321."
        pred, ok = mt.score_generation(gen, d)
        assert not ok, (task, d["doc_index"], pred, d["gt"])
    assert mt.process_results(ds[0], ["I do not know."]) == {"acc": 0.0}
    assert mt.process_results(ds[0], [""]) == {"acc": 0.0}


def test_question_building_matches_reference():
    svamp = docs("svamp")[0]
    assert svamp["question"] == ("There are 87 oranges and 290 bananas in Philip's collection. If the bananas are "
                                 "organized into 2 groups and oranges are organized into 93 groups. How big is each "
                                 "group of bananas?")
    assert svamp["gt"] == "145" and svamp["prompt"] == f"Question: {svamp['question']}\nAnswer:"
    mathqa = docs("mathqa")[0]
    assert mathqa["question"] == ("If log 8 x + log 8 1 / 6 = 1 / 3 , then the value of x is :\nWhat of the following "
                                  "is the right choice? Explain your answer.\n(A) 12, (B) 16, (C) 18, (D) 24, (E) 26")
    assert mathqa["gt"] == "A" and mathqa["prompt"] == f"Problem:\n{mathqa['question']}\nSolution:"
    sat = docs("sat_math")[0]
    assert sat["question"].endswith("\n(A) $f(-6)=0$ (B) $f(6)=-6$ (C) $f(-6)=6$ (D) $f(0)=-6$")
    stem = docs("mmlu_stem")[0]
    assert stem["question"].endswith("answer.\n(A) telomeric sequences are removed from DNA, (B) a codon's nucleotide "
                                     "sequence changes so that it calls for production of a different amino acid "
                                     "than the original one, (C) a base pair is either inserted or deleted in a gene, "
                                     "(D) a codon's nucleotide sequence is changed so that instead of coding for a "
                                     "given amino acid it acts to terminate translation") and stem["gt"] == "C"
    assert docs("asdiv")[0]["gt"] == "9" and docs("gsm8k")[0]["gt"] == "3"
    m = docs("math")[0]
    assert m["gt"] == strip_string(extract_answer(json.loads(m["raw"])["solution"], "math"))
    assert m["gt"] == "(3,\\frac{\\pi}{2})"
    tab = docs("tabmwp")[0]
    assert tab["question"].startswith('Read the following table regarding "Coin collections" and answer a question:\n')
    assert tab["gt"] == "84"


def test_extraction_rules():
    assert extract_answer("so $\\boxed{\\frac{1}{2}}$ yes", "math") == "\\frac{1}{2}"
    assert extract_answer("The final answer is $5$. I hope it is correct.", "math") == "5"
    assert extract_answer("x. The answer is 1,234.", "gsm8k") == "1,234"
    assert extract_answer("we get 3 then 4.5 apples", "gsm8k") == "4.5"
    assert extract_answer("nothing here", "gsm8k") == ""
    assert extract_answer("The answer is (C).\n\nProblem: the answer is (A)", "mathqa") == "C"
    assert extract_answer("the choice is b", "sat_math") == "B"
    assert extract_answer("the answer is an integer", "mmlu_stem") == "A"  # the harness's quirk, kept
    assert extract_answer("no letter", "mathqa") == "placeholder"


def test_normalization_and_equality():
    assert strip_string("5.00") == "5" and strip_string(" 12 cm") == "12" and strip_string("two") == "2"
    assert strip_string("\\dfrac12") == "\\frac{1}{2}" and strip_string("1/2") == "\\frac{1}{2}"
    assert strip_string("10\\%") == "10" and strip_string("\\$3") == "3" and strip_string("x = 4") == "4"
    assert strip_string("5\\text{ inches}") == "5"
    assert math_equal("1,000", "1000") and math_equal("0.5", "50") and not math_equal("7", "8")
    assert math_equal("(1,2)", "(1, 2)") and math_equal("[2,5)", "[2,5)")
    assert math_equal_timeout("\\frac{1}{2}", "0.5") and math_equal_timeout("2\\sqrt{2}", "\\sqrt{8}")
    assert not math_equal_timeout("\\frac{1}{3}", "0.5")
