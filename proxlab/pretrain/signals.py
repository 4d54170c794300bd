"""Preemption: SIGUSR1/SIGTERM set a flag; at the next optimizer-step boundary every rank learns whether any rank got
one (one all-reduce of a single number), all ranks save a checkpoint at that step, and the stage exits with
`EXIT_REQUEUE` so an orchestrator (proxlab.runner.launcher, Slurm `--requeue`) can start it again; the restart
resumes from that checkpoint.
"""

from __future__ import annotations

from proxlab.core.preemption import SIGNALS, StopFlag as _StopFlag

__all__ = ["SIGNALS", "StopFlag"]


class StopFlag(_StopFlag):
    """The core flag, plus the collective that makes every rank stop at the same step."""

    def any_rank(self, fabric) -> bool:
        """True when any rank was signalled (a collective: every rank must call it at the same step)."""
        if fabric.world_size == 1:
            return self.signum is not None
        import torch

        flag = torch.tensor([1.0 if self.signum is not None else 0.0], device=fabric.device)
        return bool(fabric.all_reduce(flag, reduce_op="sum").item() > 0)
