"""What an experiment will cost, from its config alone: model size, steps, tokens, epochs, batch split, FLOPs.

Steps, tokens and gradient accumulation come from `proxlab.core.config.training_plan` and the model from
`proxlab.models.presets.resolved_model_config`, the same functions the pretrain stage calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from proxlab.core.config import CorpusConfig, ExperimentConfig, TrainingPlan, as_dict, split_settings, training_plan
from proxlab.core.flops import inference_flops, training_flops
from proxlab.models.params import non_embedding_params, total_params
from proxlab.models.presets import model_config, planned_vocab_size, resolved_model_config


def planned_model(cfg: ExperimentConfig):
    """The litgpt Config the pretrain stage will build (the tokenizer's vocabulary as the config states it)."""
    return resolved_model_config(cfg.model, planned_vocab_size(cfg.model))


def planned_training(cfg: ExperimentConfig) -> TrainingPlan:
    return training_plan(cfg.train, cfg.cluster.devices * cfg.cluster.num_nodes)


def describe_training(cfg: ExperimentConfig) -> list[str]:
    mc, plan, t = planned_model(cfg), planned_training(cfg), cfg.train
    steps, tokens, world = plan.stop_step, plan.tokens, plan.world_size
    return [
        f"model {cfg.model.preset}: {mc.n_layer} layers, hidden {mc.n_embd}, heads {mc.n_head} "
        f"(KV groups {mc.n_query_groups}), MLP {mc.intermediate_size}, vocab {mc.padded_vocab_size}",
        f"parameters: {total_params(mc):,} total, {non_embedding_params(mc):,} non-embedding",
        f"steps {steps:,} (schedule over {t.max_steps:,}) × global batch {t.global_batch_size} × seq {t.seq_len} "
        f"= {tokens:,} tokens",
        f"world size {world} ({cfg.cluster.num_nodes} nodes × {cfg.cluster.devices}): micro batch "
        f"{t.micro_batch_size}, gradient accumulation {plan.grad_accum}",
        f"training FLOPs (6·N·D): {training_flops(non_embedding_params(mc), tokens):.3e}",
    ]


# Dense bf16 peak FLOP/s per GPU (no sparsity), for GPU-hours at a given MFU.
GPU_PEAK_FLOPS = {"H100": 989e12, "A100": 312e12}


# ---------------------------------------------------------------------------------------------------------------------
# The raw pool: prepare's measurement when its artifact exists, else corpus.tokens


@dataclass(frozen=True)
class PoolMeasure:
    """The raw pool's tokens as the prepare artifact's manifest states them (docs/refine.md, "Pools")."""

    tokens: float
    se: float
    tokenizer: str | None  # the tokenizer directory it was measured with
    artifact: Path
    files_missing: int = 0


def prepare_artifact(cfg: ExperimentConfig, artifacts_dir: str | Path | None = None) -> Path | None:
    """The prepare artifact directory this experiment would use: the key `runner.graph.plan` gives it (its hashed
    corpus settings and the identity of its input files, listed by the same function); None when the corpus cannot
    be listed here (no mirror)."""
    from proxlab.runner.graph import STAGES, content_key, external_sources

    hashed, _ = split_settings(CorpusConfig, as_dict(cfg.corpus))
    try:
        sources = external_sources("prepare", cfg)
    except (OSError, ValueError):
        return None
    key = content_key("prepare", STAGES["prepare"].version, hashed, {}, sources)
    return Path(artifacts_dir or cfg.paths.artifacts_dir).resolve() / "prepare" / key


def measured_pool(cfg: ExperimentConfig, artifacts_dir: str | Path | None = None) -> PoolMeasure | None:
    """The prepare artifact's measured pool size, when the artifact is complete and measured its tokens."""
    from proxlab.core.stage import is_complete

    out = prepare_artifact(cfg, artifacts_dir)
    if out is None or not is_complete(out):
        return None
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    counts, extra = manifest.get("counts", {}), manifest.get("extra", {})
    if not counts.get("tokens_estimate"):
        return None
    return PoolMeasure(float(counts["tokens_estimate"]), float(counts.get("tokens_estimate_se", 0.0)),
                       (extra.get("tokens") or {}).get("tokenizer"), out, int(counts.get("pool_files_missing", 0)))


def _same_tokenizer(cfg: ExperimentConfig, measured_with: str | None) -> bool:
    """Whether the measurement's tokenizer is this experiment's (compared by directory name: `llama_hf`)."""
    mine = cfg.corpus.tokenizer or (cfg.model.tokenizer.path if cfg.model.tokenizer.kind == "pretrained" else None)
    return bool(mine and measured_with and Path(mine).name == Path(measured_with).name)


def raw_pool_tokens(cfg: ExperimentConfig, measure: PoolMeasure | None = None) -> tuple[float | None, str]:
    """(the raw pool's tokens, where the number comes from): the measurement with this experiment's tokenizer, else
    corpus.tokens."""
    if measure is not None and _same_tokenizer(cfg, measure.tokenizer):
        return measure.tokens, "measured"
    return cfg.corpus.tokens, "corpus.tokens"


def _refiner_preset(cfg: ExperimentConfig) -> str | None:
    level = {"doc": "doc", "prox": "chunk"}.get(cfg.refine.variant)
    return getattr(cfg.refine, level).size_preset if level else None


def describe_pool(cfg: ExperimentConfig, measure: PoolMeasure | None, train_tokens: float) -> list[str]:
    """The pool's size (measured beside corpus.tokens), the variant's epochs, and paper Table 7's row beside ours."""
    from proxlab.refine.pools import POOLS, table7_rows

    c = cfg.corpus
    name = f"pool {c.pool} dumps {list(c.dumps) if c.dumps is not None else 'all'}" if c.pool else f"corpus {c.name}"
    lines = []
    if measure is not None:
        line = (f"{name}: measured {measure.tokens:.4g} ± {measure.se:.2g} tokens with "
                f"{Path(measure.tokenizer or '?').name} (prepare {measure.artifact.name})")
        if c.tokens:
            line += f"; corpus.tokens {c.tokens:.4g} ({measure.tokens / c.tokens - 1:+.1%})"
        if measure.files_missing:
            line += f"; {measure.files_missing:,} pool files were missing (corpus.allow_partial)"
        if not _same_tokenizer(cfg, measure.tokenizer):
            line += "; another tokenizer than this experiment's: corpus.tokens is used"
        lines.append(line)
    elif c.tokens:
        lines.append(f"{name}: corpus.tokens {c.tokens:.4g} (prepare's measurement replaces it once its artifact "
                     f"exists)")
    raw, origin = raw_pool_tokens(cfg, measure)
    pool = variant_tokens(cfg, raw)
    if pool:
        lines.append(f"variant pool ≈ {pool:.3g} tokens ({origin}) → {train_tokens / pool:.2f} epochs for "
                     f"{train_tokens:.3g} train tokens")
    dumps = tuple(c.dumps) if c.dumps is not None else None
    for row in table7_rows(cfg.paper_table, c.pool, cfg.refine.variant, _refiner_preset(cfg), cfg.model.preset,
                           dumps):
        title = POOLS[row.pool].title
        paper = (f"corpus {row.corpus_b:g}B, " if row.corpus_b else "corpus -, ") + f"train {row.train_b:g}B, " + (
            f"{row.epochs:.2f} epochs" if row.epochs is not None else "epochs -")
        if row.corpus_b and row.epochs is not None and abs(row.train_b / row.corpus_b - row.epochs) > 0.05:
            paper += f" as printed (train / corpus = {row.train_b / row.corpus_b:.2f})"
        ours = (f"corpus {pool / 1e9:.1f}B, train {train_tokens / 1e9:.1f}B, {train_tokens / pool:.2f} epochs"
                if pool else f"train {train_tokens / 1e9:.1f}B")
        lines.append(f"paper Table 7 ({row.experiment}, {title}, {row.description}): {paper} | ours: {ours}")
    return lines


def refining_flops(cfg: ExperimentConfig, raw: float | None = None) -> tuple[list[str], float]:
    """Paper Eqs. 11–13: C_doc ≈ 2·N_doc·D_raw, C_chunk ≈ 2·N_chunk·D_doc (D_output ≪ D_raw); D_raw: `raw` (the
    measured pool), else corpus.tokens."""
    lines, by_level = refining_flops_by_level(cfg, raw)
    return lines, float(sum(by_level.values()))


def refining_flops_by_level(cfg: ExperimentConfig, raw: float | None = None) -> tuple[list[str], dict[str, float]]:
    """`refining_flops`, per level ("doc", "chunk"): a sweep counts each level's artifact once (ProX-D's doc level is
    also ProX-D+C's)."""
    raw = cfg.corpus.tokens if raw is None else raw
    variant = cfg.refine.variant
    if variant not in ("doc", "prox") or raw is None:
        return [], {}
    lines, by_level = [], {}
    levels = [("doc", cfg.refine.doc, raw)]
    if variant == "prox":
        levels.append(("chunk", cfg.refine.chunk, raw * cfg.refine.expected_doc_kept))
    for level, gen, tokens in levels:
        if not gen.size_preset:
            lines.append(f"refine {level}: refine.{level}.size_preset not set; its FLOPs are left out")
            continue
        flops = inference_flops(non_embedding_params(model_config(gen.size_preset)), tokens, 0)
        by_level[level] = flops
        lines.append(f"refine {level}: {gen.size_preset} refiner over {tokens:.3g} tokens → {flops:.3e} FLOPs")
    return lines, by_level


def variant_tokens(cfg: ExperimentConfig, raw: float | None = None) -> float | None:
    """The variant's pool: the raw pool (`raw`, else corpus.tokens) × the expected kept shares of its refinement."""
    raw, r = (cfg.corpus.tokens if raw is None else raw), cfg.refine
    if raw is None:
        return None
    return {"raw": raw, "rules": raw * r.expected_rules_kept, "doc": raw * r.expected_doc_kept,
            "prox": raw * r.expected_doc_kept * r.expected_chunk_kept}[r.variant]


@dataclass(frozen=True)
class CostEstimate:
    """One experiment's planned cost, with the artifact keys that let a sweep count shared work once."""

    experiment: str
    train_tokens: float
    train_flops: float
    refine_flops: float
    # refine.generate stage key -> its FLOPs (a level without a planned key is named "<experiment>/<level>")
    refinings: dict[str, float] = field(default_factory=dict)
    train_key: str | None = None  # the pretrain stage's key


def gpu_hours(flops: float, gpu: str, mfu: float = 0.4) -> float:
    return flops / (mfu * GPU_PEAK_FLOPS[gpu]) / 3600


def cost_estimate(cfg: ExperimentConfig, stage_keys: dict[str, str] | None = None) -> CostEstimate:
    """Training tokens and FLOPs (6·N·D) and refining FLOPs (Eqs. 11–13) of the experiment `cfg`, from its config (and
    the measured raw pool, when its prepare artifact exists)."""
    keys = stage_keys or {}
    mc, tokens = planned_model(cfg), planned_training(cfg).tokens
    by_level = refining_flops_by_level(cfg, raw_pool_tokens(cfg, measured_pool(cfg))[0])[1]
    refinings = {keys.get(f"refine.generate_{level}") or f"{cfg.name}/{level}": flops
                 for level, flops in by_level.items()}
    return CostEstimate(str(cfg.name), float(tokens), training_flops(non_embedding_params(mc), tokens),
                        float(sum(by_level.values())), refinings, keys.get("pretrain"))


def describe_costs(cfg: ExperimentConfig, mfu: float = 0.4, measure: PoolMeasure | None = None) -> list[str]:
    """Tokens to refine and train, the pool and its epochs (beside paper Table 7), refining and training FLOPs, and
    GPU-hours: from the config, and the raw pool's size as the prepare artifact measured it when that exists
    (`measure`; looked up by default)."""
    mc = planned_model(cfg)
    est = cost_estimate(cfg)
    tokens, train = est.train_tokens, est.train_flops
    measure = measure if measure is not None else measured_pool(cfg)
    lines, refine = refining_flops(cfg, raw_pool_tokens(cfg, measure)[0])
    lines += describe_pool(cfg, measure, tokens)
    lines.append(f"FLOPs: refine {refine:.3e} + train {train:.3e} = {refine + train:.3e}")
    if refine:
        lines.append(f"refining equals training {refine / (6 * non_embedding_params(mc)):.3g} more tokens on "
                     f"{cfg.model.preset}")
    for gpu in GPU_PEAK_FLOPS:
        lines.append(f"GPU-hours at {mfu:.0%} MFU on {gpu}: refine {gpu_hours(refine, gpu, mfu):,.0f}, "
                     f"train {gpu_hours(train, gpu, mfu):,.0f}")
    return lines


def describe_sweep_costs(estimates: list[CostEstimate], mfu: float = 0.4) -> list[str]:
    """The total of a sweep's experiments. A refining (or training) shared by several experiments, like one refined
    corpus under three base sizes in Fig. 5, or ProX-D's doc level inside ProX-D+C, is one artifact and is counted once
    here (each run's own line has it)."""
    refinings = {key: flops for e in estimates for key, flops in e.refinings.items()}
    trainings = {e.train_key or f"{i}": (e.train_tokens, e.train_flops) for i, e in enumerate(estimates)}
    refine = sum(refinings.values())
    train = sum(f for _, f in trainings.values())
    tokens = sum(t for t, _ in trainings.values())
    refined = sum(1 for e in estimates if e.refine_flops)
    lines = [f"sweep of {len(estimates)} experiments: {len(trainings)} trainings over {tokens:.3g} tokens; "
             f"{len(refinings)} distinct refining stages for {refined} refined experiments (a shared one counted "
             f"once)",
             f"sweep FLOPs: refine {refine:.3e} + train {train:.3e} = {refine + train:.3e}"]
    for gpu in GPU_PEAK_FLOPS:
        lines.append(f"sweep GPU-hours at {mfu:.0%} MFU on {gpu}: refine {gpu_hours(refine, gpu, mfu):,.0f}, "
                     f"train {gpu_hours(train, gpu, mfu):,.0f}, total {gpu_hours(refine + train, gpu, mfu):,.0f}")
    return lines
