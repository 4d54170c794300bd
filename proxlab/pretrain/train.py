"""Stage "pretrain": train a LitGPT model on a tokenize artifact with Lightning Fabric, in a proxlab-owned loop.

    python -m proxlab.pretrain.train --spec spec.json

spec.config = {"model": ModelConfig dict (no tokenizer), "train": TrainConfig dict}; inputs "data" (tokenize
artifact) and "tokenizer"; spec.runtime {"devices", "num_nodes", "accelerator"} (default 1/1/cpu) and optionally
the unhashed train knobs (proxlab.experiments.config.TRAIN_RUNTIME_KEYS, and "threads").

The loop stops at exactly `early_stop_step or max_steps` optimizer steps; the LR schedule always spans `max_steps`.
Each step takes global_batch_size / (micro_batch_size x world size) micro-batches per rank. Checkpoints go to
`<out>/step-XXXXXXXX/` every `save_interval` steps and to `<out>/final/`; a start resumes from the newest complete
`step-*`. SIGUSR1/SIGTERM: checkpoint at the current step, exit with code 3 (requeue). docs/pretrain.md has the rest.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from proxlab.experiments.spec import StageResult, StageSpec, atomic_write_text, read_jsonl, stage_cli

SUMMARY = "train_summary.json"
# Train knobs the planner leaves out of the hashed config (they do not change the result): spec.runtime carries them.
UNHASHED = {"log_interval": 5, "num_workers": 0, "compile": False, "keep_checkpoints": None,
            "activation_checkpointing": False, "deterministic": None}
TRAIN_DEFAULTS = {"early_stop_step": None, "warmup_steps": 0, "schedule": "cosine", "min_lr": 0.0,
                  "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0,
                  "precision": "32-true", "seed": 1234, "strategy": "auto", "wsd_stable_steps": None}
REQUIRED = ("seq_len", "global_batch_size", "micro_batch_size", "max_steps", "lr", "save_interval")


def train_options(spec: StageSpec) -> dict[str, Any]:
    """The TrainConfig dict with defaults filled and the unhashed knobs taken from the config, else spec.runtime."""
    if "train" not in spec.config or "model" not in spec.config:
        raise KeyError("pretrain: spec.config needs 'model' and 'train' sections")
    train = {**TRAIN_DEFAULTS, **spec.config["train"]}
    for key, default in UNHASHED.items():
        train[key] = train.get(key, spec.runtime.get(key, default))
    missing = [k for k in REQUIRED if train.get(k) is None]
    if missing:
        raise KeyError(f"pretrain: spec.config['train'] lacks {missing}")
    stop_step = int(train["early_stop_step"] or train["max_steps"])
    if not 0 < stop_step <= int(train["max_steps"]):
        raise ValueError(f"train.early_stop_step={train['early_stop_step']} must lie in (0, max_steps]")
    train["stop_step"] = stop_step
    return train


def grad_accum_steps(train: dict[str, Any], world_size: int) -> int:
    per_pass = int(train["micro_batch_size"]) * world_size
    if int(train["global_batch_size"]) % per_pass:
        raise ValueError(f"train.global_batch_size={train['global_batch_size']} is not divisible by "
                         f"micro_batch_size x world size = {train['micro_batch_size']} x {world_size}")
    return int(train["global_batch_size"]) // per_pass


def main(spec: StageSpec) -> StageResult:
    from proxlab.pretrain.data import data_info
    from proxlab.pretrain.signals import StopFlag

    train = train_options(spec)
    grad_accum_steps(train, int(spec.runtime.get("devices") or 1) * int(spec.runtime.get("num_nodes") or 1))
    info = data_info(spec.input("data"))
    if int(info.get("seq_len", train["seq_len"])) != int(train["seq_len"]):
        raise ValueError(f"train.seq_len={train['seq_len']} but {spec.input('data')} holds windows of seq_len "
                         f"{info['seq_len']}: rerun tokenize with this seq_len")
    if (spec.out / "final" / "COMPLETE").is_file() and (spec.out / SUMMARY).is_file():  # killed after the end
        return _result(json.loads((spec.out / SUMMARY).read_text()))
    stop = StopFlag().install()  # from the start: a signal during setup checkpoints at the first step boundary
    try:
        return fit(spec, train, info, stop)
    finally:
        stop.uninstall()


def fit(spec: StageSpec, train: dict[str, Any], info: dict[str, Any], stop) -> StageResult:
    # --- processes first: a local multi-process launch re-runs this command for ranks 1.. ------------------------
    from proxlab.pretrain.distributed import is_local_child, make_fabric, set_threads

    threads = set_threads(spec.runtime)
    fabric = make_fabric(spec.runtime, train)
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    spec.runtime.update(rank=rank, world_size=world)  # so run_stage lets only rank 0 write manifest and _SUCCESS

    import torch
    from lightning.fabric.strategies import FSDPStrategy
    from litgpt.model import GPT

    from proxlab.experiments.flops import non_embedding_params, total_params, training_flops
    from proxlab.experiments.tracking import MetricsLogger
    from proxlab.pretrain import checkpoint
    from proxlab.pretrain.data import TrainData
    from proxlab.pretrain.model import build_config, init_weights, load_initial_weights
    from proxlab.pretrain.schedule import lr_at
    from proxlab.pretrain.signals import EXIT_REQUEUE

    data_dir, tokenizer_dir, out = spec.input("data"), spec.input("tokenizer"), spec.out
    seq_len, micro_bs, stop_step = int(train["seq_len"]), int(train["micro_batch_size"]), train["stop_step"]
    accum = grad_accum_steps(train, world)
    deterministic = train["deterministic"]
    if deterministic if deterministic is not None else fabric.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    # --- model, optimizer, data ------------------------------------------------------------------------------------
    cfg = build_config(spec.config["model"], tokenizer_dir)
    if seq_len > cfg.block_size:
        raise ValueError(f"train.seq_len={seq_len} exceeds the model's block_size={cfg.block_size}")
    fabric.seed_everything(int(train["seed"]))
    fsdp = isinstance(fabric.strategy, FSDPStrategy)
    with fabric.init_module(empty_init=fsdp):
        model = GPT(cfg)
    init_weights(model, cfg.n_layer, cfg.n_embd, materialize=not fsdp)
    model.max_seq_length = seq_len
    init_ckpt = spec.config["model"].get("init_checkpoint")
    if init_ckpt and not fsdp:
        model.load_state_dict(load_initial_weights(init_ckpt))
    n_total, n_non_emb = total_params(cfg), non_embedding_params(cfg)
    fabric.print(f"[proxlab] pretrain: {cfg.name}, {n_total:,} params ({n_non_emb:,} non-embedding), {world} rank(s)"
                 f" x {threads} thread(s), grad accum {accum}, {stop_step} steps")
    if train["compile"]:
        model = torch.compile(model)
    model = fabric.setup(model)
    if init_ckpt and fsdp:
        from lightning.fabric.strategies.model_parallel import _load_raw_module_state

        _load_raw_module_state(load_initial_weights(init_ckpt), model._forward_module, world_size=world)
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(
        model.parameters(), lr=float(train["lr"]), weight_decay=float(train["weight_decay"]),
        betas=(float(train["beta1"]), float(train["beta2"])), eps=float(train["eps"]),
        fused=fabric.device.type == "cuda"))
    data = TrainData(data_dir, seq_len, micro_bs, int(train["seed"]), int(train["num_workers"] or 0))

    # --- resume from the newest complete checkpoint ----------------------------------------------------------------
    step, loss_value = 0, float("nan")
    if rank == 0:
        checkpoint.clean_partial(out)
    fabric.barrier()
    ckpt = checkpoint.latest_checkpoint(out)
    if ckpt is not None:
        state, data_state = checkpoint.load(fabric, ckpt, model, optimizer)
        data.load_state_dict(data_state)
        step, loss_value = int(state["step"]), float(state.get("loss", float("nan")))
        fabric.print(f"[proxlab] pretrain: resumed from {ckpt} at step {step} (epoch {data.epoch})")
        if rank == 0:
            _truncate_metrics(out / "metrics.jsonl", step)
    logger = MetricsLogger.for_stage(spec, rank)  # W&B id derived from (run_dir, stage): the same on every restart
    if logger.wandb_id:
        fabric.print(f"[proxlab] pretrain: W&B run id {logger.wandb_id}")

    flops_per_step = _measure_flops(cfg, micro_bs, seq_len) * accum * world  # FlopCounterMode, fwd + bwd
    peak = _peak_flops(fabric)
    tokens_per_step = int(train["global_batch_size"]) * seq_len
    windows = int(info["windows"])
    log_interval, save_interval = max(1, int(train["log_interval"])), int(train["save_interval"])

    def save(name: str, with_resume_state: bool) -> None:
        trainer_state = {"step": step, "tokens": step * tokens_per_step, "epoch": data.epoch, "loss": loss_value,
                         "max_steps": train["max_steps"], "early_stop_step": train["early_stop_step"]}
        checkpoint.save(fabric, out, name, model, cfg, tokenizer_dir, trainer_state,
                        optimizer=optimizer if with_resume_state else None,
                        data_state=data.state_dict() if with_resume_state else None)

    # --- the loop ----------------------------------------------------------------------------------------------------
    fabric.barrier()
    t_start = t_log = time.perf_counter()
    step_start, step_log, epoch_seen, requeue = step, step, data.epoch, False
    while step < stop_step:
        lr = lr_at(step, train)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = torch.zeros((), device=fabric.device)
        for micro in range(accum):
            batch = data.next().to(fabric.device)
            x, y = batch[:, :seq_len].long(), batch[:, 1:seq_len + 1].long()
            with fabric.no_backward_sync(model, enabled=micro < accum - 1):
                loss = _loss(model(x), y)
                fabric.backward(loss / accum)
            step_loss += loss.detach() / accum
        if train["grad_clip"]:
            fabric.clip_gradients(model, optimizer, max_norm=float(train["grad_clip"]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        if data.epoch != epoch_seen:
            fabric.print(f"[proxlab] pretrain: epoch {data.epoch} began during step {step}")
            epoch_seen = data.epoch
        if step % log_interval == 0 or step == stop_step:
            loss_value = float((fabric.all_reduce(step_loss, reduce_op="mean") if world > 1 else step_loss).item())
            now = time.perf_counter()
            dt, n = now - t_log, step - step_log
            metrics = {"loss": loss_value, "lr": lr, "tokens": step * tokens_per_step,
                       "tokens_per_s": n * tokens_per_step / dt, "step_time_s": dt / n,
                       "flops_per_step": flops_per_step, "flops_per_s": n * flops_per_step / dt,
                       "epoch": data.epoch, "epochs": step * int(train["global_batch_size"]) / windows}
            if peak:
                metrics["mfu"] = metrics["flops_per_s"] / (peak * world)
            logger.log(metrics, step=step)
            fabric.print(f"step {step}/{stop_step} | loss {loss_value:.4f} | lr {lr:.3e} | "
                         f"{metrics['tokens_per_s']:,.0f} tok/s | epoch {data.epoch}")
            t_log, step_log = now, step
        requeue = step < stop_step and stop.any_rank(fabric)
        if step % save_interval == 0 or requeue:
            save(checkpoint.step_dir_name(step), with_resume_state=True)
            if rank == 0:
                checkpoint.prune(out, train["keep_checkpoints"])
        if requeue:
            break
    train_s = time.perf_counter() - t_start

    if requeue:
        fabric.print(f"[proxlab] pretrain: signal {stop.signum}: saved step {step}; exit {EXIT_REQUEUE} to requeue")
        logger.close()
        raise SystemExit(0 if is_local_child(fabric) else EXIT_REQUEUE)

    # --- the end: validation, final checkpoint, summary ----------------------------------------------------------
    val_loss = _validate(fabric, model, data_dir, seq_len, micro_bs)
    save("final", with_resume_state=False)
    tokens = step * tokens_per_step
    summary = {
        "steps": step, "tokens": tokens, "epochs": tokens / (windows * seq_len), "final_loss": loss_value,
        "val_loss": val_loss, "params": n_total, "non_embedding_params": n_non_emb,
        "measured_flops_per_step": flops_per_step, "train_flops": training_flops(cfg, tokens),
        "tokens_per_s": (step - step_start) * tokens_per_step / train_s if step > step_start else None,
        "train_seconds": train_s, "world_size": world, "grad_accum": accum, "resumed_from_step": step_start,
        "wandb_id": logger.wandb_id, "model": cfg.name,
    }
    if rank == 0:
        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2, sort_keys=True))
        logger.summary({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    logger.close()
    fabric.barrier()
    return _result(summary)


def _result(summary: dict[str, Any]) -> StageResult:
    return StageResult(
        counts={"tokens": summary["tokens"], "steps": summary["steps"], "epochs": summary["epochs"]},
        flops={"train": summary["train_flops"]},
        extra={k: summary.get(k) for k in ("final_loss", "val_loss", "params", "non_embedding_params",
                                           "measured_flops_per_step", "tokens_per_s", "wandb_id", "model")},
    )


def _loss(logits, targets):
    from litgpt.utils import chunked_cross_entropy

    return chunked_cross_entropy(logits, targets)


def _measure_flops(cfg, micro_batch_size: int, seq_len: int) -> float:
    """FLOPs of one micro-batch forward + backward, counted by PyTorch's FlopCounterMode on a meta-device copy."""
    import torch
    from lightning.fabric.utilities.throughput import measure_flops
    from litgpt.model import GPT

    with torch.device("meta"):
        meta_model = GPT(cfg)
        meta_model.max_seq_length = seq_len
        x = torch.randint(0, 1, (micro_batch_size, seq_len))
        return float(measure_flops(meta_model, lambda: meta_model(x), lambda y: _loss(y, x)))


def _peak_flops(fabric) -> float | None:
    """Peak FLOP/s of one device at the training dtype (Lightning's table; None on CPU and unknown GPUs)."""
    from lightning.fabric.utilities.throughput import _plugin_to_compute_dtype, get_available_flops

    try:
        return get_available_flops(fabric.device, _plugin_to_compute_dtype(fabric.strategy.precision))
    except Exception:  # noqa: BLE001  (an unknown device is not an error)
        return None


def _validate(fabric, model, data_dir: Path, seq_len: int, micro_batch_size: int,
              max_batches: int = 50) -> float | None:
    """Mean loss over up to `max_batches` val micro-batches per rank (summed across ranks), or None without val."""
    import torch

    from proxlab.pretrain.data import val_batches

    total = torch.zeros(2, device=fabric.device)
    model.eval()
    with torch.no_grad():
        for batch in val_batches(data_dir, seq_len, micro_batch_size, max_batches):
            batch = batch.to(fabric.device)
            x, y = batch[:, :seq_len].long(), batch[:, 1:seq_len + 1].long()
            n = float(x.shape[0])
            total += torch.stack([_loss(model(x), y).float() * n, total.new_tensor(n)])
    model.train()
    if fabric.world_size > 1:
        total = fabric.all_reduce(total, reduce_op="sum")
    return float(total[0] / total[1]) if total[1] > 0 else None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics.jsonl records past the resumed step: they belong to the interrupted attempt."""
    rows = read_jsonl(path)
    kept = [r for r in rows if r.get("step") is None or r["step"] <= step]
    if len(kept) != len(rows):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


if __name__ == "__main__":
    stage_cli(main)
