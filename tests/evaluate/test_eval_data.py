"""Eval data as the paper used it: every results file records per task the file, split, items and sample it scored;
tasks on other data than the paper's say how; eval.task_files points a task at another file (a missing one fails
before any evaluation, naming the task, the key and the path); a paper-table experiment skips no task unless forced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from proxlab.core.config import ConfigError, EvalConfig
from proxlab.core.stage import StageSpec, run_stage
from proxlab.evaluate.runner import data_records
from proxlab.evaluate.stage import main
from proxlab.evaluate.tasks.data import MissingTaskData, lighteval_subset, read_jsonl, resolve_data_dir
from proxlab.evaluate.tasks.splits import PAPER, file_facts
from proxlab.evaluate.tasks.suites import get_suite, resolve_tasks

torch.set_num_threads(1)
DATA_DIR = resolve_data_dir()


def spec_for(tmp_path: Path, checkpoint: Path, data_dir: Path | None = None, **cfg) -> StageSpec:
    config = {"suite": "tiny_mc", "tasks": ["sciq", "arc_easy"], "limit": 3, "batch_size": 4, **cfg}
    runtime = {"data_dir": str(data_dir)} if data_dir else {}
    return StageSpec(stage="evaluate", key="d" * 16, out_dir=str(tmp_path / "artifact"), config=config,
                     inputs={"checkpoint": str(checkpoint)}, run_dir=str(tmp_path / "run"), experiment="t",
                     logger={"mode": "disabled"}, runtime=runtime)


def scored_raw(out: Path, lm_task: str) -> list[dict]:
    return [json.loads(json.loads(line)["raw"]) for line in
            (out / "samples" / "final" / f"{lm_task}.jsonl").read_text().splitlines()]


def test_results_record_file_split_and_sample_per_task(tiny_artifact, tmp_path):
    spec = spec_for(tmp_path, tiny_artifact)
    run_stage(main, spec)
    res = json.loads((spec.out / "results.json").read_text())
    sciq, arc = res["data"]["sciq"], res["data"]["arc_easy"]
    assert (sciq["file"], sciq["split"], sciq["n_file"], sciq["n_split"], sciq["n"]) == \
        ("eval/sciq_validation.jsonl", "validation", 805, 1000, 3)
    assert (arc["file"], arc["split"], arc["n_file"], arc["n"]) == ("eval/arc_easy_test.jsonl", "test", 1919, 3)
    assert sciq["limit"] == 3 and sciq["shuffle_seed"] == 42 and sciq["max_samples"] == 1000
    assert sciq["sample"] == "lighteval's seed-42 shuffle, first 1000, then the first 3"
    assert sciq["num_fewshot"] == 0 and sciq["fewshot"] is None and sciq["override"] is None
    # the paper scored SciQ's test split; ARC-E's test split is the paper's
    assert sciq["paper"]["split"] == "test" and sciq["substitute"] == ["validation split (paper: test)"]
    assert arc["substitute"] == []
    assert sciq["note"].startswith("eval/sciq_validation.jsonl [validation, 805 of 1000 items]; scored 3:")
    # the record tells the truth: the scored docs are the first 3 of the seed-42 shuffle of that file
    rows = read_jsonl(DATA_DIR / "eval" / "sciq_validation.jsonl")
    assert sorted(json.dumps(r, sort_keys=True) for r in scored_raw(spec.out, "general_sciq")) == \
        sorted(json.dumps(r, sort_keys=True) for r in lighteval_subset(rows, 1000)[:3])
    assert res["task_files"] == {} and res["force_skip"] is False and res["on_missing_task"] == "error"


def test_task_files_point_a_task_at_another_file(tiny_artifact, tmp_path):
    """eval.task_files={sciq: eval/sciq_test.jsonl}: the task scores that file, and the record says so (split from the
    file name, so no substitute footnote)."""
    data = tmp_path / "data"
    (data / "eval").mkdir(parents=True)
    rows = read_jsonl(DATA_DIR / "eval" / "sciq_validation.jsonl")[100:106]
    (data / "eval" / "sciq_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy2(DATA_DIR / "eval" / "arc_easy_test.jsonl", data / "eval" / "arc_easy_test.jsonl")
    spec = spec_for(tmp_path, tiny_artifact, data, task_files={"sciq": "eval/sciq_test.jsonl"})
    run_stage(main, spec)
    res = json.loads((spec.out / "results.json").read_text())
    sciq = res["data"]["sciq"]
    assert (sciq["file"], sciq["split"], sciq["split_from"], sciq["n_file"], sciq["n"]) == \
        ("eval/sciq_test.jsonl", "test", "file name", 6, 3)
    assert sciq["override"] == "eval.task_files.sciq" and sciq["substitute"] == []
    assert res["task_files"] == {"sciq": "eval/sciq_test.jsonl"} and res["tasks"]["sciq"]["n"] == 3
    assert sorted(json.dumps(r, sort_keys=True) for r in scored_raw(spec.out, "general_sciq")) == \
        sorted(json.dumps(r, sort_keys=True) for r in lighteval_subset(rows, 1000)[:3])


def test_missing_task_file_fails_before_any_evaluation(tmp_path):
    """The data check comes before the checkpoint is even looked at (this one does not exist)."""
    for on_missing in ("error", "skip"):  # an explicit file is never skipped
        spec = spec_for(tmp_path, tmp_path / "no_checkpoint", on_missing_task=on_missing,
                        task_files={"sciq": "eval/sciq_test.jsonl"})
        with pytest.raises(MissingTaskData) as err:
            main(spec)
        msg = str(err.value)
        assert "eval.task_files.sciq" in msg and "task 'sciq'" in msg
        assert str(DATA_DIR / "eval" / "sciq_test.jsonl") in msg
        assert not (spec.out / "results.json").exists()
    spec = spec_for(tmp_path, tmp_path / "no_checkpoint", task_files={"scik": "eval/sciq_validation.jsonl"})
    with pytest.raises(KeyError, match="eval.task_files.scik"):
        main(spec)


def test_the_tasks_that_run_on_other_data_than_the_papers():
    """With the shared data folder: SciQ runs on validation (paper: test) in both lighteval and lm-eval suites; TabMWP
    on PromptPG's test1k (paper: the harness's seed-0 sample); lm-eval 2-shot exemplars come from validation (paper:
    train). Everything else is the paper's split (less the held-out ~20%)."""
    def substitutes(suite: str, num_fewshot=None) -> dict[str, list[str]]:
        s = get_suite(suite)
        tasks = [t for t in resolve_tasks(s, None) if t.name != "logiqa"]  # no LogiQA file
        cfg = EvalConfig(suite=suite, tasks=[], limit=None, num_fewshot=num_fewshot)
        recs = data_records(s, tasks, cfg, DATA_DIR, {t.name: {"n": 1} for t in tasks})
        assert all(r["split_from"] == "shared data (SOURCES.md)" for r in recs.values())
        return {k: r["substitute"] for k, r in recs.items() if r["substitute"]}

    assert substitutes("general") == {"sciq": ["validation split (paper: test)"]}
    assert substitutes("tiny_mc") == {"sciq": ["validation split (paper: test)"]}
    assert substitutes("selection") == {"sciq": ["validation split (paper: test)"]}
    two_shot = substitutes("selection", 2)
    assert set(two_shot) == {"arc_challenge", "arc_easy", "hellaswag", "openbookqa", "piqa", "winogrande", "sciq"}
    assert two_shot["arc_easy"] == ["2-shot exemplars from validation (paper: train)"]
    math = substitutes("math")
    assert list(math) == ["tabmwp"] and "PromptPG's test1k" in math["tabmwp"][0]
    assert "seed-0" in math["tabmwp"][0]
    # every task of every suite has the paper's data stated
    for suite, protocol in (("general", "general"), ("selection", "selection"), ("math", "math")):
        assert set(PAPER[protocol]) == set(get_suite(suite).tasks)
    assert file_facts("eval/sciq_test.jsonl")[1:] == ("test", "file name")
    assert file_facts("mine/sciq.jsonl")[1] == "unknown"


# -- compose time ----------------------------------------------------------------------------------------------------

def test_validate_refuses_skip_for_a_paper_table_unless_forced():
    from proxlab.runner.compose import compose_config
    from proxlab.runner.validate import validate

    with pytest.raises(ConfigError) as err:
        validate(compose_config(["exp=table2", "eval.on_missing_task=skip"]))
    msg = str(err.value)
    assert err.value.key == "eval.on_missing_task"
    assert "paper_table='table2'" in msg and "eval.force_skip=true" in msg and "eval.task_files" in msg
    exp = validate(compose_config(["exp=table2", "eval.on_missing_task=skip", "eval.force_skip=true"]))
    assert exp.eval.on_missing_task == "skip" and exp.eval.force_skip is True
    # not a paper-table experiment: skipping needs no force
    assert validate(compose_config(["exp=smoke", "paper_table=null", "eval.on_missing_task=skip"])).paper_table is None


def test_validate_checks_task_files_at_compose_time():
    from proxlab.runner.compose import compose_config
    from proxlab.runner.validate import validate

    with pytest.raises(ConfigError) as err:
        validate(compose_config(["exp=smoke", "+eval.task_files.sciq=eval/sciq_test.jsonl"]))
    assert err.value.key == "eval.task_files.sciq" and "task 'sciq'" in str(err.value)
    assert str(DATA_DIR / "eval" / "sciq_test.jsonl") in str(err.value)
    with pytest.raises(ConfigError, match="eval.task_files.gsm8k"):  # not a task of tiny_mc
        validate(compose_config(["exp=smoke", "+eval.task_files.gsm8k=math_eval/gsm8k_test.jsonl"]))
    exp = validate(compose_config(["exp=smoke", "+eval.task_files.sciq=eval/sciq_validation.jsonl"]))
    assert exp.eval.task_files == {"sciq": "eval/sciq_validation.jsonl"}


def test_task_files_and_force_skip_change_the_evaluate_key():
    from proxlab.core.paths import REPO_ROOT
    from proxlab.runner.compose import compose_config
    from proxlab.runner.graph import plan

    def key(*overrides):
        return {s.name: s.key for s in plan(compose_config(["exp=smoke", *overrides]), REPO_ROOT / "artifacts")}

    base = key()
    other = key("+eval.task_files.sciq=eval/sciq_validation.jsonl")
    assert other["evaluate"] != base["evaluate"] and other["pretrain"] == base["pretrain"]
    assert key("eval.force_skip=true")["evaluate"] != base["evaluate"]
