"""What an experiment will cost, from its config alone: model size, steps, tokens, epochs, batch split, FLOPs.

Steps, tokens and gradient accumulation come from `proxlab.core.config.training_plan` and the model from
`proxlab.models.presets.resolved_model_config`, the same functions the pretrain stage calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxlab.core.config import ExperimentConfig, TrainingPlan, training_plan
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


def refining_flops(cfg: ExperimentConfig) -> tuple[list[str], float]:
    """Paper Eqs. 11–13: C_doc ≈ 2·N_doc·D_raw, C_chunk ≈ 2·N_chunk·D_doc (D_output ≪ D_raw)."""
    raw = cfg.corpus.tokens
    variant = cfg.refine.variant
    if variant not in ("doc", "prox") or raw is None:
        return [], 0.0
    lines, total = [], 0.0
    levels = [("doc", cfg.refine.doc, raw)]
    if variant == "prox":
        levels.append(("chunk", cfg.refine.chunk, raw * cfg.refine.expected_doc_kept))
    for level, gen, tokens in levels:
        if not gen.size_preset:
            lines.append(f"refine {level}: refine.{level}.size_preset not set; its FLOPs are left out")
            continue
        flops = inference_flops(non_embedding_params(model_config(gen.size_preset)), tokens, 0)
        total += flops
        lines.append(f"refine {level}: {gen.size_preset} refiner over {tokens:.3g} tokens → {flops:.3e} FLOPs")
    return lines, total


def variant_tokens(cfg: ExperimentConfig) -> float | None:
    raw, r = cfg.corpus.tokens, cfg.refine
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
    refine_key: str | None = None  # the keys of its refine.generate stages; None: no refining
    train_key: str | None = None  # the pretrain stage's key


def gpu_hours(flops: float, gpu: str, mfu: float = 0.4) -> float:
    return flops / (mfu * GPU_PEAK_FLOPS[gpu]) / 3600


def cost_estimate(cfg: ExperimentConfig, stage_keys: dict[str, str] | None = None) -> CostEstimate:
    """Training tokens and FLOPs (6·N·D) and refining FLOPs (Eqs. 11–13) of the experiment `cfg`, from its config."""
    keys = stage_keys or {}
    mc, tokens = planned_model(cfg), planned_training(cfg).tokens
    refine = refining_flops(cfg)[1]
    generate = [key for name, key in keys.items() if name.startswith("refine.generate")]
    return CostEstimate(str(cfg.name), float(tokens), training_flops(non_embedding_params(mc), tokens), refine,
                        "+".join(generate) if refine and generate else None, keys.get("pretrain"))


def describe_costs(cfg: ExperimentConfig, mfu: float = 0.4) -> list[str]:
    """Tokens to refine and train, refining and training FLOPs, and GPU-hours, from the config alone."""
    mc = planned_model(cfg)
    est = cost_estimate(cfg)
    tokens, train = est.train_tokens, est.train_flops
    lines, refine = refining_flops(cfg)
    pool = variant_tokens(cfg)
    if pool:
        lines.append(f"variant pool ≈ {pool:.3g} tokens → {tokens / pool:.2f} epochs for {tokens:.3g} train tokens")
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
    corpus under three base sizes in Fig. 5, is one artifact and is counted once here (each run's own line has it)."""
    refinings = {e.refine_key or f"{i}": e.refine_flops for i, e in enumerate(estimates) if e.refine_flops}
    trainings = {e.train_key or f"{i}": (e.train_tokens, e.train_flops) for i, e in enumerate(estimates)}
    refine = sum(refinings.values())
    train = sum(f for _, f in trainings.values())
    tokens = sum(t for t, _ in trainings.values())
    refined = sum(1 for e in estimates if e.refine_flops)
    lines = [f"sweep of {len(estimates)} experiments: {len(trainings)} trainings over {tokens:.3g} tokens; "
             f"{len(refinings)} distinct refinings for {refined} refined experiments (a shared one counted once)",
             f"sweep FLOPs: refine {refine:.3e} + train {train:.3e} = {refine + train:.3e}"]
    for gpu in GPU_PEAK_FLOPS:
        lines.append(f"sweep GPU-hours at {mfu:.0%} MFU on {gpu}: refine {gpu_hours(refine, gpu, mfu):,.0f}, "
                     f"train {gpu_hours(train, gpu, mfu):,.0f}, total {gpu_hours(refine + train, gpu, mfu):,.0f}")
    return lines
