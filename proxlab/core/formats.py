"""File contracts between stages: what a corpus, a dropped-documents file and a programs file hold, how shards are
named, and the check that every input document is accounted for.

A corpus artifact is a directory of `docs-NNNNN.parquet` files with columns `id`, `text`, `source`, `meta` (a JSON
string). Stages that drop documents also write `dropped-NNNNN.parquet` (`id`, `reason`, and the text when auditing).
Generate stages write `programs-NNNNN.parquet`, one per input shard. A shard index is the same across all files that
derive from one input shard, so a later stage pairs `docs-00003` with `programs-00003` by name alone.

pyarrow and the standard library only: the vLLM environment reads these files too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

DOCS, DROPPED, PROGRAMS = "docs", "dropped", "programs"

DOC_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())])
DROP_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("text", pa.string())])
# One row per document (doc level) or per chunk (chunk level); chunk_index -1 marks a document without any chunk.
PROGRAM_SCHEMA = pa.schema([
    ("id", pa.string()), ("chunk_index", pa.int32()), ("start_line", pa.int32()), ("end_line", pa.int32()),
    ("prompt_tokens", pa.int32()), ("output", pa.string()), ("output_tokens", pa.int32()),
    ("finish_reason", pa.string()),
])
NO_CHUNKS = "no_chunks"  # finish_reason of the row a chunk-level stage writes for a document without chunks

# A generate stage names the refiner it ran (model and tokenizer paths) here, for the stages that read its programs.
REFINER_FILE = "refiner.json"


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}.parquet"


def list_shards(directory: Path, prefix: str = DOCS) -> list[Path]:
    return sorted(Path(directory).glob(f"{prefix}-*.parquet"))


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


def read_docs(path: Path, columns: list[str] | None = None) -> list[dict[str, Any]]:
    return pq.read_table(path, columns=columns).to_pylist()


def iter_docs(directory: Path, prefix: str = DOCS, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    for shard in list_shards(directory, prefix):
        yield from read_docs(shard, columns)


def read_ids(directory: Path, prefix: str = DOCS) -> list[str]:
    return [r for p in list_shards(directory, prefix) for r in pq.read_table(p, columns=["id"]).column("id").to_pylist()]


def count_rows(directory: Path, prefix: str = DOCS) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in list_shards(directory, prefix))


def check_accounting(in_dir: Path, out_dir: Path, kept_prefix: str = DOCS, dropped_prefix: str = DROPPED) -> None:
    """Every input id is kept or dropped, exactly once: the stage fails otherwise (nothing is lost silently)."""
    ids_in = read_ids(in_dir)
    out = read_ids(out_dir, kept_prefix) + read_ids(out_dir, dropped_prefix)
    if len(set(out)) != len(out):
        raise RuntimeError(f"{out_dir}: {len(out) - len(set(out))} document ids appear more than once in the output")
    missing, extra = set(ids_in) - set(out), set(out) - set(ids_in)
    if missing or extra:
        raise RuntimeError(f"{out_dir}: {len(missing)} input ids neither kept nor dropped (e.g. {sorted(missing)[:3]}), "
                           f"{len(extra)} output ids not in the input (e.g. {sorted(extra)[:3]})")


def corpus_shards(directory: Path | str, what: str = DOCS) -> list[Path]:
    """The `docs-*.parquet` files of a corpus artifact, in corpus order; a clear error when there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"input {what!r}: {directory} is not a directory")
    files = list_shards(directory)
    if not files:
        raise FileNotFoundError(f"input {what!r}: no {DOCS}-*.parquet files in {directory}")
    return files


def iter_texts(files: list[Path], start: int = 0, stop: int | None = None,
               batch_size: int = 256) -> Iterator[list[str]]:
    """Batches of texts of documents [start, stop) in corpus order (sorted file name, then row), reading only `text`."""
    pos = 0
    for f in files:
        pf = pq.ParquetFile(f)
        n = pf.metadata.num_rows
        if stop is not None and pos >= stop:
            return
        if pos + n <= start:
            pos += n
            continue
        if "text" not in pf.schema_arrow.names:
            raise KeyError(f"{f}: no 'text' column (have {pf.schema_arrow.names})")
        for batch in pf.iter_batches(batch_size=batch_size, columns=["text"]):
            texts = batch.column(0).to_pylist()
            lo, hi = max(start - pos, 0), len(texts) if stop is None else min(stop - pos, len(texts))
            pos += len(texts)
            if hi > lo:
                yield [t or "" for t in texts[lo:hi]]
            if stop is not None and pos >= stop:
                return
