"""Stage "tokenize": documents -> packed LitData token chunks of seq_len+1 windows, as the paper prepared its data.

    python -m proxlab.pretrain.tokenize --spec spec.json

spec.config {seq_len}; spec.runtime["settings"] {workers} (unhashed, default 1); inputs "docs" (directory of
`docs-*.parquet`) and "tokenizer" (a tokenizer stage dir).
Per document: no BOS, append EOS (reference code `train/data_tokenize/prepare_web.py`); documents are concatenated
in corpus order and read back as fixed `seq_len + 1` windows by `TokensLoader(block_size=seq_len + 1)`, with no
cross-document masking. The last 2% of documents (at least one, when there are two or more) form `<out>/val`, the rest
`<out>/train`.

Resumable: each split is written into `<out>/.tmp-<split>` and renamed to `<out>/<split>` only when complete, so a
killed run leaves no partial split behind and a rerun rebuilds only what is missing, giving the same bytes.
`<out>/tokens.json` records {docs, tokens, train_tokens, val_tokens, windows}.

Worker count: `workers` processes tokenize row-group slices ahead of ONE litdata writer that packs them in corpus
order, so the output is byte-identical for any worker count (that of workers=1) and the count stays out of the key.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from proxlab.core.logs import get_logger
from proxlab.core.stage import StageResult, StageSpec, atomic_write_text, stage_cli

log = get_logger("tokenize")

VAL_FRACTION = 0.02  # the default of train.val_fraction (hand-built specs may omit it)
ITEM_DOCS = 256  # documents per yielded token array
_TOKENIZERS: dict[str, Any] = {}


def split_ranges(n_docs: int, val_fraction: float = VAL_FRACTION) -> dict[str, tuple[int, int]]:
    """Document index ranges [start, stop) of train and val: the last `val_fraction` (>= 1 doc) is val when
    n_docs >= 2; with val_fraction 0 every document trains and there is no val split."""
    if not val_fraction:
        return {"train": (0, n_docs)}
    n_val = max(1, round(val_fraction * n_docs)) if n_docs >= 2 else 0
    return {"train": (0, n_docs - n_val), "val": (n_docs - n_val, n_docs)}


def work_items(files: list[Path], start: int, stop: int) -> list[tuple[str, int, int, int]]:
    """(file, row group, lo, hi) pieces covering documents [start, stop) in corpus order: one parquet read each."""
    import pyarrow.parquet as pq

    items, pos = [], 0
    for f in files:
        md = pq.ParquetFile(f).metadata
        for rg in range(md.num_row_groups):
            n = md.row_group(rg).num_rows
            lo, hi = max(start - pos, 0), min(stop - pos, n)
            if hi > lo:
                items.append((str(f), rg, lo, hi))
            pos += n
    return items


def _tokenizer(tokenizer_dir: str):
    """(HF tokenizers object, eos id), cached per worker process."""
    if tokenizer_dir not in _TOKENIZERS:
        from tokenizers import Tokenizer

        cfg = json.loads((Path(tokenizer_dir) / "tokenizer_config.json").read_text())
        eos = cfg.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        eos_id = tok.token_to_id(eos) if eos else None
        if eos_id is None:
            raise ValueError(f"{tokenizer_dir}: eos_token {eos!r} is not in the vocabulary")
        _TOKENIZERS[tokenizer_dir] = (tok, eos_id)
    return _TOKENIZERS[tokenizer_dir]


def encode_docs(texts: list[str], tokenizer_dir: str):
    """One int32 array: each document's tokens (no BOS: special tokens off) followed by EOS."""
    import numpy as np

    tok, eos_id = _tokenizer(tokenizer_dir)
    encs = tok.encode_batch_fast(texts, add_special_tokens=False)
    parts = []
    for e in encs:
        parts.append(np.asarray(e.ids, dtype=np.int32))
        parts.append(np.asarray([eos_id], dtype=np.int32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def tokenize_piece(item: tuple[str, int, int, int], tokenizer_dir: str) -> list[Any]:
    """Read one row-group slice; its tokens as int32 arrays of up to ITEM_DOCS documents each (numpy, not torch, so a
    tokenizing process never imports torch and the arrays pickle cheaply back to the writer)."""
    import pyarrow.parquet as pq

    path, rg, lo, hi = item
    texts = pq.ParquetFile(path).read_row_group(rg, columns=["text"]).column(0).to_pylist()[lo:hi]
    texts = [t or "" for t in texts]
    return [encode_docs(texts[s: s + ITEM_DOCS], tokenizer_dir) for s in range(0, len(texts), ITEM_DOCS)]


def ordered_tokens(items: list, tokenizer_dir: str, workers: int, start_method: str) -> Iterator[list[Any]]:
    """`tokenize_piece` of each item, in item order. With workers > 1 a process pool tokenizes ahead of the
    consumer, at most 2 * workers pieces ahead, so memory stays bounded however large the split is."""
    if workers <= 1:
        for item in items:
            yield tokenize_piece(item, tokenizer_dir)
        return
    import multiprocessing as mp
    from collections import deque

    # leaving the `with` terminates the pool, also when the consumer fails or stops early
    with mp.get_context(start_method).Pool(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(tokenize_piece, (item, tokenizer_dir)))
            if len(pending) > 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class SingleWriter:
    """litdata `optimize` fn for ONE litdata worker: yields each piece's token tensors in corpus order, taken from
    `ordered_tokens` (so tokenizing still runs on `workers` processes). One writer packs the same tensor sequence into
    the same chunks whatever the worker count; litdata workers would each pack their own share into their own chunks,
    moving chunk boundaries (hence windows and bytes) with the worker count."""

    def __init__(self, items: list, tokenizer_dir: str, workers: int, start_method: str):
        self.items, self.tokenizer_dir, self.workers, self.start_method = items, tokenizer_dir, workers, start_method
        self._stream: Iterator[list[Any]] | None = None
        self._next = 0

    def __getstate__(self) -> dict:  # a spawned litdata worker gets the plan, not a live generator
        return {**self.__dict__, "_stream": None, "_next": 0}

    def __call__(self, piece: tuple[int, tuple]) -> Iterator[Any]:
        import torch

        pos, item = piece
        if pos != self._next:  # the stream is in item order: litdata must hand us the pieces in that order too
            raise RuntimeError(f"tokenize: piece {pos} {item} arrived where piece {self._next} was expected")
        if self._stream is None:
            self._stream = ordered_tokens(self.items, self.tokenizer_dir, self.workers, self.start_method)
        self._next += 1
        arrays = next(self._stream)
        if self._next == len(self.items):  # the last piece: stop the tokenizing pool now, not at process exit
            self._stream.close()
        for tokens in arrays:
            yield torch.from_numpy(tokens)


def chunk_stats(split_dir: Path, block_size: int) -> dict[str, int]:
    """Tokens and windows of a finished LitData split, from its index.json (TokensLoader reads dim // block windows
    per chunk)."""
    index = json.loads((split_dir / "index.json").read_text())
    dims = [c["dim"] or 0 for c in index["chunks"]]
    return {"tokens": sum(dims), "windows": sum(d // block_size for d in dims)}


def build_split(items: list, out: Path, split: str, tokenizer_dir: Path, block_size: int, workers: int,
                start_method: str = "fork") -> None:
    """Write one split with litdata.optimize into a temporary dir, then rename it into place. Always one litdata
    worker (the single writer), so the bytes are those of workers=1 for any `workers`; `workers` processes tokenize."""
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    final, tmp = out / split, out / f".tmp-{split}"
    shutil.rmtree(tmp, ignore_errors=True)
    # litdata's scratch dirs default to a shared /tmp/chunks that every optimize() wipes: keep ours private
    cache = out / f".cache-{split}"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(cache / "chunks")
    os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = str(cache / "data")
    tmp.mkdir(parents=True)
    workers = max(1, min(workers, len(items)))
    log.info(f"tokenize: {split}: {len(items)} pieces, {workers} tokenizing process(es), one writer -> {final}")
    optimize(
        fn=SingleWriter(items, str(tokenizer_dir), workers, start_method),
        inputs=list(enumerate(items)),  # (position, piece): the writer checks it gets them in corpus order
        output_dir=str(tmp),
        chunk_size=block_size * 1024,  # tokens per chunk: 1024 windows
        item_loader=TokensLoader(block_size=block_size),
        num_workers=1,
        reorder_files=False,  # keep corpus order: the same inputs give the same bytes
        start_method=start_method,
    )
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, final)


def main(spec: StageSpec) -> StageResult:
    from proxlab.core.formats import corpus_shards, count_rows

    unknown = set(spec.config) - {"seq_len", "val_fraction"}
    if unknown or "seq_len" not in spec.config:
        raise KeyError(f"tokenize: spec.config is {{'seq_len': train.seq_len, 'val_fraction': train.val_fraction}}, "
                       f"got keys {sorted(spec.config)} (the worker count goes in spec.runtime['settings']['workers'])")
    block_size = spec.config["seq_len"] + 1
    workers = (spec.runtime.get("settings") or {}).get("workers", 1)
    tokenizer_dir = spec.input("tokenizer")
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"input 'tokenizer': no tokenizer.json in {tokenizer_dir}")
    files = corpus_shards(spec.input("docs"))
    n_docs = count_rows(spec.input("docs"))
    ranges = split_ranges(n_docs, spec.config.get("val_fraction", VAL_FRACTION))
    # fork starts litdata's writer and the tokenizing processes in ~0.1 s instead of ~10 s (spawn re-imports torch);
    # the output is the same.
    start_method = spec.runtime.get("mp_start") or os.environ.get("PROXLAB_MP_START") or "fork"
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    for leftover in [*out.glob(".tmp-*"), *out.glob(".cache-*")]:  # a killed run's partial split and scratch
        shutil.rmtree(leftover, ignore_errors=True)

    stats: dict[str, dict[str, int]] = {}
    for split, (start, stop) in ranges.items():
        if stop <= start:
            raise ValueError(f"tokenize: {n_docs} document(s) in {spec.input('docs')}: too few for a {split} split")
        if (out / split / "index.json").is_file():
            log.info(f"tokenize: {split} already complete, reusing")
        else:
            build_split(work_items(files, start, stop), out, split, tokenizer_dir, block_size, workers, start_method)
        stats[split] = {"docs": stop - start, **chunk_stats(out / split, block_size)}

    stats.setdefault("val", {"docs": 0, "tokens": 0, "windows": 0})
    summary = {
        "docs": n_docs,
        "tokens": stats["train"]["tokens"] + stats["val"]["tokens"],
        "train_docs": stats["train"]["docs"],
        "val_docs": stats["val"]["docs"],
        "train_tokens": stats["train"]["tokens"],
        "val_tokens": stats["val"]["tokens"],
        "windows": stats["train"]["windows"],
        "val_windows": stats["val"]["windows"],
        "seq_len": block_size - 1,
    }
    if summary["windows"] == 0:
        raise ValueError(f"tokenize: {summary['train_tokens']} train tokens make no window of {block_size} tokens; "
                         "use more documents or a smaller train.seq_len")
    atomic_write_text(out / "tokens.json", json.dumps(summary, indent=2, sort_keys=True))
    log.info(f"tokenize: {summary}")
    return StageResult(counts={"docs": n_docs, "tokens": summary["tokens"], "train_tokens": summary["train_tokens"],
                               "windows": summary["windows"]})


if __name__ == "__main__":
    stage_cli(main)
