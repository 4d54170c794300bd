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

from proxlab.experiments.config import APPLY_CHUNK_ONLY_KEYS, GENERATE_RUNTIME_KEYS, TRAIN_RUNTIME_KEYS


@dataclass(frozen=True)
class StageDef:
    module: str  # run as `python -m <module> --spec spec.json`
    version: int  # bump when the stage's output semantics change: it invalidates old artifacts
    env: str = "main"  # which interpreter (cluster.envs) runs it
    spmd: bool = False  # under Slurm: every rank runs it (sharded work, Fabric); else rank 0 runs it, others wait


# The registry: the one place that names every stage's module, version and environment.
STAGES: dict[str, StageDef] = {
    "prepare": StageDef("proxlab.refine.prepare", 1),
    "refine.rules": StageDef("proxlab.refine.rules", 1, spmd=True),
    "refine.generate_doc": StageDef("proxlab.refine.generate", 1, spmd=True),
    "refine.apply_doc": StageDef("proxlab.refine.apply", 1, spmd=True),
    "refine.generate_chunk": StageDef("proxlab.refine.generate", 1, spmd=True),
    "refine.apply_chunk": StageDef("proxlab.refine.apply", 1, spmd=True),
    "tokenizer": StageDef("proxlab.pretrain.tokenizer", 1),
    "tokenize": StageDef("proxlab.pretrain.tokenize", 1),
    "pretrain": StageDef("proxlab.pretrain.train", 1, spmd=True),
    "evaluate": StageDef("proxlab.evaluate.stage", 1),
}

VARIANTS = ("raw", "rules", "doc", "prox")
PLAN_ONLY = ("tokens", "size_preset")  # config keys only `proxlab plan` reads: they never change an artifact


@dataclass
class PlannedStage:
    name: str
    definition: StageDef
    config: dict[str, Any]
    inputs: dict[str, "PlannedStage"] = field(default_factory=dict)
    # Settings the stage reads but that never change its artifact: passed in spec.runtime, never hashed.
    runtime: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    out_dir: Path = Path()

    @property
    def env(self) -> str:
        return self.config.get("env", self.definition.env)  # generate stages name theirs: main or vllm


def content_key(stage: str, version: int, config: dict[str, Any], input_keys: dict[str, str]) -> str:
    payload = json.dumps({"stage": stage, "version": version, "config": config, "inputs": input_keys},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _section(cfg: DictConfig, path: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    node = OmegaConf.to_container(OmegaConf.select(cfg, path), resolve=True)
    return {k: v for k, v in node.items() if k not in drop}


def _generate_slices(cfg: DictConfig, level: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hashed config, runtime settings) of `refine.generate_<level>`: speed and transport knobs are not hashed."""
    section = _section(cfg, f"refine.{level}", drop=PLAN_ONLY)
    runtime = {k: section.pop(k) for k in GENERATE_RUNTIME_KEYS}
    return {"level": level, **section}, runtime


def plan(cfg: DictConfig, artifacts_dir: Path) -> list[PlannedStage]:
    """The ordered stages of the experiment `cfg` describes, each with its key and artifact directory."""
    variant = cfg.refine.variant
    if variant not in VARIANTS:
        raise ValueError(f"refine.variant={variant!r} is not one of {VARIANTS}")
    stages: list[PlannedStage] = []

    def add(name: str, config: dict[str, Any], runtime: dict[str, Any] | None = None,
            **inputs: PlannedStage) -> PlannedStage:
        st = PlannedStage(name, STAGES[name], config, dict(inputs), dict(runtime or {}))
        st.key = content_key(name, st.definition.version, config, {k: v.key for k, v in inputs.items()})
        st.out_dir = artifacts_dir / name / st.key
        stages.append(st)
        return st

    # Corpus: what is read is hashed, where it lies is not (`_resolved_path` travels in the spec's runtime instead).
    prepared = add("prepare", _section(cfg, "corpus", drop=PLAN_ONLY))

    current = prepared
    if variant == "rules" or (variant in ("doc", "prox") and cfg.refine.rules_first):
        current = add("refine.rules", _section(cfg, "refine.rules"), docs=current)
    if variant in ("doc", "prox"):
        doc_gen = add("refine.generate_doc", *_generate_slices(cfg, "doc"), docs=current)
        current = add("refine.apply_doc", {"level": "doc", **_section(cfg, "refine.apply", drop=APPLY_CHUNK_ONLY_KEYS)},
                      docs=current, programs=doc_gen)
        if variant == "prox":
            chunk_gen = add("refine.generate_chunk", *_generate_slices(cfg, "chunk"), docs=current)
            current = add("refine.apply_chunk", {"level": "chunk", **_section(cfg, "refine.apply")}, docs=current,
                          programs=chunk_gen)

    # The tokenizer is trained on the prepared (raw) corpus, so every variant of a sweep shares one vocabulary.
    tokenizer = add("tokenizer", _section(cfg, "model.tokenizer"), docs=prepared)
    tokenized = add("tokenize", {"seq_len": cfg.train.seq_len, "workers": cfg.train.tokenize_workers},
                    docs=current, tokenizer=tokenizer)
    model_cfg = _section(cfg, "model", drop=("tokenizer",))
    train_cfg = _section(cfg, "train", drop=("tokenize_workers", *TRAIN_RUNTIME_KEYS))
    pretrained = add("pretrain", {"model": model_cfg, "train": train_cfg}, data=tokenized, tokenizer=tokenizer)
    add("evaluate", _section(cfg, "eval"), checkpoint=pretrained)

    if cfg.stop_after:
        # a stage name, or a prefix: stop_after=refine stops after the last refine.* stage
        names = [s.name for s in stages]
        hits = [i for i, n in enumerate(names) if n == cfg.stop_after or n.startswith(cfg.stop_after + ".")]
        if not hits:
            raise ValueError(f"stop_after={cfg.stop_after!r}: this experiment's stages are {names}")
        stages = stages[: hits[-1] + 1]
    return stages


def run_key(stages: list[PlannedStage]) -> str:
    """The run's identity: a hash of every stage key, so the same command always finds the same run directory."""
    return hashlib.sha256("".join(s.key for s in stages).encode()).hexdigest()[:10]
