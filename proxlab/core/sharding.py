"""THE shard executor: every sharded stage (rules, generate, apply, ...) hands it its shards, a `process(index, path)
-> ShardStats` and a `check()`, and the executor alone decides placement, waiting and finalizing.

Placement comes from the stage spec's runtime (the orchestrator sets it):

* **SPMD** (`srun`, every rank runs the stage): shard i belongs to rank i % world. Rank 0 waits until every shard is
  finished, then finalizes; the other ranks leave after their own shards (the orchestrator makes them wait for the
  stage's `_SUCCESS`). Ranks take each shard under its claim lock, so the ranks of *several jobs* that run the same
  stage (experiments of a sweep submitted as jobs share the prepared corpus) split it: a rank skips a shard another
  process holds and waits for it (doing it itself if that holder dies), and the rank 0 that takes the finalize lock
  finalizes while the other jobs' rank 0 wait for its `_SUCCESS`.
* **Job array** (`runtime.array`, `slurm/refine_array.sh`), whose tasks may run one after another (`%2` throttles) or
  be resubmitted alone: a task takes every open shard that no live task holds (a per-shard flock, released when its
  holder dies), then leaves if others still hold shards. The task that sees every shard finished takes the finalize
  lock and finalizes; no task ever waits for a shard it cannot own.

A shard is finished when its `shard-NNNNN.json` stats file exists; it is written after `process` returned (whose
outputs are written atomically), so an interrupted stage redoes only unfinished shards and never a finished one.
Finalizing means: sum the shards' stats, run the stage's `check()`, and only then return the totals, so that
`run_stage` writes the manifest and, last, `_SUCCESS`. A failing check raises: the stage exits non-zero, no `_SUCCESS`.

Standard library only (the vLLM environment runs sharded stages too).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from proxlab.core import logs
from proxlab.core.logs import get_logger
from proxlab.core.stage import StageSpec, atomic_write_text, rank_and_world

log = get_logger("sharding")


@dataclass
class ShardStats:
    """Counts of one shard; summed over shards into the stage's stats, reasons and all."""

    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def count(self, key: str, n: float = 1) -> None:
        self.extra[key] = self.extra.get(key, 0) + n

    def add(self, other: "ShardStats") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.chars_in += other.chars_in
        self.chars_out += other.chars_out
        for k, v in other.dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + v
        for k, v in other.extra.items():
            self.extra[k] = self.extra.get(k, 0) + v

    def to_dict(self) -> dict[str, Any]:
        return {"docs_in": self.docs_in, "docs_out": self.docs_out, "chars_in": self.chars_in,
                "chars_out": self.chars_out, "dropped": dict(sorted(self.dropped.items())), "extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShardStats":
        return cls(d["docs_in"], d["docs_out"], d["chars_in"], d["chars_out"], dict(d["dropped"]), dict(d["extra"]))


@dataclass(frozen=True)
class Placement:
    """Which process this is among those running the stage, and how they share its shards."""

    rank: int
    world: int
    array: bool  # a job-array task (claims open shards) rather than an SPMD rank (owns i % world)

    @classmethod
    def of(cls, spec: StageSpec) -> "Placement":
        rank, world = rank_and_world(spec.runtime.get("rank"), spec.runtime.get("world_size"))
        return cls(rank, world, bool(spec.runtime.get("array")))


@dataclass
class ShardWork:
    """What a sharded stage supplies: its input shards (output i derives from input i) and two functions."""

    shards: list[Path]
    process: Callable[[int, Path], ShardStats]  # writes shard i's outputs atomically, returns its stats
    check: Callable[[], None]  # raises (saying why) when the finished outputs break the stage's contract
    desc: str = "shards"


def stats_path(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / f"shard-{index:05d}.json"


def open_shards(out_dir: Path, n: int) -> list[int]:
    return [i for i in range(n) if not stats_path(out_dir, i).exists()]


def run_shards(spec: StageSpec, work: ShardWork, wait_timeout_s: float = 7 * 24 * 3600,
               poll_s: float = 2.0) -> ShardStats | None:
    """Process this process's share of the shards; on the one process that finalizes, check the outputs and return
    the totals. Every other process gets None (and `run_stage` then writes neither manifest nor `_SUCCESS`)."""
    placement, out, n = Placement.of(spec), spec.out, len(work.shards)
    out.mkdir(parents=True, exist_ok=True)
    # core.logs.progress: a bar at a terminal, else periodic lines with rate and ETA (readable in a Slurm log); every
    # array task reports its own shards, of SPMD ranks rank 0
    progress = partial(logs.progress, desc=f"{spec.stage} ({work.desc})", unit="shards", logger=log, rank=0,
                       disable=not (placement.rank == 0 or placement.array))
    if placement.array:
        _claim_and_process(work, out, progress, placement)
        pending = open_shards(out, n)
        if pending:
            _log(f"{spec.stage}: task {placement.rank} has no open shard left; {len(pending)} shard(s) are held by "
                 f"other tasks (e.g. {pending[:3]}): the task that finishes the last one completes the stage")
            return None
        if not _take_finalize_lock(out):
            _log(f"{spec.stage}: every shard is finished and another task is completing the stage")
            return None
    else:
        mine = [i for i in range(n) if i % placement.world == placement.rank]
        todo = [i for i in mine if not stats_path(out, i).exists()]
        if len(mine) > len(todo):
            _log(f"{spec.stage}: {len(mine) - len(todo)} of rank {placement.rank}'s {len(mine)} shards already "
                 f"finished; redoing none of them")
        _process_own_shards(work, out, todo, progress, placement, wait_timeout_s, poll_s)
        if placement.rank != 0:
            return None
        _wait_for_all(out, n, wait_timeout_s, poll_s)
        if not _finalize_turn(out, wait_timeout_s, poll_s):
            _log(f"{spec.stage}: every shard is finished and another job completed the stage")
            return None
    total = ShardStats()
    for i in range(n):
        total.add(ShardStats.from_dict(json.loads(stats_path(out, i).read_text())))
    work.check()
    return total


def _process_one(work: ShardWork, out: Path, index: int, placement: Placement) -> None:
    t0 = time.perf_counter()
    stats = work.process(index, work.shards[index])
    by = {"rank": placement.rank, "world": placement.world, "array": placement.array, "host": socket.gethostname(),
          "pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"),
          "wall_s": round(time.perf_counter() - t0, 3)}  # provenance: who did this shard
    atomic_write_text(stats_path(out, index), json.dumps({**stats.to_dict(), "by": by}, sort_keys=True))


def shard_provenance(out_dir: Path, n: int) -> dict[int, dict[str, Any]]:
    """Which process finished each shard (rank or array task, host, pid, seconds)."""
    return {i: json.loads(stats_path(out_dir, i).read_text()).get("by", {}) for i in range(n)
            if stats_path(out_dir, i).exists()}


def _claim_and_process(work: ShardWork, out: Path, progress: Callable[[list[int]], Iterator[int]], placement: Placement) -> None:
    """Take any open shard nobody holds, so tasks that run one after another, or a failed task resubmitted alone,
    still cover every shard exactly once."""
    for i in progress(open_shards(out, len(work.shards))):
        _claim_one(work, out, i, placement)


def _claim_one(work: ShardWork, out: Path, index: int, placement: Placement) -> bool:
    """Do shard `index` under its claim lock unless another live process holds it or it is finished; whether this
    process did it."""
    with open(out / f".shard-{index:05d}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another task (or another job's rank) is on it
        if stats_path(out, index).exists():  # it may have finished while we got here
            return False
        _process_one(work, out, index, placement)
        return True


def _process_own_shards(work: ShardWork, out: Path, todo: list[int], progress: Callable[[list[int]], Iterator[int]], placement: Placement,
                        timeout_s: float, poll_s: float) -> None:
    """SPMD: this rank's unfinished shards, each under its claim lock. A shard held by a process of another job (the
    same stage needed by two experiments submitted as jobs) is skipped, then waited for; if its holder dies, its lock
    frees and this rank does it, so the rank leaves only when every shard it owns is finished."""
    for i in progress(todo):
        _claim_one(work, out, i, placement)
    deadline, announced = time.monotonic() + timeout_s, False
    while held := [i for i in todo if not stats_path(out, i).exists() and not _claim_one(work, out, i, placement)]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{out}: {len(held)} shard(s) (e.g. {held[:3]}) held by another process (another job "
                               f"running the same stage) not finished within {timeout_s:.0f} s")
        if not announced:
            _log(f"rank {placement.rank}: {len(held)} of its shard(s) (e.g. {held[:3]}) are being done by another job "
                 f"running the same stage; waiting for them")
            announced = True
        time.sleep(poll_s)


# Held until the process exits (run_stage writes the manifest after we return), by output directory and thread.
_FINALIZE_LOCKS: dict[tuple[str, int], Any] = {}


def _take_finalize_lock(out: Path, reentrant: bool = False) -> bool:
    """Whether this process may finalize `out`: it got the stage's finalize lock and no `_SUCCESS` exists yet.
    `reentrant`: a lock this thread already holds for `out` counts as got (an SPMD stage run again in one process, as
    tests do; array tasks simulated in one thread must not share it)."""
    held = (str(out), threading.get_ident())
    if reentrant and held in _FINALIZE_LOCKS:
        return not (out / "_SUCCESS").exists()
    fh = open(out / ".finalize.lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return False
    if (out / "_SUCCESS").exists():  # a task before us completed it
        fh.close()
        return False
    _FINALIZE_LOCKS.setdefault(held, fh)
    return True


def _finalize_turn(out: Path, timeout_s: float, poll_s: float) -> bool:
    """SPMD rank 0, every shard finished: whether this process finalizes. The rank 0 of another job running the
    same stage may hold the finalize lock: then wait for its `_SUCCESS`, or take over if it died without writing one
    (a failing check fails here again, naming what is wrong)."""
    deadline = time.monotonic() + timeout_s
    while not _take_finalize_lock(out, reentrant=True):
        if (out / "_SUCCESS").exists():
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"{out}: every shard is finished, but the process finalizing it wrote no _SUCCESS "
                               f"within {timeout_s:.0f} s")
        time.sleep(poll_s)
    return True


def _wait_for_all(out: Path, n: int, timeout_s: float, poll_s: float) -> None:
    deadline, announced = time.monotonic() + timeout_s, False
    while pending := open_shards(out, n):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{out}: {len(pending)} shard(s) (e.g. {pending[:3]}) not finished by the other ranks "
                               f"within {timeout_s:.0f} s")
        if not announced:
            _log(f"rank 0 waiting for {len(pending)} shard(s) of other ranks")
            announced = True
        time.sleep(poll_s)


def _log(msg: str) -> None:
    log.info(msg)
