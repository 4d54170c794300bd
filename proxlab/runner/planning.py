"""What an experiment will cost, from its config alone: model size, steps, tokens, epochs, batch split, FLOPs.

Steps, tokens and gradient accumulation come from `proxlab.core.config.training_plan` and the model from
`proxlab.models.presets.resolved_model_config`, the same functions the pretrain stage calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from proxlab.core.config import (CorpusConfig, ExperimentConfig, TrainingPlan, as_dict, is_built_refiner, split_settings,
                                 training_plan)
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
        built = is_built_refiner(gen.model) and cfg.refiner is not None
        if built:
            n, name = non_embedding_params(refiner_base_model(cfg)), f"built {cfg.refiner.name}"
        elif gen.size_preset:
            n, name = non_embedding_params(model_config(gen.size_preset)), gen.size_preset
        else:
            lines.append(f"refine {level}: refine.{level}.size_preset not set; its FLOPs are left out")
            continue
        flops = inference_flops(n, tokens, 0)
        by_level[level] = flops
        lines.append(f"refine {level}: {name} refiner over {tokens:.3g} tokens → {flops:.3e} FLOPs")
    return lines, by_level


def refiner_base_model(cfg: ExperimentConfig):
    """The litgpt Config of the model a built refiner is fine-tuned from (refiner.base.model)."""
    base = cfg.refiner.base.model
    return resolved_model_config(base, planned_vocab_size(base))


def built_levels(cfg: ExperimentConfig) -> list[str]:
    levels = {"doc": ("doc",), "prox": ("doc", "chunk")}.get(cfg.refine.variant, ())
    return [lv for lv in levels if cfg.refiner is not None and is_built_refiner(getattr(cfg.refine, lv).model)]


def refiner_build_flops(cfg: ExperimentConfig) -> tuple[list[str], dict[str, float]]:
    """What building the experiment's refiners costs, apart from refining and training (the paper counts neither):
    the base's pretraining (6·N·D; shared with a raw run of the same model, recipe and corpus), the teacher's inference
    (2·N·tokens over the seed documents' scoring prompts and the kept documents' three chunk prompts) and the SFT
    (6·N·tokens·epochs). Estimates from the config: prompt lengths ≈ characters / 4, answers at max_new_tokens,
    seed documents of refiner.annotate.plan_doc_tokens, refine.expected_doc_kept of them kept by Eq. 2."""
    levels = built_levels(cfg)
    if not levels:
        return [], {}
    from proxlab.refine.build.prompts import CHUNK_PROMPTS, SCORE_PROMPTS

    r, a = cfg.refiner, cfg.refiner.annotate
    out: dict[str, float] = {}
    lines = []
    n_base = non_embedding_params(refiner_base_model(cfg))
    if r.base.checkpoint:
        lines.append(f"refiner base: {r.base.checkpoint} (given; no pretraining)")
    else:
        base_plan = training_plan(r.base.train, cfg.cluster.devices * cfg.cluster.num_nodes)
        out["refiner_base"] = training_flops(n_base, base_plan.tokens)
        lines.append(f"refiner base: {r.base.model.preset} on the raw corpus, {base_plan.tokens:.3g} tokens → "
                     f"{out['refiner_base']:.3e} FLOPs (the raw run's own pretraining when it has the same model "
                     f"and recipe)")
    seeds = a.num_docs or cfg.corpus.num_docs or (cfg.corpus.tokens or 0) / a.plan_doc_tokens
    doc_tokens = min(a.plan_doc_tokens, a.llm.max_prompt_tokens)
    chunk_tokens = min(a.plan_doc_tokens, cfg.refine.chunk.chunk_tokens)
    chunks = seeds * cfg.refine.expected_doc_kept * -(-a.plan_doc_tokens // cfg.refine.chunk.chunk_tokens)
    if a.teacher == "llm":
        n_teacher = (non_embedding_params(model_config(a.llm.size_preset)) if a.llm.size_preset
                     else a.teacher_params)
        prompt = (seeds * sum(doc_tokens + len(p) / 4 for p in SCORE_PROMPTS.values())
                  + chunks * sum(chunk_tokens + len(p) / 4 for p in CHUNK_PROMPTS.values()))
        output = (2 * seeds + 3 * chunks) * a.llm.max_new_tokens
        if n_teacher:
            out["teacher"] = inference_flops(n_teacher, prompt, output)
            lines.append(f"teacher {a.llm.model}: {seeds:.3g} seed documents, ≈{chunks:.3g} chunks, ≈{prompt:.3g} "
                         f"prompt + ≤{output:.3g} output tokens → {out['teacher']:.3e} FLOPs")
        else:
            lines.append(f"teacher {a.llm.model}: set refiner.annotate.teacher_params (or llm.size_preset) to count "
                         f"its FLOPs")
    else:
        lines.append(f"teacher: rules ({seeds:.3g} seed documents; no model)")
    # SFT examples are the refine stage's prompts: documents cut at refine.doc.max_prompt_tokens
    sft_tokens = {"doc": seeds * (min(a.plan_doc_tokens, cfg.refine.doc.max_prompt_tokens) + 8),
                  "chunk": chunks * (chunk_tokens + 64)}
    tokens = sum(sft_tokens[lv] for lv in levels) * r.finetune.epochs
    out["sft"] = training_flops(n_base, tokens)
    lines.append(f"SFT ({', '.join(levels)}): ≈{tokens:.3g} tokens over {r.finetune.epochs} epochs → "
                 f"{out['sft']:.3e} FLOPs (left out by the paper as negligible; shown apart)")
    lines.append("building the refiners (apart from refine and train): " + ", ".join(
        f"{k} {v:.3e} FLOPs = {gpu_hours(v, 'H100', 0.4):,.1f} H100-hours at 40% MFU" for k, v in out.items()))
    return lines, out


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
    # Building refiners, per stage key (a sweep builds a refiner once): the base's pretraining (key -> (tokens,
    # FLOPs); it is a training, and the raw run's when their keys agree), teacher and SFT FLOPs.
    base_trainings: dict[str, tuple[float, float]] = field(default_factory=dict)
    builds: dict[str, float] = field(default_factory=dict)
    seed: str | None = None  # train.seed (/data train.data_seed): a sweep over seeds trains each configuration per seed


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
    build = refiner_build_flops(cfg)[1]
    base_trainings, builds = {}, {}
    if "refiner_base" in build:
        base_tokens = training_plan(cfg.refiner.base.train, cfg.cluster.devices * cfg.cluster.num_nodes).tokens
        base_trainings[keys.get("refiner.pretrain") or f"{cfg.name}/refiner_base"] = (float(base_tokens),
                                                                                       build["refiner_base"])
    if "teacher" in build:
        builds[keys.get("refiner.annotate") or f"{cfg.name}/teacher"] = build["teacher"]
    if "sft" in build:
        builds[keys.get("refiner.sft_data", "") + "/sft" if keys.get("refiner.sft_data") else f"{cfg.name}/sft"] = \
            build["sft"]
    seed = str(cfg.train.seed) + ("" if cfg.train.data_seed is None else f"/data {cfg.train.data_seed}")
    return CostEstimate(str(cfg.name), float(tokens), training_flops(non_embedding_params(mc), tokens),
                        float(sum(by_level.values())), refinings, keys.get("pretrain"), base_trainings, builds,
                        seed=seed)


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
    lines += refiner_build_flops(cfg)[0]
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
    bases = {key: v for e in estimates for key, v in e.base_trainings.items() if key not in trainings}
    builds = {key: flops for e in estimates for key, flops in e.builds.items()}
    refine = sum(refinings.values())
    train = sum(f for _, f in trainings.values())
    tokens = sum(t for t, _ in trainings.values())
    refined = sum(1 for e in estimates if e.refine_flops)
    seeds = list(dict.fromkeys(e.seed for e in estimates if e.seed is not None))
    per_seed = f" ({len(seeds)} seeds: {', '.join(seeds)})" if len(seeds) > 1 else ""
    lines = [f"sweep of {len(estimates)} experiments: {len(trainings)} trainings{per_seed} over {tokens:.3g} tokens; "
             f"{len(refinings)} distinct refining stages for {refined} refined experiments (a shared one counted "
             f"once)",
             f"sweep FLOPs: refine {refine:.3e} + train {train:.3e} = {refine + train:.3e}"]
    if bases or builds:
        base = sum(f for _, f in bases.values())
        lines.append(f"building refiners (apart): {len(bases)} base pretrainings not among the sweep's own "
                     f"{base:.3e}, teacher + SFT {sum(builds.values()):.3e} FLOPs")
    for gpu in GPU_PEAK_FLOPS:
        lines.append(f"sweep GPU-hours at {mfu:.0%} MFU on {gpu}: refine {gpu_hours(refine, gpu, mfu):,.0f}, "
                     f"train {gpu_hours(train, gpu, mfu):,.0f}, total {gpu_hours(refine + train, gpu, mfu):,.0f}")
    return lines
