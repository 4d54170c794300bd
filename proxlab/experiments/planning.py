"""What an experiment will cost, from its config alone: model size, steps, tokens, epochs, batch split, FLOPs."""

from __future__ import annotations

from omegaconf import DictConfig


def model_overrides(cfg: DictConfig) -> dict:
    skip = ("preset", "tokenizer", "init_checkpoint")
    return {k: v for k, v in cfg.model.items() if k not in skip and v is not None}


def describe_training(cfg: DictConfig) -> list[str]:
    from proxlab.experiments.flops import non_embedding_params, total_params, training_flops
    from proxlab.pretrain.presets import model_config

    overrides = model_overrides(cfg)
    if "vocab_size" not in overrides and cfg.model.tokenizer.kind == "train_bpe":
        overrides["vocab_size"] = cfg.model.tokenizer.vocab_size
    mc = model_config(cfg.model.preset, **overrides)
    world = cfg.cluster.devices * cfg.cluster.num_nodes
    t = cfg.train
    per_step = t.micro_batch_size * world
    accum = t.global_batch_size // per_step if t.global_batch_size % per_step == 0 else None
    steps = t.early_stop_step or t.max_steps
    tokens = steps * t.global_batch_size * t.seq_len
    return [
        f"model {cfg.model.preset}: {mc.n_layer} layers, hidden {mc.n_embd}, heads {mc.n_head} "
        f"(KV groups {mc.n_query_groups}), MLP {mc.intermediate_size}, vocab {mc.padded_vocab_size}",
        f"parameters: {total_params(mc):,} total, {non_embedding_params(mc):,} non-embedding",
        f"steps {steps:,} (schedule over {t.max_steps:,}) × global batch {t.global_batch_size} × seq {t.seq_len} "
        f"= {tokens:,} tokens",
        f"world size {world} ({cfg.cluster.num_nodes} nodes × {cfg.cluster.devices}): micro batch "
        f"{t.micro_batch_size}, gradient accumulation "
        + (str(accum) if accum else f"IMPOSSIBLE ({t.global_batch_size} not divisible by {per_step})"),
        f"training FLOPs (6·N·D): {training_flops(mc, tokens):.3e}",
    ]
