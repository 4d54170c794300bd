"""Lightning Fabric for a pretrain spec: accelerator, devices and nodes from spec.runtime; strategy, precision and
activation checkpointing from the typed TrainConfig; CPU threads.

Strategy (train.strategy):
- one process: Fabric's single-device strategy.
- auto on CPU, or ddp: DDP (gloo on CPU, NCCL on GPU).
- auto on GPU, or fsdp: FSDP wrapping each transformer Block, full state dicts on save (LitGPT's choice);
  FULL_SHARD on one node, HYBRID_SHARD (shard within a node, replicate across nodes) on several, as the reference
  code trained its TLMs. `train.activation_checkpointing` checkpoints every Block under FSDP (the reference code did
  so for Mistral-7B); other strategies ignore it with a warning.
"""

from __future__ import annotations

import os
from typing import Any

from proxlab.core.config import CHOICES, ConfigError, TrainConfig
from proxlab.core.logs import get_logger

log = get_logger("pretrain")


def world_size(runtime: dict[str, Any]) -> int:
    """Processes the spec's runtime asks for: devices per node × nodes (1 × 1 when it names neither)."""
    return (runtime.get("devices") or 1) * (runtime.get("num_nodes") or 1)


def make_fabric(runtime: dict[str, Any], train: TrainConfig):
    """A Fabric on runtime's accelerator/devices/num_nodes, with train.strategy and train.precision."""
    import lightning as L
    from lightning.fabric.strategies import DDPStrategy, FSDPStrategy

    accelerator = runtime.get("accelerator") or "cpu"
    devices, num_nodes = runtime.get("devices") or 1, runtime.get("num_nodes") or 1
    if train.strategy not in CHOICES["train.strategy"]:  # check_train rejects it first; a hand-built config may not
        raise ConfigError("train.strategy", train.strategy, f"expected one of {list(CHOICES['train.strategy'])}")
    on_cpu = accelerator == "cpu"
    if devices * num_nodes == 1:
        strategy: Any = "auto"
    elif train.strategy == "ddp" or (train.strategy == "auto" and on_cpu):
        strategy = DDPStrategy(process_group_backend="gloo" if on_cpu else None)
    else:
        from litgpt.model import Block

        strategy = FSDPStrategy(
            auto_wrap_policy={Block},
            state_dict_type="full",
            sharding_strategy="HYBRID_SHARD" if num_nodes > 1 else "FULL_SHARD",
            activation_checkpointing_policy={Block} if train.activation_checkpointing else None,
        )
    if train.activation_checkpointing and not isinstance(strategy, FSDPStrategy):
        log.info(f"pretrain: train.activation_checkpointing applies to FSDP only; strategy here is "
                 f"{type(strategy).__name__ if not isinstance(strategy, str) else strategy}, so it is ignored")
    return L.Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                    precision=train.precision)


def set_threads(runtime: dict[str, Any]) -> int:
    """Intra-op threads: runtime["threads"], else this process's CPU share: under Slurm its task's CPUs, locally the
    usable cores divided among the processes Fabric starts on this machine."""
    import torch

    n = runtime.get("threads") or os.environ.get("SLURM_CPUS_PER_TASK")
    if not n:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        n = max(1, cores // (runtime.get("devices") or 1))
    torch.set_num_threads(int(n))
    return int(n)


def is_local_child(fabric) -> bool:
    """A rank that Fabric's own launcher started as a child of rank 0 (local multi-process runs, not Slurm/torchrun).

    Its parent watches it and SIGKILLs everything when a child exits non-zero, so such a rank exits 0 after a
    preemption checkpoint and lets rank 0 report the requeue code.
    """
    from lightning.fabric.plugins.environments import LightningEnvironment

    return fabric.global_rank != 0 and type(fabric.strategy.cluster_environment) is LightningEnvironment


def set_determinism(fabric, train) -> None:
    """Deterministic algorithms when `train.deterministic` asks, or by default on CPU (so a resumed CPU run matches
    exactly); `train`: a TrainConfig or a FinetuneConfig."""
    import torch

    on = train.deterministic if train.deterministic is not None else fabric.device.type == "cpu"
    if on:
        torch.use_deterministic_algorithms(True, warn_only=True)
