"""The preemption signals a stage handles (Slurm's pre-timeout USR1, TERM from preemption or scancel) and the flag
they set. What a stage does with it differs (pretraining agrees across ranks at a step boundary and checkpoints;
evaluation stops after the next saved request), so stages subclass `StopFlag`; the stage then exits with
`EXIT_REQUEUE` and the orchestrator or slurm/run.sh requeues it."""

from __future__ import annotations

import signal
from typing import Any

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopFlag:
    """Install handlers for SIGNALS that note the signal (`signum`); `uninstall` puts the previous handlers back."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopFlag":
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, _frame) -> None:
        self.signum = signum
