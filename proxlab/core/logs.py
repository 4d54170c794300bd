"""How every proxlab process talks: the ``proxlab`` logger, set up once per process, and progress that suits a Slurm log.

Under Slurm, 64 ranks write into one log file. So:

- rank 0 logs INFO and up as ``[proxlab] message``; every other rank logs only warnings and errors, prefixed with its
  rank (``[proxlab rank 5] WARNING: ...``), so the plan, banners and bars appear once;
- progress (`progress`) is a tqdm bar only on rank 0 *and* on a terminal; otherwise periodic lines with a rate and an
  ETA (a bar's carriage returns are garbage in a file), and nothing on other ranks;
- messages also go to the run's log file (``<run_dir>/run.log``), which the orchestrator and every stage process append
  to (one short line per write: safe for concurrent appenders), so one file holds the whole run;
- known floods from libraries are filtered: lm-eval warns "Custom kwargs can be passed to `--metadata`..." once per
  task built (about 70 lines per evaluation), which is advice for its CLI users, not a problem with the run.

Standard library only (core runs in both environments; tqdm is imported lazily and optional).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

LOGGER = "proxlab"
RUN_LOG = "run.log"
_OURS = "_proxlab_handler"  # marks the handlers setup_logging installed, so a second call replaces them

# (logger name, text in the message) of third-party records dropped: see the module docstring for why each.
SILENCED = (
    ("lm_eval.api.task", "Custom kwargs can be passed to `--metadata`"),
)

T = TypeVar("T")


def get_logger(name: str = "") -> logging.Logger:
    """The logger of a proxlab component: ``get_logger("refine.apply")`` -> ``proxlab.refine.apply``."""
    return logging.getLogger(f"{LOGGER}.{name}" if name else LOGGER)


def process_rank() -> int:
    """This process's global rank (Slurm, then torchrun, then the local rank Fabric's launcher gives the processes it
    starts on one machine), 0 outside a distributed launch. Array tasks are rank 0: each is its own job step."""
    for var in ("SLURM_PROCID", "RANK", "LOCAL_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


class RankFormatter(logging.Formatter):
    """``[proxlab] message`` on rank 0, ``[proxlab rank N] WARNING: message`` elsewhere. Also Hydra's job-logging
    formatter for the orchestrator (conf/config.yaml), so its console and its job log read the same."""

    def __init__(self, rank: int | None = None):
        super().__init__()
        rank = process_rank() if rank is None else rank
        self.prefix = "[proxlab]" if rank == 0 else f"[proxlab rank {rank}]"

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        text = f"{self.prefix} {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _DropNotices(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in str(record.msg)


def silence_library_floods() -> None:
    """Drop the known floods of SILENCED (idempotent)."""
    for name, text in SILENCED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) and f.text == text for f in logger.filters):
            logger.addFilter(_DropNotices(text))


def setup_logging(rank: int | None = None, log_file: Path | str | None = None, console: bool = True,
                  stream: TextIO | None = None) -> logging.Logger:
    """Configure the ``proxlab`` logger for this process (call again to change it: it replaces what it installed).

    ``console``: write to ``stream`` (stdout) ourselves. The orchestrator under Hydra passes False: Hydra's root
    handlers (its console and its job log) already show what propagates. ``log_file``: also append there (the run's
    ``run.log``).
    """
    rank = process_rank() if rank is None else rank
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if getattr(h, _OURS, False)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    formatter = RankFormatter(rank)
    handlers: list[logging.Handler] = []
    if console:
        handlers.append(logging.StreamHandler(stream or sys.stdout))
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8", delay=True))
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _OURS, True)
        logger.addHandler(handler)
    # With our own console handler, propagating would print twice wherever the root logger has one too.
    logger.propagate = not console
    silence_library_floods()
    return logger


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """A tqdm-like counter (``update(n)``, ``close()``) that is a tqdm bar on rank 0 at a terminal, else (rank 0) a
    line at the first update, every ``every_s`` seconds and at the end, with the count, rate and ETA; other ranks and
    ``disable=True`` show nothing."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", every_s: float = 30.0,
                 logger: logging.Logger | None = None, rank: int | None = None, disable: bool = False):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.logger = logger or get_logger()
        self.enabled = not disable and (process_rank() if rank is None else rank) == 0
        self.done, self.t0 = 0, time.perf_counter()
        self.last: float | None = None  # when the last line was written; None: none yet
        self.last_done = 0  # the count that line showed
        self.bar = None
        if self.enabled and is_terminal():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, desc=desc, unit=unit)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.last is None or now - self.last >= self.every_s or self.done == self.total:
            self._line(now)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done and self.last_done != self.done:
            self._line(time.perf_counter())

    def _line(self, now: float) -> None:
        self.logger.info(progress_line(self.desc, self.done, self.total, now - self.t0, self.unit))
        self.last, self.last_done = now, self.done

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             every_s: float = 30.0, logger: logging.Logger | None = None, rank: int | None = None,
             disable: bool = False) -> Iterator[T]:
    """Iterate ``items`` with a `ProgressBar`: a tqdm bar on rank 0 at a terminal, else (rank 0) periodic lines with
    the count, the rate and an ETA; other ranks show nothing."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with ProgressBar(total, desc, unit, every_s, logger, rank, disable) as bar:
        for item in items:
            yield item
            bar.update(1)


def progress_line(desc: str, done: int, total: int | None, elapsed_s: float, unit: str = "it") -> str:
    """``desc: 40/100 docs (40%), 12.5 docs/s, ETA 4.8 s`` (no total: no share and no ETA)."""
    rate = done / elapsed_s if elapsed_s > 0 else float("inf")
    rate_text = f"{rate:.3g} {unit}/s" if rate != float("inf") else f"- {unit}/s"
    if not total:
        return f"{desc}: {done} {unit}, {rate_text}"
    eta = (total - done) / rate if 0 < rate < float("inf") else 0.0
    return f"{desc}: {done}/{total} {unit} ({100 * done / total:.0f}%), {rate_text}, ETA {_duration(eta)}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
