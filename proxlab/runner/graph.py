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

from proxlab.core.config import (AnnotateConfig, ApplyConfig, ConfigError, CorpusConfig, EvalConfig, FinetuneConfig,
                                 GenerateConfig, ModelConfig, RulesConfig, SelectConfig, SFTDataConfig,
                                 TokenizerConfig, TrainConfig, is_built_refiner, resolve_refine_dtype, split_settings)


@dataclass(frozen=True)
class StageDef:
    module: str  # run as `python -m <module> --spec spec.json`
    version: int  # bump when the stage's output semantics change: it invalidates old artifacts
    env: str = "main"  # which interpreter (cluster.envs) runs it
    spmd: bool = False  # under Slurm: every rank runs it (sharded work, Fabric); else rank 0 runs it, others wait
    # Its processes pick their GPU themselves (Fabric: cuda:<local rank>), so they see every GPU of their node; every
    # other stage's process sees only its task's own (proxlab.core.devices).
    fabric: bool = False
    # Hash (and store) it under another stage's name: the refiner's base pretraining is a pretraining, so it shares the
    # artifact of an experiment that trains the same model on the same raw corpus.
    key_as: str | None = None


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
    # Building refiners (refine.<level>.model=built; docs/refiners.md): the base on the raw corpus, then teacher
    # annotations, SFT data, a fine-tune and a selection by F1 per level.
    "refiner.tokenizer": StageDef("proxlab.pretrain.tokenizer", 1, key_as="tokenizer"),
    "refiner.tokenize": StageDef("proxlab.pretrain.tokenize", 1, key_as="tokenize"),
    "refiner.pretrain": StageDef("proxlab.pretrain.train", 1, spmd=True, fabric=True, key_as="pretrain"),
    "refiner.annotate": StageDef("proxlab.refine.build.annotate", 1, spmd=True),  # sharded by input file
    "refiner.sft_data": StageDef("proxlab.refine.build.sft_data", 1),
    "refiner.finetune_doc": StageDef("proxlab.pretrain.finetune", 1, spmd=True, fabric=True),
    "refiner.finetune_chunk": StageDef("proxlab.pretrain.finetune", 1, spmd=True, fabric=True),
    "refiner.select_doc": StageDef("proxlab.refine.build.select", 1),
    "refiner.select_chunk": StageDef("proxlab.refine.build.select", 1),
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
    # Inputs from outside the artifact store (a given refiner base checkpoint): their identity is in `sources`.
    external_inputs: dict[str, str] = field(default_factory=dict)
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
            sources: dict[str, Any] | None = None, external: dict[str, str] | None = None,
            **inputs: PlannedStage) -> PlannedStage:
        definition = STAGES[name]
        as_name = definition.key_as or name
        st = PlannedStage(name, definition, config, dict(inputs), dict(runtime or {}),
                          external_sources(name, cfg) if sources is None else sources, dict(external or {}))
        st.key = content_key(as_name, definition.version, config, {k: v.key for k, v in inputs.items()}, st.sources)
        st.out_dir = artifacts_dir / as_name / st.key
        for earlier in stages:  # the same work twice in one graph (the refiner's tokenizer is the experiment's)
            if earlier.out_dir == st.out_dir:
                if earlier.name.startswith("refiner.") and not name.startswith("refiner."):
                    earlier.name, earlier.definition = name, definition  # the experiment's own name for it
                return earlier
        stages.append(st)
        return st

    # Corpus: what is read is hashed, where it lies is not (`data_dir` travels in the spec's runtime instead).
    prepared = add("prepare", *_settings(cfg, "corpus", CorpusConfig))

    current = prepared
    if variant == "rules" or (variant in ("doc", "prox") and cfg.refine.rules_first):
        current = add("refine.rules", *_settings(cfg, "refine.rules", RulesConfig), docs=current)
    levels = {"doc": ("doc",), "prox": ("doc", "chunk")}.get(variant, ())
    built = [level for level in levels if is_built_refiner(cfg.refine[level].model)]
    refiners = build_refiners(cfg, add, prepared, built) if built else {}
    for level in levels:
        gen_hashed, gen_runtime = _settings(cfg, f"refine.{level}", GenerateConfig)
        # The dtype that will run, not `auto`: other hardware → another effective dtype → another artifact.
        gen_hashed["dtype"] = resolve_refine_dtype(gen_hashed["dtype"], cfg.cluster.accelerator,
                                                   f"refine.{level}.dtype")
        refiner = {"refiner": refiners[level]} if level in refiners else {}
        programs = add(f"refine.generate_{level}", {"level": level, **gen_hashed}, gen_runtime, docs=current,
                       **refiner)
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


def build_refiners(cfg: DictConfig, add, prepared: PlannedStage, levels: list[str]) -> dict[str, PlannedStage]:
    """The stages that build this experiment's refiners (`refiner`, RefinerBuildConfig), for the refine `levels` whose
    model is `built`: {level: its refiner.select stage, whose `refiner/` directory is the model}.

    The base is pretrained on the experiment's raw (prepared) corpus by the pretrain stages' own modules, hashed as
    they are (StageDef.key_as): a raw experiment with the same model and recipe has the very same artifact. A teacher
    annotates seed documents of the same corpus; sft_data renders them with refine.<level>'s prompt settings and the
    base's block size, so the refiner is trained on exactly what it is asked at inference."""
    from proxlab.models.presets import planned_vocab_size, resolved_model_config

    r = cfg.refiner
    base_ckpt = r.base.checkpoint
    if base_ckpt:
        base_dir = Path(base_ckpt).expanduser().resolve()
        base_sources = {"base": _model_identity(str(base_dir))}
        block_size = _block_size_of(base_dir)
        tokenizer = base = None
    else:
        base_model = OmegaConf.select(cfg, "refiner.base.model")
        tok_hashed, tok_runtime = _settings(cfg, "refiner.base.model.tokenizer", TokenizerConfig)
        tokenizer = add("refiner.tokenizer", tok_hashed, tok_runtime,
                        sources=_tokenizer_sources(base_model.tokenizer, cfg.paths.data_dir), docs=prepared)
        base_train = r.base.train
        tokenized = add("refiner.tokenize", {"seq_len": base_train.seq_len, "val_fraction": base_train.val_fraction},
                        {"workers": base_train.tokenize_workers}, docs=prepared, tokenizer=tokenizer)
        model_hashed, _ = _settings(cfg, "refiner.base.model", ModelConfig)
        model_hashed.pop("tokenizer")
        train_hashed, train_runtime = _settings(cfg, "refiner.base.train", TrainConfig)
        init = base_model.init_checkpoint
        base = add("refiner.pretrain", {"model": model_hashed, "train": train_hashed}, train_runtime,
                   sources=({"init_checkpoint": _model_identity(init)} if init else {}),
                   data=tokenized, tokenizer=tokenizer)
        typed_model = ModelConfig(**{k: v for k, v in OmegaConf.to_container(base_model, resolve=True).items()
                                     if k != "tokenizer"})
        block_size = resolved_model_config(typed_model, planned_vocab_size(typed_model)).block_size
        base_sources = {}

    # The refiner keeps its base's tokenizer: the tokenizer stage's, or a given checkpoint's own files.
    tokenizer_input = {"tokenizer": tokenizer} if tokenizer is not None else {}
    external = {"tokenizer": str(base_dir)} if base_ckpt else {}

    ann_hashed, ann_runtime = _settings(cfg, "refiner.annotate", AnnotateConfig)
    # Chunks are cut as the refine stage cuts them; the refiner's tokenizer is the base's.
    ann_hashed.update(chunk_tokens=cfg.refine.chunk.chunk_tokens, overlong_line=cfg.refine.chunk.overlong_line)
    if ann_hashed["teacher"] == "llm":
        llm = ann_hashed["llm"]
        llm["dtype"] = resolve_refine_dtype(llm["dtype"], cfg.cluster.accelerator, "refiner.annotate.llm.dtype")
        ann_hashed["env"] = llm["env"]  # the teacher's backend decides the interpreter, as a refine level's does
    teacher = ann_hashed["llm"]["model"] if ann_hashed["teacher"] == "llm" else None
    annotations = add("refiner.annotate", ann_hashed, ann_runtime,
                      sources={**base_sources, **({"teacher": _model_identity(teacher)} if teacher else {})},
                      external=external, docs=prepared, **tokenizer_input)

    sft_hashed, sft_runtime = _settings(cfg, "refiner.sft_data", SFTDataConfig)
    for level in ("doc", "chunk"):
        gen = cfg.refine[level]
        sft_hashed[level] = {k: gen[k] for k in ("chat_format", "double_bos", "truncation", "max_prompt_tokens",
                                                 "chunk_tokens", "overlong_line")}
    sft_hashed["max_seq_len"] = int(block_size)
    sft = add("refiner.sft_data", sft_hashed, sft_runtime, sources=base_sources, external=external,
              annotations=annotations, **tokenizer_input)

    out = {}
    for level in levels:
        ft_hashed, ft_runtime = _settings(cfg, "refiner.finetune", FinetuneConfig)
        ft_hashed["level"] = level
        finetuned = add(f"refiner.finetune_{level}", {"finetune": ft_hashed}, ft_runtime, sources=base_sources,
                        external={"base": str(base_dir)} if base_ckpt else {},
                        sft=sft, **({"base": base} if base is not None else {}))
        sel_hashed, sel_runtime = _settings(cfg, "refiner.select", SelectConfig)
        sel_hashed["level"] = level
        out[level] = add(f"refiner.select_{level}", sel_hashed, sel_runtime, sft=sft, finetune=finetuned)
    return out


def _block_size_of(checkpoint: Path) -> int:
    """The context of a LitGPT checkpoint (model_config.yaml) or an HF model (config.json) directory."""
    import yaml

    if (checkpoint / "model_config.yaml").is_file():
        return int(yaml.safe_load((checkpoint / "model_config.yaml").read_text())["block_size"])
    if (checkpoint / "config.json").is_file():
        return int(json.loads((checkpoint / "config.json").read_text())["max_position_embeddings"])
    raise ConfigError("refiner.base.checkpoint", str(checkpoint),
                      "neither a LitGPT checkpoint (model_config.yaml) nor an HF model directory (config.json)")


def _tokenizer_sources(tok, data_dir) -> dict[str, Any]:
    """What a tokenizer stage reads from outside the artifact store: a pretrained tokenizer's files. A missing one by
    its name: the plan goes on (`proxlab plan` warns, runner/validate.py) and the tokenizer stage fails saying where
    to get it; once it is there, its files re-key the stage."""
    if tok.kind != "pretrained":
        return {}
    from proxlab.core.paths import files_identity, tokenizer_candidates, tree_files

    directory = tokenizer_candidates(tok.path, data_dir)[0] if tok.path else None
    return {"tokenizer": files_identity(tree_files(directory)) if directory else {"missing": tok.path}}


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
    if stage == "tokenizer":
        return _tokenizer_sources(cfg.model.tokenizer, cfg.paths.data_dir)
    if stage.startswith("refine.generate_"):
        gen = cfg.refine[stage.rsplit("_", 1)[1]]
        # a built refiner's identity is its input's key (the refiner.select stage)
        return {key: _model_identity(gen[key]) for key in ("model", "tokenizer")
                if gen[key] and not is_built_refiner(gen[key])}
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
