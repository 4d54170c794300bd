"""Checking a composed experiment before any stage runs: every value check of the schemas
(`proxlab.core.config.check_experiment`), plus those that need a stage package: the eval suite knows the tasks, the
files `eval.task_files` names exist, a paper-table experiment skips no task unless forced, a local refining model
exists. Each error names the key, so `proxlab run exp=smoke train.max_steps=-5` fails in a second
instead of after three stages."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from proxlab.core.config import (ConfigError, ExperimentConfig, check_experiment, check_finetune, check_sft_data,
                                 check_train, is_built_refiner, load)
from proxlab.core.logs import get_logger

LOCAL_MODEL_SCHEME = "proxlab:"  # proxlab.models.SCHEME
_log = get_logger("runner")


def typed(cfg: DictConfig) -> ExperimentConfig:
    """The composed config as the typed `ExperimentConfig` (without Hydra's own node)."""
    keys = [k for k in cfg if k != "hydra"]  # Hydra's own node may hold values only a running app resolves
    container = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    return load(ExperimentConfig, container, where="experiment")


def validate(cfg: DictConfig) -> ExperimentConfig:
    exp = typed(cfg)
    check_experiment(exp)
    check_eval_tasks(exp)
    if exp.refine.variant == "rules" or exp.refine.rules_first:
        check_rule_filters(exp)
    check_missing_task_rule(exp)
    check_task_files(exp)
    check_model_tokenizer(exp)
    for level in {"doc": ("doc",), "prox": ("doc", "chunk")}.get(exp.refine.variant, ()):
        check_refiner(f"refine.{level}", getattr(exp.refine, level))
        if is_built_refiner(getattr(exp.refine, level).model):
            check_built_refiner(exp, level)
    return exp


def check_built_refiner(exp: ExperimentConfig, level: str) -> None:
    """`refine.<level>.model=built[:<name>]` needs the `refiner` group (what to build), naming that refiner."""
    model = getattr(exp.refine, level).model
    if exp.refiner is None:
        raise ConfigError(f"refine.{level}.model", model, "builds a refiner, but the experiment has none to build: "
                          "select one with refiner=tiny|xs|s|m (conf/refiner/), or name a released or local refiner")
    name = model.partition(":")[2]
    if name and name != exp.refiner.name:
        raise ConfigError(f"refine.{level}.model", model, f"the experiment builds refiner {exp.refiner.name!r} "
                          f"(refiner.name), not {name!r}")
    if exp.refine.shard_rank is not None:
        raise ConfigError("refine.shard_rank", exp.refine.shard_rank,
                          f"a refine job array cannot build the refiner it uses (refine.{level}.model={model}): build "
                          f"it first, e.g. `proxlab run <same overrides> stop_after=refiner`, then submit the array")
    check_train(exp.refiner.base.train)
    check_sft_data(exp.refiner.sft_data)
    check_finetune(exp.refiner.finetune)


def check_model_tokenizer(exp: ExperimentConfig) -> None:
    """`model.tokenizer`: a pretrained one needs a path. Plan-time warnings, not errors, so that `proxlab plan` still
    costs the experiment: a tokenizer that is not here (prepare's pool measurement and the tokenizer stage will fail,
    saying where to get it), and a stand-in for the paper's tokenizer of the preset (the report marks the rows)."""
    from proxlab.core.paths import tokenizer_candidates
    from proxlab.models.presets import tokenizer_standin
    from proxlab.pretrain.tokenizer import missing_pretrained

    tok = exp.model.tokenizer
    if tok.kind == "pretrained":
        if not tok.path:
            raise ConfigError("model.tokenizer.path", tok.path, "model.tokenizer.kind=pretrained needs a directory or "
                                                                "a name under <data_dir>/tokenizers (e.g. llama_hf)")
        try:
            found, candidates = tokenizer_candidates(tok.path, exp.paths.data_dir)
        except FileNotFoundError as e:  # no data directory: the check that needs it says so
            found, candidates = None, []
            _log.warning(f"model.tokenizer.path={tok.path!r}: not checked ({e})")
        if found is None and candidates:
            _log.warning(f"{missing_pretrained(tok.path, candidates)}. Without it the run stops at prepare's token "
                         f"measurement (corpus.tokenizer) or the tokenizer stage")
    standin = tokenizer_standin(exp.model.preset, tok.kind, tok.path)
    if standin:
        key, value = ("path", tok.path) if tok.kind == "pretrained" else ("kind", tok.kind)
        _log.warning(f"model.tokenizer.{key}={value!r} on {exp.model.preset}: {standin}; the report marks these runs' "
                     f"rows")


def check_eval_tasks(exp: ExperimentConfig) -> None:
    from proxlab.evaluate.tasks.suites import SUITES

    suite = SUITES.get(exp.eval.suite)
    if suite is None:
        raise ConfigError("eval.suite", exp.eval.suite, f"expected one of {sorted(SUITES)}")
    unknown = [t for t in exp.eval.tasks if t not in suite.tasks]
    if unknown:
        raise ConfigError("eval.tasks", list(exp.eval.tasks),
                          f"suite {suite.name!r} has no task(s) {unknown}; it has {sorted(suite.tasks)}")
    unknown = sorted(set(exp.eval.task_limits) - set(suite.tasks))
    if unknown:
        raise ConfigError("eval.task_limits", dict(exp.eval.task_limits), f"unknown task(s) {unknown}")
    unknown = sorted(set(exp.eval.task_files) - set(suite.tasks))
    if unknown:
        raise ConfigError(f"eval.task_files.{unknown[0]}", exp.eval.task_files[unknown[0]],
                          f"suite {suite.name!r} has no task(s) {unknown}; it has {sorted(suite.tasks)}")
    scored = [t for t in (exp.eval.tasks or suite.tasks) if suite.tasks[t].kind != "gen"]
    if exp.eval.generation_backend == "vllm" and scored:
        raise ConfigError("eval.generation_backend", "vllm",
                          f"vLLM only generates, and suite {suite.name!r} scores {scored} by log-likelihood: use "
                          f"generation_backend=litgpt (or eval=math, whose tasks all generate)")


def check_missing_task_rule(exp: ExperimentConfig) -> None:
    """An experiment that reproduces a paper table may not quietly drop a column: `eval.on_missing_task=skip` needs
    `eval.force_skip=true` there (the table then shows the task as "skipped", with a footnote)."""
    if exp.paper_table and exp.eval.on_missing_task == "skip" and not exp.eval.force_skip:
        raise ConfigError("eval.on_missing_task", exp.eval.on_missing_task,
                          f"refused for a paper-table experiment (paper_table={exp.paper_table!r}): a skipped task "
                          f"leaves a hole in the paper's table. Provide the data (eval.task_files.<task>=<file>), "
                          f"drop the task from eval.tasks, or set eval.force_skip=true to skip it anyway (its cell "
                          f"then reads 'skipped', with a footnote)")


def check_task_files(exp: ExperimentConfig) -> None:
    """`eval.task_files`: each key a task of the suite (check_eval_tasks), each file present under the data
    directory; the error names the task, the key and the path."""
    if not exp.eval.task_files:
        return
    from proxlab.core.paths import data_dir

    try:
        root = data_dir(exp.paths.data_dir)
    except FileNotFoundError as e:
        raise ConfigError("eval.task_files", dict(exp.eval.task_files), str(e)) from e
    for task, rel in exp.eval.task_files.items():
        path = root / rel
        if not path.is_file():
            raise ConfigError(f"eval.task_files.{task}", rel, f"task {task!r}: no such file {path} (data dir {root}; "
                                                              f"paths are relative to it)")


def check_rule_filters(exp: ExperimentConfig) -> None:
    from proxlab.refine.rules import filter_steps

    try:
        filter_steps(list(exp.refine.rules.filters))
    except ValueError as e:
        raise ConfigError("refine.rules.filters", list(exp.refine.rules.filters), str(e).split(": ", 1)[1]) from None


def check_refiner(where: str, gen) -> None:
    """A refiner given as a local path must exist; a `proxlab:` model must be one proxlab builds; anything else is a
    Hugging Face id, resolved by the backend (from the local HF cache when offline)."""
    from proxlab.models import LOCAL_MODELS

    for key in ("model", "tokenizer"):
        name = getattr(gen, key)
        if not name or (key == "model" and is_built_refiner(name)):
            continue
        if name.startswith(LOCAL_MODEL_SCHEME):
            if name[len(LOCAL_MODEL_SCHEME):] not in LOCAL_MODELS:
                raise ConfigError(f"{where}.{key}", name,
                                  f"proxlab builds {sorted(LOCAL_MODEL_SCHEME + m for m in LOCAL_MODELS)}")
            continue
        path = Path(name).expanduser()
        looks_local = path.is_absolute() or name.startswith((".", "~")) or len(path.parts) > 2
        if looks_local and not path.exists():
            raise ConfigError(f"{where}.{key}", name, "no such directory (a local refiner must exist; an HF id is "
                                                     "'org/name')")
