"""The stage graph of one experiment: which stages, in which order, with which inputs, under which content keys.

A stage's key is a hash of its code version, the part of the config that changes its output, and its inputs' keys —
never paths or times — so two experiments that share upstream work (two model sizes on one variant) share artifacts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from proxlab.core.config import (ApplyConfig, CorpusConfig, EvalConfig, GenerateConfig, ModelConfig, RulesConfig,
                                 TokenizerConfig, TrainConfig, resolve_refine_dtype, split_settings)


@dataclass(frozen=True)
class StageDef:
    module: str  # run as `python -m <module> --spec spec.json`
    version: int  # bump when the stage's output semantics change: it invalidates old artifacts
    env: str = "main"  # which interpreter (cluster.envs) runs it
    spmd: bool = False  # under Slurm: every rank runs it (sharded work, Fabric); else rank 0 runs it, others wait
    # Its processes pick their GPU themselves (Fabric: cuda:<local rank>), so they see every GPU of their node; every
    # other stage's process sees only its task's own (proxlab.core.devices).
    fabric: bool = False


# The registry: the one place that names every stage's module, version and environment.
STAGES: dict[str, StageDef] = {
    "prepare": StageDef("proxlab.refine.prepare", 2, spmd=True),  # sharded by input file
    "refine.rules": StageDef("proxlab.refine.rules", 2, spmd=True),
    "refine.generate_doc": StageDef("proxlab.refine.generate", 1, spmd=True),
    "refine.apply_doc": StageDef("proxlab.refine.apply", 1, spmd=True),
    "refine.generate_chunk": StageDef("proxlab.refine.generate", 1, spmd=True),
    "refine.apply_chunk": StageDef("proxlab.refine.apply", 1, spmd=True),
    "tokenizer": StageDef("proxlab.pretrain.tokenizer", 1),
    "tokenize": StageDef("proxlab.pretrain.tokenize", 1),
    "pretrain": StageDef("proxlab.pretrain.train", 1, spmd=True, fabric=True),
    "evaluate": StageDef("proxlab.evaluate.stage", 2, spmd=True),  # 2: results record each task's data (file, split)
}

VARIANTS = ("raw", "rules", "doc", "prox")


@dataclass
class PlannedStage:
    name: str
    definition: StageDef
    config: dict[str, Any]
    inputs: dict[str, "PlannedStage"] = field(default_factory=dict)
    # Settings the stage reads but that never change its artifact: passed in spec.runtime, never hashed.
    runtime: dict[str, Any] = field(default_factory=dict)
    # What it reads from outside the artifact store (files' identity, hub ids): part of its key (sources()).
    sources: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    out_dir: Path = Path()

    @property
    def env(self) -> str:
        return self.config.get("env", self.definition.env)  # generate stages name theirs: main or vllm


def content_key(stage: str, version: int, config: dict[str, Any], input_keys: dict[str, str],
                sources: dict[str, Any] | None = None) -> str:
    body = {"stage": stage, "version": version, "config": config, "inputs": input_keys}
    if sources:  # absent rather than empty, so stages that read nothing from outside keep their keys
        body["sources"] = sources
    payload = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _settings(cfg: DictConfig, path: str, schema: type,
              level: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hashed, runtime) settings of a config section, as its schema's fields declare them (proxlab.core.config)."""
    return split_settings(schema, OmegaConf.to_container(OmegaConf.select(cfg, path), resolve=True), level)


def plan(cfg: DictConfig, artifacts_dir: Path) -> list[PlannedStage]:
    """The ordered stages of the experiment `cfg` describes, each with its key and artifact directory."""
    variant = cfg.refine.variant
    if variant not in VARIANTS:
        raise ValueError(f"refine.variant={variant!r} is not one of {VARIANTS}")
    stages: list[PlannedStage] = []

    def add(name: str, config: dict[str, Any], runtime: dict[str, Any] | None = None,
            **inputs: PlannedStage) -> PlannedStage:
        st = PlannedStage(name, STAGES[name], config, dict(inputs), dict(runtime or {}), external_sources(name, cfg))
        st.key = content_key(name, st.definition.version, config, {k: v.key for k, v in inputs.items()}, st.sources)
        st.out_dir = artifacts_dir / name / st.key
        stages.append(st)
        return st

    # Corpus: what is read is hashed, where it lies is not (`data_dir` travels in the spec's runtime instead).
    prepared = add("prepare", *_settings(cfg, "corpus", CorpusConfig))

    current = prepared
    if variant == "rules" or (variant in ("doc", "prox") and cfg.refine.rules_first):
        current = add("refine.rules", *_settings(cfg, "refine.rules", RulesConfig), docs=current)
    levels = {"doc": ("doc",), "prox": ("doc", "chunk")}.get(variant, ())
    for level in levels:
        gen_hashed, gen_runtime = _settings(cfg, f"refine.{level}", GenerateConfig)
        # The dtype that will run, not `auto`: other hardware → another effective dtype → another artifact.
        gen_hashed["dtype"] = resolve_refine_dtype(gen_hashed["dtype"], cfg.cluster.accelerator,
                                                   f"refine.{level}.dtype")
        programs = add(f"refine.generate_{level}", {"level": level, **gen_hashed}, gen_runtime, docs=current)
        apply_hashed, _ = _settings(cfg, "refine.apply", ApplyConfig, level)
        current = add(f"refine.apply_{level}", {"level": level, **apply_hashed}, docs=current, programs=programs)

    # The tokenizer is trained on the prepared (raw) corpus, so every variant of a sweep shares one vocabulary.
    tokenizer = add("tokenizer", *_settings(cfg, "model.tokenizer", TokenizerConfig), docs=prepared)
    # Tokenize promises the same bytes for any worker count: the count is a runtime setting.
    tokenized = add("tokenize", {"seq_len": cfg.train.seq_len, "val_fraction": cfg.train.val_fraction},
                    {"workers": cfg.train.tokenize_workers},
                    docs=current, tokenizer=tokenizer)
    model_hashed, _ = _settings(cfg, "model", ModelConfig)
    model_hashed.pop("tokenizer")  # the tokenizer stage's; pretrain gets its output
    train_hashed, train_runtime = _settings(cfg, "train", TrainConfig)
    pretrained = add("pretrain", {"model": model_hashed, "train": train_hashed}, train_runtime, data=tokenized,
                     tokenizer=tokenizer)
    add("evaluate", *_settings(cfg, "eval", EvalConfig), checkpoint=pretrained)

    if cfg.stop_after:
        # a stage name, or a prefix: stop_after=refine stops after the last refine.* stage
        names = [s.name for s in stages]
        hits = [i for i, n in enumerate(names) if n == cfg.stop_after or n.startswith(cfg.stop_after + ".")]
        if not hits:
            raise ValueError(f"stop_after={cfg.stop_after!r}: this experiment's stages are {names}")
        stages = stages[: hits[-1] + 1]
    return stages


def external_sources(stage: str, cfg: DictConfig) -> dict[str, Any]:
    """The identity of what `stage` reads from outside the artifact store (proxlab.core.paths.files_identity: resolved
    path, size and mtime of every file; a hub id with its revision), so that other data, or one edited file, re-keys
    the stage and everything after it instead of reusing a stale artifact."""
    from proxlab.core.paths import files_identity, tree_files

    if stage == "prepare":
        c = cfg.corpus
        if c.source == "hf":
            return {"corpus": {"hf": c.hf_dataset, "config": c.hf_config, "split": c.hf_split,
                               "revision": c.hf_revision}}
        from proxlab.refine.prepare import corpus_root, input_files

        # The one listing prepare reads too: a pool's files of the selected dumps, or the files under corpus.path.
        return {"corpus": files_identity(input_files(c, corpus_root(c, cfg.paths.data_dir)))}
    if stage == "tokenizer" and cfg.model.tokenizer.kind == "pretrained":
        from proxlab.pretrain.tokenizer import resolve_pretrained

        directory = resolve_pretrained(cfg.model.tokenizer.path, {"data_dir": cfg.paths.data_dir})
        return {"tokenizer": files_identity(tree_files(directory))}
    if stage.startswith("refine.generate_"):
        gen = cfg.refine[stage.rsplit("_", 1)[1]]
        return {key: _model_identity(gen[key]) for key in ("model", "tokenizer") if gen[key]}
    if stage == "evaluate":
        return _eval_sources(cfg)
    if stage == "pretrain" and cfg.model.init_checkpoint:
        return {"init_checkpoint": files_identity(tree_files(Path(cfg.model.init_checkpoint).expanduser()))}
    return {}


def _eval_sources(cfg: DictConfig) -> dict[str, Any]:
    """The eval data files the suite's tasks read (eval.task_files applied), and a directly evaluated local model."""
    from proxlab.core.paths import data_dir, files_identity
    from proxlab.evaluate.tasks.suites import get_suite, resolve_tasks, task_files

    suite = get_suite(cfg.eval.suite)
    root = data_dir(cfg.paths.data_dir)
    overrides = dict(cfg.eval.task_files or {})
    files = {root / rel for task in resolve_tasks(suite, list(cfg.eval.tasks))
             for rel in task_files(suite, task, overrides)}
    present = sorted(f for f in files if f.is_file())  # a missing file is the stage's error (or skip) to report
    out: dict[str, Any] = {"eval_data": files_identity(present)}
    if cfg.eval.model:
        out["model"] = _model_identity(cfg.eval.model)
    return out


def _model_identity(name: str) -> Any:
    """A local model directory's files, or the name itself (an HF id, or a model proxlab builds)."""
    from proxlab.core.paths import files_identity, tree_files

    path = Path(name).expanduser()
    if path.is_absolute() or path.exists():
        return files_identity(tree_files(path))
    return name


def run_key(stages: list[PlannedStage]) -> str:
    """The run's identity: a hash of every stage key, so the same command always finds the same run directory."""
    return hashlib.sha256("".join(s.key for s in stages).encode()).hexdigest()[:10]
