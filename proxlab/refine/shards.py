"""Document shards on disk, and the sharded-work loop every corpus stage uses.

A corpus artifact is a directory of `docs-NNNNN.parquet` files with columns `id`, `text`, `source`, `meta` (a JSON
string). Stages that drop documents also write `dropped-NNNNN.parquet` (`id`, `reason`, and the text when auditing).
Work is split by shard: shard `i` belongs to rank `i % world_size`; a shard is finished when its `shard-NNNNN.json`
stats file exists (written last, atomically), so an interrupted stage redoes only unfinished shards.

Imports only pyarrow and the standard library: the vLLM environment uses this module too.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from proxlab.experiments.spec import ShardsPending, atomic_write_text

DOC_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())])
DROP_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("text", pa.string())])


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.parquet"


def list_shards(directory: Path, prefix: str = "docs") -> list[Path]:
    shards = sorted(Path(directory).glob(f"{prefix}-*.parquet"))
    return shards


def shard_index(path: Path) -> int:
    return int(Path(path).stem.rsplit("-", 1)[1])


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """Write via a temporary name and rename: a reader never sees a partial shard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def read_docs(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def iter_docs(directory: Path, prefix: str = "docs") -> Iterator[dict[str, Any]]:
    for shard in list_shards(directory, prefix):
        yield from read_docs(shard)


def count_rows(directory: Path, prefix: str = "docs") -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in list_shards(directory, prefix))


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


def stats_path(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / f"shard-{index:05d}.json"


def run_sharded(
    in_shards: list[Path],
    out_dir: Path,
    process: Callable[[int, Path], ShardStats],
    rank: int = 0,
    world_size: int = 1,
    wait_timeout_s: float = 7 * 24 * 3600,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    wait: bool = True,
) -> ShardStats:
    """Process shards, then return the totals once every shard is finished.

    `process(index, in_path)` writes the shard's outputs atomically and returns its stats; the stats file is written
    after it returns, so a shard with a stats file is complete and is never redone.
    SPMD (`wait=True`): shard i belongs to rank i % world_size, and every rank waits for all shards.
    Job arrays (`wait=False`), whose tasks may not all run at once: a task takes every open shard nobody holds, and
    raises ShardsPending when others still hold some (the task that finishes the last shard completes the stage).
    """
    if not wait:
        _claim_and_process(in_shards, out_dir, process, progress)
    else:
        mine = [i for i in range(len(in_shards)) if i % world_size == rank]
        todo = [i for i in mine if not stats_path(out_dir, i).exists()]
        if len(mine) - len(todo):
            print(f"[proxlab] {len(mine) - len(todo)} of this rank's {len(mine)} shards already finished; "
                  f"redoing none of them", flush=True)
        for i in (progress(todo) if progress else todo):
            stats = process(i, in_shards[i])
            atomic_write_text(stats_path(out_dir, i), json.dumps(stats.to_dict(), sort_keys=True))
    open_shards = [i for i in range(len(in_shards)) if not stats_path(out_dir, i).exists()]
    if open_shards and not wait:
        raise ShardsPending(f"{len(open_shards)} shards are being processed by other tasks (e.g. {open_shards[:3]}); "
                            f"the task that finishes the last one completes the stage")
    deadline = time.monotonic() + wait_timeout_s
    while not all(stats_path(out_dir, i).exists() for i in range(len(in_shards))):
        if time.monotonic() > deadline:
            raise TimeoutError(f"shards of {out_dir} not finished by other ranks within {wait_timeout_s} s")
        time.sleep(2.0)
    total = ShardStats()
    for i in range(len(in_shards)):
        total.add(ShardStats.from_dict(json.loads(stats_path(out_dir, i).read_text())))
    return total


def _claim_and_process(in_shards: list[Path], out_dir: Path, process: Callable[[int, Path], ShardStats],
                       progress: Callable[[Iterable[int]], Iterable[int]] | None) -> None:
    """Job-array mode: take any open shard nobody holds (a per-shard flock, released if its holder dies), so tasks
    that run one after another, or a failed task resubmitted alone, still cover every shard exactly once."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    open_shards = [i for i in range(len(in_shards)) if not stats_path(out_dir, i).exists()]
    for i in (progress(open_shards) if progress else open_shards):
        with open(out_dir / f".shard-{i:05d}.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another task is on it
            if stats_path(out_dir, i).exists():
                continue  # finished while we were getting here
            stats = process(i, in_shards[i])
            atomic_write_text(stats_path(out_dir, i), json.dumps(stats.to_dict(), sort_keys=True))


def check_accounting(in_dir: Path, out_dir: Path, kept_prefix: str = "docs", dropped_prefix: str = "dropped") -> None:
    """Every input id is kept or dropped, exactly once: the stage fails otherwise (nothing is lost silently)."""
    ids_in = [r for p in list_shards(in_dir) for r in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    kept = [r for p in list_shards(out_dir, kept_prefix) for r in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    dropped = [r for p in list_shards(out_dir, dropped_prefix)
               for r in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    out = kept + dropped
    if len(set(out)) != len(out):
        raise RuntimeError(f"{out_dir}: {len(out) - len(set(out))} document ids appear more than once in the output")
    missing, extra = set(ids_in) - set(out), set(out) - set(ids_in)
    if missing or extra:
        raise RuntimeError(f"{out_dir}: {len(missing)} input ids neither kept nor dropped (e.g. {sorted(missing)[:3]}), "
                           f"{len(extra)} output ids not in the input (e.g. {sorted(extra)[:3]})")
