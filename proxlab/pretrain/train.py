"""Stage "pretrain": train a LitGPT model on a tokenize artifact with Lightning Fabric, in a proxlab-owned loop.

    python -m proxlab.pretrain.train --spec spec.json

spec.config = {"model": ModelConfig fields (no tokenizer), "train": TrainConfig's hashed fields}; inputs "data" (a
tokenize artifact) and "tokenizer". spec.runtime: "accelerator", "devices", "num_nodes" (default cpu/1/1), "settings"
(TrainConfig's runtime fields: log_interval, num_workers, compile, ...), optionally "threads". The stage turns them
into typed configs once (`proxlab.core.config.load`; defaults are the schema's) and takes steps, tokens and gradient
accumulation from `training_plan`.

It reads top to bottom like LitGPT's scripts: `main` checks the spec, `setup` builds what one process trains with (a
`Run`: Fabric, model, optimizer, data, logger, plan, resumed position), `fit` runs the optimizer steps, `finish`
validates, saves `final/` and returns the StageResult (rank 0; None on the other ranks, which write nothing).

The loop stops at exactly `early_stop_step or max_steps` optimizer steps; the LR schedule always spans `max_steps`.
Checkpoints go to `<out>/step-XXXXXXXX/` every `save_interval` steps and to `<out>/final/`; a start resumes from the
newest complete `step-*`. SIGUSR1/SIGTERM: checkpoint at the current step, exit with code 3 (requeue).
docs/pretrain.md has the rest.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from proxlab.core.config import ModelConfig, TrainConfig, TrainingPlan, load, training_plan
from proxlab.core.logs import get_logger
from proxlab.core.stage import (EXIT_REQUEUE, StageResult, StageSpec, atomic_write_text, rank_and_world,
                                record_process, stage_cli)
from proxlab.pretrain.data import data_info
from proxlab.pretrain.checkpoint import truncate_metrics
from proxlab.pretrain.distributed import set_determinism, world_size
from proxlab.pretrain.signals import StopFlag

log = get_logger("pretrain")

SUMMARY = "train_summary.json"


def main(spec: StageSpec) -> StageResult | None:
    train, model = stage_configs(spec)
    training_plan(train, world_size(spec.runtime))  # a batch that does not split fails before any process starts
    info = data_info(spec.input("data"))
    if info.get("seq_len", train.seq_len) != train.seq_len:
        raise ValueError(f"train.seq_len={train.seq_len} but {spec.input('data')} holds windows of seq_len "
                         f"{info['seq_len']}: rerun tokenize with this seq_len")
    if (spec.out / "final" / "COMPLETE").is_file() and (spec.out / SUMMARY).is_file():  # killed after the end
        rank, _ = rank_and_world(spec.runtime.get("rank"), spec.runtime.get("world_size"))
        return _result(json.loads((spec.out / SUMMARY).read_text())) if rank == 0 else None
    stop = StopFlag().install()  # from the start: a signal during setup checkpoints at the first step boundary
    try:
        run = setup(spec, train, model, info)
        if not fit(run, stop):
            exit_for_requeue(run, stop)
        return finish(run)
    finally:
        stop.uninstall()


def stage_configs(spec: StageSpec) -> tuple[TrainConfig, ModelConfig]:
    """The spec's typed configs: hashed settings from spec.config, runtime ones from spec.runtime["settings"]."""
    missing = [k for k in ("model", "train") if k not in spec.config]
    if missing:
        raise KeyError(f"pretrain: spec.config lacks {missing} (it needs 'model' and 'train' sections)")
    train = load(TrainConfig, spec.config["train"], spec.runtime.get("settings"), where="train")
    return train, load(ModelConfig, spec.config["model"], where="model")


@dataclass
class Run:
    """What `setup` builds for one training process, and where the loop stands."""

    spec: StageSpec
    train: TrainConfig
    plan: TrainingPlan  # grad_accum, stop_step, tokens_per_step for this world size
    fabric: Any
    cfg: Any  # the litgpt.Config
    model: Any
    optimizer: Any
    data: Any  # TrainData: this rank's endless, resumable stream of micro-batches
    windows: int  # training windows in the tokenize artifact (epochs = sequences seen / windows)
    logger: Any = None  # MetricsLogger (rank 0 writes)
    flops_per_step: float = 0.0  # measured: forward + backward of one optimizer step over all ranks
    peak_flops: float | None = None  # of one device (None on CPU)
    step: int = 0  # optimizer steps taken
    loss: float = math.nan  # the last logged loss
    resumed_from: int = 0
    train_s: float = 0.0  # wall time of this start's loop

    @property
    def rank(self) -> int:
        return self.fabric.global_rank


# ---------------------------------------------------------------------------------------------------------------------
# setup


def setup(spec: StageSpec, train: TrainConfig, model_cfg: ModelConfig, info: dict[str, Any]) -> Run:
    """Processes, model, optimizer, data, the resumed position, the logger and the measured FLOPs of a step."""
    from proxlab.core.tracking import MetricsLogger
    from proxlab.pretrain.data import TrainData
    from proxlab.pretrain.distributed import make_fabric, set_threads

    threads = set_threads(spec.runtime)
    fabric = make_fabric(spec.runtime, train)
    fabric.launch()  # processes first: a local multi-process launch re-runs this command for ranks 1..
    # Pretraining sees all of its node's GPUs (docs/slurm.md, "GPU binding"): record the one Fabric takes.
    record_process(spec, "fabric", fabric_local_rank=fabric.local_rank, fabric_global_rank=fabric.global_rank,
                   fabric_device=str(fabric.device))
    plan = training_plan(train, fabric.world_size)
    set_determinism(fabric, train)
    cfg, model = build_model(fabric, model_cfg, train, spec.input("tokenizer"))
    _print_model(fabric, cfg, plan, threads)
    model, optimizer = setup_training(fabric, model, model_cfg, train)
    data = TrainData(spec.input("data"), train.seq_len, train.micro_batch_size,
                     train.seed if train.data_seed is None else train.data_seed, train.num_workers)
    run = Run(spec, train, plan, fabric, cfg, model, optimizer, data, windows=info["windows"])
    resume(run)
    run.logger = MetricsLogger.for_stage(spec, run.rank)  # W&B id derived from the artifact: the same on restarts
    if run.logger.wandb_id:
        log.info(f"pretrain: W&B run id {run.logger.wandb_id}")
    run.flops_per_step = (_measure_flops(cfg, train.micro_batch_size, train.seq_len)  # FlopCounterMode, fwd + bwd
                          * plan.grad_accum * plan.world_size)
    run.peak_flops = _peak_flops(fabric)
    return run


def build_model(fabric, model_cfg: ModelConfig, train: TrainConfig, tokenizer_dir: Path):
    """(litgpt.Config, GPT): GPT-NeoX init after seeding, or the initial weights; under FSDP on the meta device (its
    `fabric.setup` materializes it, and `setup_training` loads initial weights into the shards)."""
    from lightning.fabric.strategies import FSDPStrategy
    from litgpt.model import GPT

    from proxlab.pretrain.model import build_config, init_weights, load_initial_weights

    cfg = build_config(model_cfg, tokenizer_dir)
    if train.seq_len > cfg.block_size:
        raise ValueError(f"train.seq_len={train.seq_len} exceeds the model's block_size={cfg.block_size}")
    fabric.seed_everything(train.seed)
    fsdp = isinstance(fabric.strategy, FSDPStrategy)
    with fabric.init_module(empty_init=fsdp):
        model = GPT(cfg)
    init_weights(model, cfg.n_layer, cfg.n_embd, materialize=not fsdp)
    model.max_seq_length = train.seq_len
    if model_cfg.init_checkpoint and not fsdp:
        model.load_state_dict(load_initial_weights(model_cfg.init_checkpoint))
    return cfg, model


def _print_model(fabric, cfg, plan: TrainingPlan, threads: int) -> None:
    from proxlab.models.params import param_counts

    total, non_embedding = param_counts(cfg)
    log.info(f"pretrain: {cfg.name}, {total:,} params ({non_embedding:,} non-embedding), "
             f"{plan.world_size} rank(s) x {threads} thread(s), grad accum {plan.grad_accum}, "
             f"{plan.stop_step} steps")


def setup_training(fabric, model, model_cfg: ModelConfig, train: TrainConfig):
    """(model, optimizer) set up by Fabric: optional torch.compile, the strategy's wrapping, AdamW."""
    import torch
    from lightning.fabric.strategies import FSDPStrategy

    if train.compile:
        model = torch.compile(model)
    model = fabric.setup(model)
    if model_cfg.init_checkpoint and isinstance(fabric.strategy, FSDPStrategy):
        from lightning.fabric.strategies.model_parallel import _load_raw_module_state

        from proxlab.pretrain.model import load_initial_weights

        _load_raw_module_state(load_initial_weights(model_cfg.init_checkpoint), model._forward_module,
                               world_size=fabric.world_size)
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(
        model.parameters(), lr=train.lr, weight_decay=train.weight_decay, betas=(train.beta1, train.beta2),
        eps=train.eps, fused=fabric.device.type == "cuda"))
    return model, optimizer


def resume(run: Run) -> None:
    """Continue from the newest complete `step-*` (weights, optimizer, data position, RNG), after removing what a
    killed save left; metrics.jsonl records of the interrupted attempt past that step are dropped."""
    from proxlab.pretrain import checkpoint

    out = run.spec.out
    if run.rank == 0:
        checkpoint.clean_partial(out)
    run.fabric.barrier()
    ckpt = checkpoint.latest_checkpoint(out)
    if ckpt is None:
        return
    state, data_state = checkpoint.load(run.fabric, ckpt, run.model, run.optimizer)
    run.data.load_state_dict(data_state)
    run.step, run.loss = int(state["step"]), float(state.get("loss", math.nan))
    run.resumed_from = run.step
    log.info(f"pretrain: resumed from {ckpt} at step {run.step} (epoch {run.data.epoch})")
    if run.rank == 0:
        truncate_metrics(out / "metrics.jsonl", run.step)


# ---------------------------------------------------------------------------------------------------------------------
# fit


@dataclass
class _Clock:
    """Wall time since the loop began and since the last log line."""

    start: float
    last: float
    last_step: int


def fit(run: Run, stop: StopFlag) -> bool:
    """Optimizer steps up to `plan.stop_step`: log every `log_interval` steps (and the last), checkpoint every
    `save_interval`. False when a signal stopped it (every rank saved the current step first)."""
    from proxlab.pretrain import checkpoint
    from proxlab.pretrain.schedule import lr_at

    fabric, train, stop_step = run.fabric, run.train, run.plan.stop_step
    fabric.barrier()
    now = time.perf_counter()
    clock, epoch_seen = _Clock(now, now, run.step), run.data.epoch
    while run.step < stop_step:
        lr = lr_at(run.step, train)
        step_loss = train_step(run, lr)
        run.step += 1
        if run.data.epoch != epoch_seen:
            log.info(f"pretrain: epoch {run.data.epoch} began during step {run.step}")
            epoch_seen = run.data.epoch
        if run.step % train.log_interval == 0 or run.step == stop_step:
            log_step(run, step_loss, lr, clock)
        requeue = run.step < stop_step and stop.any_rank(fabric)
        if run.step % train.save_interval == 0 or requeue:
            save(run, checkpoint.step_dir_name(run.step), with_resume_state=True)
            if run.rank == 0:
                checkpoint.prune(run.spec.out, train.keep_checkpoints)
        if requeue:
            return False
    run.train_s = time.perf_counter() - clock.start
    return True


def train_step(run: Run, lr: float):
    """One optimizer step at `lr` over `plan.grad_accum` micro-batches (gradients synced on the last one only);
    returns this rank's mean micro-batch loss (a detached tensor)."""
    import torch

    fabric, model, optimizer = run.fabric, run.model, run.optimizer
    accum, seq_len = run.plan.grad_accum, run.train.seq_len
    for group in optimizer.param_groups:
        group["lr"] = lr
    step_loss = torch.zeros((), device=fabric.device)
    for micro in range(accum):
        batch = run.data.next().to(fabric.device)
        x, y = batch[:, :seq_len].long(), batch[:, 1:seq_len + 1].long()
        with fabric.no_backward_sync(model, enabled=micro < accum - 1):
            loss = _loss(model(x), y)
            fabric.backward(loss / accum)
        step_loss += loss.detach() / accum
    if run.train.grad_clip:
        fabric.clip_gradients(model, optimizer, max_norm=run.train.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss


def log_step(run: Run, step_loss, lr: float, clock: _Clock) -> None:
    """The step's loss (mean over ranks), LR, throughput and progress, to metrics.jsonl / W&B and stdout."""
    fabric, plan, step = run.fabric, run.plan, run.step
    run.loss = float((fabric.all_reduce(step_loss, reduce_op="mean") if plan.world_size > 1 else step_loss).item())
    now = time.perf_counter()
    dt, n = now - clock.last, step - clock.last_step
    metrics = {"loss": run.loss, "lr": lr, "tokens": step * plan.tokens_per_step,
               "tokens_per_s": n * plan.tokens_per_step / dt, "step_time_s": dt / n,
               "flops_per_step": run.flops_per_step, "flops_per_s": n * run.flops_per_step / dt,
               "epoch": run.data.epoch, "epochs": step * run.train.global_batch_size / run.windows}
    if run.peak_flops:
        metrics["mfu"] = metrics["flops_per_s"] / (run.peak_flops * plan.world_size)
    run.logger.log(metrics, step=step)
    log.info(f"step {step}/{plan.stop_step} | loss {run.loss:.4f} | lr {lr:.3e} | "
             f"{metrics['tokens_per_s']:,.0f} tok/s | epoch {run.data.epoch}")
    clock.last, clock.last_step = now, step


def save(run: Run, name: str, with_resume_state: bool) -> None:
    """Checkpoint `name` (every rank calls this); with the resume state for `step-*`, weights only for `final`."""
    from proxlab.pretrain import checkpoint

    trainer_state = {"step": run.step, "tokens": run.step * run.plan.tokens_per_step, "epoch": run.data.epoch,
                     "loss": run.loss, "max_steps": run.train.max_steps, "early_stop_step": run.train.early_stop_step}
    checkpoint.save(run.fabric, run.spec.out, name, run.model, run.cfg, run.spec.input("tokenizer"), trainer_state,
                    optimizer=run.optimizer if with_resume_state else None,
                    data_state=run.data.state_dict() if with_resume_state else None)


def exit_for_requeue(run: Run, stop: StopFlag) -> NoReturn:
    """After a signal's checkpoint: exit with EXIT_REQUEUE (ranks Fabric's local launcher started exit 0, so its
    watchdog does not kill rank 0 before it reports the code)."""
    from proxlab.pretrain.distributed import is_local_child

    log.info(f"pretrain: signal {stop.signum}: saved step {run.step}; exit {EXIT_REQUEUE} to requeue")
    run.logger.close()
    raise SystemExit(0 if is_local_child(run.fabric) else EXIT_REQUEUE)


# ---------------------------------------------------------------------------------------------------------------------
# finish


def finish(run: Run) -> StageResult | None:
    """Validation loss, `final/`, `train_summary.json`; the StageResult on rank 0, None on the other ranks."""
    val_loss = _validate(run.fabric, run.model, run.spec.input("data"), run.train.seq_len, run.train.micro_batch_size)
    save(run, "final", with_resume_state=False)
    summary = _summary(run, val_loss)
    if run.rank == 0:
        atomic_write_text(run.spec.out / SUMMARY, json.dumps(summary, indent=2, sort_keys=True))
        run.logger.summary({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    run.logger.close()
    run.fabric.barrier()
    return _result(summary) if run.rank == 0 else None


def _summary(run: Run, val_loss: float | None) -> dict[str, Any]:
    from proxlab.core.flops import training_flops
    from proxlab.models.params import param_counts

    plan, steps_here = run.plan, run.step - run.resumed_from
    total, non_embedding = param_counts(run.cfg)
    return {
        "steps": plan.stop_step, "tokens": plan.tokens, "epochs": plan.tokens / (run.windows * run.train.seq_len),
        "final_loss": run.loss, "val_loss": val_loss, "params": total, "non_embedding_params": non_embedding,
        "measured_flops_per_step": run.flops_per_step, "train_flops": training_flops(non_embedding, plan.tokens),
        "tokens_per_s": steps_here * plan.tokens_per_step / run.train_s if steps_here > 0 else None,
        "train_seconds": run.train_s, "world_size": plan.world_size, "grad_accum": plan.grad_accum,
        "resumed_from_step": run.resumed_from, "wandb_id": run.logger.wandb_id, "model": run.cfg.name,
    }


def _result(summary: dict[str, Any]) -> StageResult:
    return StageResult(
        counts={"tokens": summary["tokens"], "steps": summary["steps"], "epochs": summary["epochs"]},
        flops={"train": summary["train_flops"]},
        extra={k: summary.get(k) for k in ("final_loss", "val_loss", "params", "non_embedding_params",
                                           "measured_flops_per_step", "tokens_per_s", "wandb_id", "model")},
    )


# ---------------------------------------------------------------------------------------------------------------------
# helpers


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


if __name__ == "__main__":
    stage_cli(main)
