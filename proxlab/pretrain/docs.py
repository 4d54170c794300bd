"""Reading a corpus artifact (a directory of `docs-*.parquet`, columns id/text/source) in a fixed order.

The pretrain package reads corpus files itself (no import of `proxlab.refine` internals: stages meet only through
files).
Order is the sorted file name, then row order, so every reader sees the same document sequence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator


def doc_files(directory: Path | str, what: str = "docs") -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"input {what!r}: {directory} is not a directory")
    files = sorted(directory.glob("docs-*.parquet"))
    if not files:
        raise FileNotFoundError(f"input {what!r}: no docs-*.parquet files in {directory}")
    return files


def count_docs(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def iter_texts(files: list[Path], start: int = 0, stop: int | None = None,
               batch_size: int = 256) -> Iterator[list[str]]:
    """Batches of texts of documents [start, stop) in corpus order, reading only the `text` column."""
    import pyarrow.parquet as pq

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
