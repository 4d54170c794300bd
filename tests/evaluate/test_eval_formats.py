"""Prompt formats, sampling and acc_norm of the general / selection suites against reference eval-prompts.md, plus
the shipped task YAMLs and conf/eval files. No model needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proxlab.evaluate.tasks import general_docs as g
from proxlab.evaluate.tasks import selection_docs as sel
from proxlab.evaluate.tasks.data import MissingTaskData, lighteval_subset, read_jsonl, resolve_data_dir
from proxlab.evaluate.tasks.suites import (SUITES, TASKS_DIR, check_data, generated_yamls, get_suite, resolve_tasks)

DATA_DIR = resolve_data_dir()

REPO = Path(__file__).resolve().parents[2]


def first(name: str) -> dict:
    return read_jsonl(DATA_DIR / "eval" / f"{name}.jsonl")[0]


def test_lighteval_shuffle_check_values():
    # eval-prompts.md A.4: first five positions of the seed-42 shuffle
    assert lighteval_subset(list(range(1172)), 1000)[:5] == [595, 716, 511, 906, 148]
    assert lighteval_subset(list(range(1267)), 1000)[:5] == [187, 719, 618, 35, 404]
    assert lighteval_subset(list(range(10042)), 1000)[:5] == [9792, 1027, 5366, 615, 5402]
    assert len(lighteval_subset(list(range(1172)), 1000)) == 1000
    assert len(lighteval_subset(list(range(500)), 1000)) == 500


def test_hellaswag_general_format():
    d = g.hellaswag(first("hellaswag_validation"), 0)
    assert d["query"] == "Roof shingle removal: A man is sitting on a roof. He "
    assert d["lighteval_choices"][0] == " is using wrap to wrap a pair of skis."
    assert d["choices"][0] == "is using wrap to wrap a pair of skis."
    assert d["gold"] == 3
    # capitalize() lower-cases the rest of ctx_b; preprocessing is not stripped
    row = {"activity_label": "Tips", "ctx_a": "Do it.", "ctx_b": "then SEE [title] Here", "endings": ["[step] a"] * 4,
           "label": "0"}
    d = g.hellaswag(row, 0)
    assert d["query"] == "Tips: Do it. Then see. here "
    assert d["lighteval_choices"][0] == "  a"  # " " + preprocess("[step] a") keeps the inner leading space


def test_mmlu_cloze_format():
    d = g.mmlu(read_jsonl(DATA_DIR / "eval" / "mmlu_test.jsonl")[0], 0)
    assert d["query"] == ("The following are questions about abstract algebra.\nQuestion: Find the degree for the given "
                          "field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nAnswer:")
    assert d["lighteval_choices"] == [" 0", " 4", " 2", " 6"] and d["gold"] == 1


def test_winogrande_general_format():
    d = g.winogrande(first("winogrande_xl_validation"), 0)
    assert d["query"] == "Sarah was a much better surgeon than Maria so "
    assert d["choices"] == ["Sarah always got the easier cases.", "Maria always got the easier cases."]
    assert d["lighteval_choices"] == d["choices"] and d["gold"] == 1


def test_other_general_formats():
    arc = g.arc(first("arc_easy_test"), 0)
    assert arc["query"].startswith("Question: Which statement best explains") and arc["query"].endswith("\nAnswer:")
    assert arc["gold"] == 0 and arc["lighteval_choices"][0] == " Sunlight is the source of energy for nearly all ecosystems."
    arcv = g.arc(first("arc_easy_validation"), 0)  # HF layout: gold from answerKey/labels
    assert arcv["gold"] == 0
    csqa = g.commonsense_qa(first("commonsenseqa_validation"), 0)
    assert csqa["query"] == "What do people aim to do at work?" and csqa["gold"] == 0
    obqa = g.openbookqa(first("openbookqa_validation"), 0)
    assert obqa["query"].startswith("Frilled sharks") and obqa["gold"] == 0 and len(obqa["choices"]) == 4
    piqa = g.piqa(first("piqa_validation"), 0)
    assert piqa["query"] == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    siqa = g.siqa(first("siqa_validation"), 0)
    assert siqa["query"].endswith("Sydney felt bad afterwards. How would you describe Sydney?")
    assert siqa["gold"] == 0 and siqa["lighteval_choices"][0] == " sympathetic"
    sciq = g.sciq(first("sciq_validation"), 0)  # empty support: the leading newline is stripped
    assert sciq["query"] == "Question: Who proposed the theory of evolution by natural selection?\nAnswer:"
    assert sciq["gold"] == 3 and sciq["choices"][3] == "darwin"
    sciq2 = g.sciq({"support": "S.", "question": "Q?", "distractor1": "a", "distractor2": "b", "distractor3": "c",
                    "correct_answer": "d"}, 0)
    assert sciq2["query"] == "S.\nQuestion: Q?\nAnswer:"


def test_acc_norm_is_lighteval_nospace():
    # characters, not bytes; the leading space is not counted; ties go to the first index
    assert g.norm_length(" héllo") == 5 and g.norm_length("héllo") == 5 and g.norm_length("  x") == 2
    # ll/len: -10/5=-2.0 vs -9/3=-3.0 -> choice 0; byte lengths (7 vs 3) would pick choice 1 (-1.43 vs -3)
    s = g.score_choices([-10.0, -9.0], [" ééééé", " abc"], gold=0)
    assert s == {"acc": 0.0, "acc_norm": 1.0}
    assert g.score_choices([-4.0, -4.0], [" ab", " cd"], gold=0) == {"acc": 1.0, "acc_norm": 1.0}


def test_selection_formats_follow_lm_eval():
    hs = sel.hellaswag(first("hellaswag_validation"), 0)
    assert hs["query"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert hs["choices"][0] == "is using wrap to wrap a pair of skis."
    wg = sel.winogrande(first("winogrande_xl_validation"), 0)
    assert wg["query"] == 1 and wg["choices"] == ["Sarah was a much better surgeon than Maria so Sarah",
                                                 "Sarah was a much better surgeon than Maria so Maria"]
    assert wg["suffix"] == "always got the easier cases."
    sq = sel.sciq(first("sciq_validation"), 0)
    assert sq["query"] == "\nQuestion: Who proposed the theory of evolution by natural selection?\nAnswer:"
    lq = sel.logiqa({"context": "C.", "question": "Q?", "options": ["w", "x", "y", "z"], "label": "b"}, 0)
    assert lq["query"] == "Passage: C.\nQuestion: Q?\nChoices:\nA. w\nB. x\nC. y\nD. z\nAnswer:" and lq["gold"] == 1


def test_task_yamls_in_sync_with_generator():
    gen = generated_yamls()
    on_disk = {str(p.relative_to(TASKS_DIR)): p.read_text() for p in TASKS_DIR.rglob("*.yaml")}
    assert on_disk == gen, "run `python -m proxlab.evaluate.tasks.suites` to regenerate the task YAMLs"
    assert sum(1 for k in gen if k.startswith("general/general_mmlu_")) == 57


def test_suites_and_missing_data(tmp_path):
    general = get_suite("general")
    assert list(general.tasks) == ["arc_challenge", "arc_easy", "commonsense_qa", "hellaswag", "mmlu", "openbookqa",
                                   "piqa", "siqa", "winogrande", "sciq"]
    assert len(general.tasks["mmlu"].lm_tasks) == 57
    assert {t.metric for t in get_suite("math").tasks.values()} == {"acc"}
    assert get_suite("selection").tasks["winogrande"].metric == "acc"
    sel_suite = get_suite("selection")
    tasks = resolve_tasks(sel_suite, None)
    with pytest.raises(MissingTaskData, match="logiqa"):
        check_data(sel_suite, tasks, DATA_DIR, "error")
    keep, skipped = check_data(sel_suite, tasks, DATA_DIR, "skip")
    assert "logiqa" in skipped and len(keep) == 7
    with pytest.raises(KeyError):
        resolve_tasks(general, ["nope"])
    # every other task of every suite has its data in the shared folder
    for suite in SUITES.values():
        keep, skipped = check_data(suite, resolve_tasks(suite, None), DATA_DIR, "skip")
        assert set(skipped) <= {"logiqa"}


def test_conf_eval_files_compose():
    """Every conf/eval group file composes against the EvalConfig schema and names real suite tasks."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from proxlab.runner.compose import register_schemas

    register_schemas()
    names = sorted(p.stem for p in (REPO / "conf" / "eval").glob("*.yaml"))
    assert {"tiny_mc", "general", "selection", "selection_2shot", "math"} <= set(names)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for name in names:
            cfg = OmegaConf.to_container(compose("config", overrides=[f"eval={name}"]).eval)
            suite = get_suite(cfg["suite"])
            assert [t.name for t in resolve_tasks(suite, cfg["tasks"])] == (cfg["tasks"] or list(suite.tasks))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        assert compose("config", overrides=["eval=general"]).eval.tasks[4] == "mmlu"


def test_hellaswag_preprocess_one_function_two_formats():
    """Both suites clean HellaSwag text with common.hellaswag_preprocess; only ``strip`` differs (lighteval as ProX ran
    it for the general suite, lm-eval's utils.py for the selection suite)."""
    from proxlab.evaluate.tasks.common import hellaswag_preprocess

    text = " Tips: Do it. [title] Then see [step] here  "
    assert hellaswag_preprocess(text, strip=False) == " Tips: Do it.. Then see here "
    assert hellaswag_preprocess(text, strip=True) == "Tips: Do it.. Then see here"
    row = first("hellaswag_validation")
    assert g.hellaswag(row, 0)["choices"] == [hellaswag_preprocess(e, strip=False) for e in row["endings"]]
    assert sel.hellaswag(row, 0)["choices"] == [hellaswag_preprocess(e, strip=True) for e in row["endings"]]


def test_eval_config_defaults_come_from_the_schema():
    from proxlab.core.config import EvalConfig
    from proxlab.evaluate.runner import eval_config

    cfg = eval_config({"suite": "math", "tasks": []})
    assert cfg == EvalConfig(suite="math", tasks=[])  # every omitted key takes EvalConfig's default
    assert eval_config(cfg) is cfg and eval_config(None) == EvalConfig()
    with pytest.raises(KeyError, match="hf_impl"):  # not an eval setting: a parameter of make_lm / evaluate_model
        eval_config({"suite": "general", "hf_impl": "hflm"})
