"""Stage `prepare`: read a corpus (a directory of jsonl / jsonl.gz / json.gz / parquet files, or a streamed Hugging Face
dataset), take a deterministic sample, and write `docs-NNNNN.parquet` shards of (id, text, source, meta) — streaming,
in memory bounded independently of the corpus size, split over SPMD ranks or job-array tasks by the shard executor.

The executor's shards are the *input files* (a Hugging Face dataset: its data-file shards): input i is read once, by
one process, into its own part files under `parts/`; `shard-<i>.json` then marks it finished (a rerun never rereads
it). The process that finalizes checks the parts, gives them one global, contiguous numbering (`docs-00000.parquet`,
`docs-00001.parquet`, ...: downstream stages pair shards by that index), writes `inputs.json` and `bad_lines.jsonl`
and removes `parts/`.

Sampling, by `corpus.sample_fraction` and `corpus.num_docs` (docs/refine.md, "Prepare"):

* neither (`num_docs: null`): every usable document, in input order (files sorted by path, then line order), in
  shards of `docs_per_shard` rows; an input's last shard may be shorter. Memory: one write batch, plus the ids of
  the one input file being read (duplicates are found within a file).
* `sample_fraction: f`: keep a document iff `sample_key(seed, id) < f * 2**64` — a per-document decision, so the
  sample streams like the full corpus and does not depend on how the corpus is split into files or ranks.
* `num_docs: N`: the N documents with the smallest `sample_key(seed, id)`, in key order (a seeded shuffle): each input
  keeps its N smallest in a heap (O(N) documents in memory per process: fine up to a few million short documents; use
  `sample_fraction` beyond), the finalizer merges the inputs' sorted candidates and writes the first N. This is the
  sample older versions took (same documents, same order, same bytes). With both set, N of the fraction.

A document's id is `<source>/<id field>` (the line or row number when the record has none) where `source` is the
file's path under the corpus root without extensions, so ids are unique across files when they are unique within
each file; a repeated id within a file is counted (`duplicate_ids`) and skipped. Bad records follow
`corpus.on_bad_line` (proxlab.refine.corpus_read).

A paper pool (`corpus.pool`, proxlab.refine.pools) reads the files of the selected dumps, from a mirror in the
dataset's own layout or from its hub; `input_files` is the one listing, which the graph also keys the stage by. With
`corpus.tokenizer` the stage measures the pool's tokens on a per-file sample, records them in the manifest and fails
when they are off from `corpus.tokens` by more than 5% (docs/refine.md, "Pools").
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
import json
import os
import shutil
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

from proxlab.core.config import CorpusConfig, load
from proxlab.core.formats import DOC_SCHEMA, count_rows, list_shards, shard_name, write_parquet
from proxlab.core.logs import get_logger
from proxlab.core.paths import under_data_dir
from proxlab.core.sharding import ShardStats, ShardWork, run_shards, stats_path
from proxlab.core.stage import StageResult, StageSpec, atomic_write_text, stage_cli
from proxlab.refine.corpus_read import (BadInputError, BadRecords, Counts, documents, hf_records, local_records,
                                        relative_source, source_name)
from proxlab.refine.pools import PoolListing, local_found, pool_settings, remote_filesystem, remote_found, select

log = get_logger("prepare")

__all__ = ["BadInputError", "corpus_files", "corpus_root", "input_files", "main", "sample_key"]

PARTS = "parts"  # work area: each input's part files (stream) or sorted candidates (num_docs), and bad-record logs
INPUTS_FILE = "inputs.json"  # per input: path, source, counts, output shards; written when the outputs are final
BAD_LINES = "bad_lines.jsonl"
WRITE_BATCH_ROWS = 4096  # rows per write (one parquet row group): the writer's memory, with WRITE_BATCH_CHARS
WRITE_BATCH_CHARS = 32 << 20
CANDIDATE_BATCH_ROWS = 256  # row groups of the candidate files: the finalizer's merge holds one per input
MAX_BY_SOURCE = 1000  # the manifest lists documents per source up to this many sources
DROP_REASONS = ("sampled_out", "bad", "empty", "duplicate")
# Token measurement (docs/refine.md, "Pools"): per input file, the documents with the TOKEN_SAMPLE_PER_INPUT smallest
# sample keys are tokenized; the pool's tokens are estimated per file as (their tokens / their characters) × the file's
# characters, summed. The stage fails when the estimate is off from corpus.tokens by more than TOKEN_TOLERANCE.
TOKEN_SAMPLE_PER_INPUT = 256
TOKEN_TOLERANCE = 0.05
TOKEN_SUMS = ("tok_n", "tok_t", "tok_c", "tok_tt", "tok_cc", "tok_tc")  # n, Σt, Σc, Σt², Σc², Σtc of one input


def corpus_root(cfg: Any, configured_data_dir: str | None = None) -> Path:
    """Where a local corpus lies: `corpus.path`, else `<data_dir>/pools/<pool>` for a pool, else `<data_dir>/web`."""
    pool = getattr(cfg, "pool", None)
    return under_data_dir(cfg.path, f"pools/{pool}" if pool else "web", configured_data_dir)


def input_files(cfg: Any, root: Path) -> list[Path]:
    """THE listing of the local files `prepare` reads, in reading order; the graph keys the stage by their identity
    (`runner.graph.external_sources`). A pool (`corpus.pool`): the files of the selected dumps present under the
    mirror root (`pool_listing`; a missing one is an error unless corpus.allow_partial); otherwise `corpus_files`."""
    if getattr(cfg, "pool", None):
        return [root / rel for rel in pool_listing(cfg, root).present]
    return corpus_files(root, list(cfg.include), list(cfg.exclude))


def pool_listing(cfg: Any, root: Path) -> PoolListing:
    pool, dumps, num_dumps, seed = pool_settings(cfg)
    listing = select(pool, local_found(pool, root), dumps, num_dumps, seed)
    _check_listing(cfg, listing, str(root))
    return listing


def _check_listing(cfg: Any, listing: PoolListing, where: str) -> None:
    pool = listing.pool
    if listing.missing and not getattr(cfg, "allow_partial", False):
        raise FileNotFoundError(f"{listing.describe_missing(where)}. Complete the mirror ({pool.download}), or set "
                                f"corpus.allow_partial=true to read the {len(listing.present):,} files present")
    if not listing.present:
        raise FileNotFoundError(f"pool {pool.name}: none of the {len(listing.expected):,} files of dumps "
                                f"{list(listing.dumps)} is under {where} (the dataset's own layout: {pool.pattern}); "
                                f"make a mirror with: {pool.download}")


def corpus_files(root: Path, include: list[str], exclude: list[str]) -> list[Path]:
    """The files `prepare` reads, sorted: those under `root` (or `root` itself) whose name matches an `include` pattern
    and no `exclude` pattern."""
    if not root.exists():
        raise FileNotFoundError(f"corpus path {root} does not exist (corpus.path / paths.data_dir / $PROXLAB_DATA_DIR)")
    candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files = [p for p in candidates if any(fnmatch.fnmatch(p.name, pat) for pat in include)
             and not any(fnmatch.fnmatch(p.name, pat) for pat in exclude)]
    if not files:
        raise FileNotFoundError(f"no corpus files matching {include} (excluding {exclude}) under {root}")
    return files


def sample_key(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest(), "big")


def fraction_threshold(fraction: float | None) -> int | None:
    """Keep a document iff sample_key < threshold; None: keep all."""
    if fraction is None or fraction >= 1.0:
        return None
    return int(fraction * 2 ** 64)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs: what the executor's shard i is


@dataclass(frozen=True)
class Input:
    where: str  # a file path (bad records are logged as <where>:<line>), or "<hf id>[shard k/n]"
    source: str  # the `source` column
    id_prefix: str  # every document id of this input starts with it


@dataclass
class Corpus:
    where: str  # the corpus root or hub id, for messages
    inputs: list[Input]
    shards: list[Path]  # the executor's shard list (the files; placeholders for hub shards)
    records: Callable[[int, Counts, BadRecords], Iterator[tuple[int, Any, Any]]]  # (line or row, record, raw line)
    pool: dict[str, Any] | None = None  # a pool's listing: name, dumps, files expected / present / missing


def local_corpus(cfg: CorpusConfig, root: Path) -> Corpus:
    listing = pool_listing(cfg, root) if cfg.pool else None
    files = [root / rel for rel in listing.present] if listing else input_files(cfg, root)
    inputs = [Input(str(f), (src := source_name(root, f)), src + "/") for f in files]
    _check_prefixes(inputs)
    return Corpus(str(root), inputs, files, lambda i, counts, bad: local_records(files[i], counts, bad),
                  _pool_info(listing, str(root)))


def _pool_info(listing: PoolListing | None, where: str) -> dict[str, Any] | None:
    if listing is None:
        return None
    if listing.missing:
        log.info(f"prepare: {listing.describe_missing(where)}; reading the {len(listing.present):,} present "
                 f"(corpus.allow_partial=true)")
    return {"pool": listing.pool.name, "dumps": list(listing.dumps), "files_in_pool": listing.complete_listing,
            "files_expected": len(listing.expected), "files_present": len(listing.present),
            "files_missing": len(listing.missing), "missing_first": listing.missing[:20]}


def pool_hub_corpus(cfg: CorpusConfig) -> Corpus:
    """A pool read from where its dataset publishes the files (`corpus.source=hf`): the HF hub at
    `corpus.hf_revision` (RedPajama-V2: its own URL), through fsspec, with the local readers — so documents, ids and
    sources equal a local mirror's."""
    pool, dumps, num_dumps, seed = pool_settings(cfg)
    try:
        fs, base = remote_filesystem(pool, cfg.hf_revision)
        found = remote_found(pool, fs, base)
    except Exception as e:  # noqa: BLE001 - offline, no access, unknown revision: one clear message
        raise RuntimeError(
            f"prepare: cannot list pool {pool.name} at {pool.remote(cfg.hf_revision)}: {type(e).__name__}: {e}. "
            f"Reading a pool from its hub needs network access; offline, make a mirror ({pool.download}) and set "
            f"corpus.source=local corpus.path=<mirror>") from e
    listing = select(pool, found, dumps, num_dumps, seed)
    _check_listing(cfg, listing, base)
    rels = listing.present
    inputs = [Input(f"{base}/{rel}", (src := relative_source(rel)), src + "/") for rel in rels]
    _check_prefixes(inputs)

    def opener(path: str):
        return fs.open(path, "rb")

    return Corpus(base, inputs, [Path(f"hub-file-{k:05d}") for k in range(len(rels))],
                  lambda i, counts, bad: local_records(inputs[i].where, counts, bad, opener=opener),
                  _pool_info(listing, base))


def _check_prefixes(inputs: list[Input]) -> None:
    """No input's id prefix may start another's (`a.jsonl` beside `a.parquet`, or `a.jsonl` beside a folder `a/`):
    ids could then collide across files, which the stage could not see without holding every id."""
    ordered = sorted(inputs, key=lambda x: x.id_prefix)
    for a, b in zip(ordered, ordered[1:]):
        if b.id_prefix.startswith(a.id_prefix):
            raise ValueError(f"corpus files {a.where} and {b.where} give overlapping document ids (sources "
                             f"{a.source!r} and {b.source!r}); exclude one of them (corpus.exclude) or rename it")


def hf_corpus(cfg: CorpusConfig) -> Corpus:
    ds = open_hf(cfg)
    n = int(getattr(ds, "num_shards", None) or getattr(ds, "n_shards", 1) or 1)
    name = cfg.hf_dataset
    inputs = [Input(f"{name}[shard {k}/{n}]", name, f"{name}/{k:05d}/") for k in range(n)]

    def records(i: int, counts: Counts, bad: BadRecords):
        return hf_records(ds.shard(num_shards=n, index=i) if n > 1 else ds, counts)

    return Corpus(name, inputs, [Path(f"hf-shard-{k:05d}") for k in range(n)], records)


def open_hf(cfg: CorpusConfig) -> Any:
    """The dataset as a streamed `IterableDataset`; a clear error when the hub cannot be reached (offline)."""
    if not cfg.hf_dataset:
        raise ValueError("corpus.source=hf needs corpus.hf_dataset (a Hugging Face dataset id)")
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise RuntimeError("corpus.source=hf needs the `datasets` package in this environment") from e
    revision = getattr(cfg, "hf_revision", None)
    try:
        return load_dataset(cfg.hf_dataset, cfg.hf_config, split=cfg.hf_split, streaming=True,
                            **({"revision": revision} if revision else {}))
    except Exception as e:  # noqa: BLE001 - offline, unknown id, gated dataset, ...: one clear message
        raise RuntimeError(
            f"prepare: cannot stream the Hugging Face dataset {cfg.hf_dataset!r} (config {cfg.hf_config!r}, split "
            f"{cfg.hf_split!r}, revision {revision!r}): {type(e).__name__}: {e}. Streaming needs network access to "
            f"the Hub; offline, download the files and set corpus.source=local corpus.path=<folder>") from e


# ---------------------------------------------------------------------------------------------------------------------
# Processing one input (the executor's `process`)


@dataclass
class Job:
    cfg: CorpusConfig
    out: Path
    corpus: Corpus
    tokenizer: Any = None  # a `tokenizers.Tokenizer` counting the pool's tokens (corpus.tokenizer), or None
    tokenizer_path: str | None = None

    @property
    def parts(self) -> Path:
        return self.out / PARTS


def process_input(job: Job, index: int, _path: Path) -> ShardStats:
    cfg, inp = job.cfg, job.corpus.inputs[index]
    counts = Counts()
    bad = BadRecords(cfg.on_bad_line, counts)
    _clear_input(job.parts, index)
    docs = documents(job.corpus.records(index, counts, bad), inp.where, inp.id_prefix, cfg.text_field, cfg.id_field,
                     cfg.min_chars, counts, bad)
    threshold = fraction_threshold(cfg.sample_fraction)
    sample = TokenSample(TOKEN_SAMPLE_PER_INPUT) if job.tokenizer is not None else None
    if cfg.num_docs is None:
        writer = PartWriter(job.parts, index, inp.source, cfg.docs_per_shard)
        _stream(docs, counts, threshold, cfg.seed, writer.add, sample)
        n_parts = writer.close()
    else:
        chosen = _smallest(docs, counts, threshold, cfg.seed, cfg.num_docs, sample)
        write_candidates(job.parts / f"cand-{index:05d}.parquet", chosen, inp.source)
        n_parts = 1 if chosen else 0
    if bad.log:
        atomic_write_text(job.parts / f"bad-{index:05d}.jsonl",
                          "".join(json.dumps(r, sort_keys=True) + "\n" for r in bad.log))
    token_sums = sample.measure(job.tokenizer) if sample is not None else {}
    return ShardStats(docs_in=counts.read, docs_out=counts.kept, chars_in=counts.chars_read,
                      chars_out=counts.chars_kept, dropped={k: getattr(counts, k) for k in DROP_REASONS},
                      extra={"parts": n_parts, "fixed_surrogates": counts.fixed_surrogates,
                             "texts_with_nul": counts.texts_with_nul, "bad_logged": len(bad.log), **token_sums})


def _clear_input(parts: Path, index: int) -> None:
    """Remove what an interrupted earlier attempt at this input left (its parts, candidates, log, temporaries)."""
    if parts.is_dir():
        mine = (f"docs-{index:05d}-*.parquet", f"cand-{index:05d}.parquet", f"bad-{index:05d}.jsonl")
        for pattern in (*mine, *(f".{m}.tmp.*" for m in mine)):
            for p in parts.glob(pattern):
                p.unlink(missing_ok=True)


def _stream(docs: Iterator[tuple[str, str, str]], counts: Counts, threshold: int | None, seed: int,
            emit: Callable[[str, str, str], None], token_sample: "TokenSample | None" = None) -> None:
    seen: set[str] = set()  # this input's ids: duplicates are found within a file (ids carry the file's prefix)
    kept = sampled = dup = chars_read = chars_kept = 0
    for doc_id, text, meta in docs:
        if doc_id in seen:
            dup += 1
            continue
        seen.add(doc_id)
        n = len(text)
        chars_read += n
        key = sample_key(seed, doc_id) if threshold is not None or token_sample is not None else 0
        if token_sample is not None:  # the pool is every unique usable document, sampled out or not
            token_sample.offer(key, doc_id, text)
        if threshold is not None and key >= threshold:
            sampled += 1
            continue
        kept += 1
        chars_kept += n
        emit(doc_id, text, meta)
    counts.kept += kept
    counts.sampled_out += sampled
    counts.duplicate += dup
    counts.chars_read += chars_read
    counts.chars_kept += chars_kept


def _smallest(docs: Iterator[tuple[str, str, str]], counts: Counts, threshold: int | None, seed: int,
              n: int, token_sample: "TokenSample | None" = None) -> list[tuple[int, str, str, str]]:
    """This input's n documents with the smallest keys, as (key, id, text, meta) sorted by (key, id)."""
    heap: list[tuple[int, str, str, str]] = []  # a max-heap via negated keys

    def offer(doc_id: str, text: str, meta: str) -> None:
        key = sample_key(seed, doc_id)
        if len(heap) < n:
            heapq.heappush(heap, (-key, doc_id, text, meta))
        elif key < -heap[0][0]:
            heapq.heapreplace(heap, (-key, doc_id, text, meta))

    _stream(docs, counts, threshold, seed, offer, token_sample)
    chosen = sorted(((-k, i, t, m) for k, i, t, m in heap), key=lambda r: (r[0], r[1]))
    counts.sampled_out += counts.kept - len(chosen)
    counts.chars_kept = sum(len(t) for _, _, t, _ in chosen)
    counts.kept = len(chosen)
    return chosen


class TokenSample:
    """One input's documents with the k smallest sample keys — a uniform random sample of its unique usable documents,
    whatever the file order — to be tokenized once the input is read."""

    def __init__(self, k: int):
        self.k = k
        self.heap: list[tuple[int, str, str]] = []  # a max-heap of (-key, id, text)

    def offer(self, key: int, doc_id: str, text: str) -> None:
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, (-key, doc_id, text))
        elif key < -self.heap[0][0]:
            heapq.heapreplace(self.heap, (-key, doc_id, text))

    def measure(self, tokenizer: Any) -> dict[str, float]:
        """n, Σt, Σc, Σt², Σc², Σtc of the sample: t = the document's tokens as `tokenize` counts them (text tokens
        without special tokens, + 1 EOS), c = its characters."""
        texts = [t for _, _, t in sorted(self.heap, key=lambda r: (-r[0], r[1]))]
        self.heap = []
        sums = dict.fromkeys(TOKEN_SUMS, 0.0)
        for lo in range(0, len(texts), 64):
            batch = texts[lo:lo + 64]
            encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
            for text, enc in zip(batch, encode(batch, add_special_tokens=False)):
                t, c = len(enc.ids) + 1, len(text)
                for key, v in zip(TOKEN_SUMS, (1, t, c, t * t, c * c, t * c)):
                    sums[key] += v
        return sums


def load_tokenizer(name: str, configured_data_dir: str | None) -> tuple[Any, str]:
    """`corpus.tokenizer`: a directory with tokenizer.json, or a name under <data_dir>/tokenizers (as
    `model.tokenizer.path`); (tokenizers.Tokenizer, its directory)."""
    from proxlab.core.paths import tokenizer_candidates

    found, candidates = tokenizer_candidates(name, configured_data_dir)
    if found is not None:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(found / "tokenizer.json")), str(found.resolve())
    from proxlab.models.presets import fetch_hint

    raise FileNotFoundError(f"corpus.tokenizer={name!r} (the tokenizer prepare measures the pool's tokens with): no "
                            f"tokenizer.json in {[str(c) for c in candidates]}; {fetch_hint(name, str(candidates[0]))}"
                            f"; or set it to a tokenizer directory, or corpus.tokenizer=null to skip the measurement")


def token_estimate(stats: list[dict[str, Any]]) -> dict[str, float] | None:
    """The pool's tokens from every input's sample: a ratio estimator stratified by input file,
    T = Σ_i C_i · t_i / c_i (C_i: the file's characters; t_i, c_i: its sample's tokens and characters), with the
    standard error Var = Σ_i N_i² (1 − n_i/N_i) s_i² / n_i, s_i² = Σ (t − R_i c)² / (n_i − 1) (N_i documents, n_i
    sampled; a file read whole contributes no error). None when nothing was tokenized."""
    if not any(st["extra"].get("tok_n") for st in stats):
        return None
    total = var = sampled = docs = chars = 0.0
    for st in stats:
        e = st["extra"]
        n, t, c = e.get("tok_n", 0.0), e.get("tok_t", 0.0), e.get("tok_c", 0.0)
        big_n = st["docs_out"] + st["dropped"].get("sampled_out", 0)  # unique usable documents of the input
        if not big_n or not n:
            continue
        C = st["chars_in"]
        r = t / c if c else 0.0
        total += r * C if c else t / n * big_n
        if 1 < n < big_n:
            s2 = max(e["tok_tt"] - 2 * r * e["tok_tc"] + r * r * e["tok_cc"], 0.0) / (n - 1)
            var += big_n * big_n * (1 - n / big_n) * s2 / n
        sampled += n
        docs += big_n
        chars += C
    return {"tokens": total, "se": var ** 0.5, "sampled_docs": sampled, "docs": docs, "chars": chars}


class PartWriter:
    """An input's documents into `parts/docs-<input>-<k>.parquet`, `rows_per_part` rows each (the last may be shorter),
    written in batches (one row group each) so that memory holds one batch, not a shard."""

    def __init__(self, parts: Path, index: int, source: str, rows_per_part: int):
        self.parts, self.index, self.source, self.rows_per_part = parts, index, source, rows_per_part
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.metas: list[str] = []
        self.chars = 0
        self.part = 0  # parts completed
        self.rows_in_part = 0
        self.writer = None
        self.tmp: Path | None = None
        self.room = min(WRITE_BATCH_ROWS, rows_per_part)

    def add(self, doc_id: str, text: str, meta: str) -> None:
        self.ids.append(doc_id)
        self.texts.append(text)
        self.metas.append(meta)
        self.chars += len(text)
        if len(self.ids) >= self.room or self.chars >= WRITE_BATCH_CHARS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(self.ids)
        if not n:
            return
        if self.writer is None:
            self.parts.mkdir(parents=True, exist_ok=True)
            final = part_path(self.parts, self.index, self.part)
            self.tmp = final.with_name(f".{final.name}.tmp.{os.getpid()}")
            self.writer = pq.ParquetWriter(self.tmp, DOC_SCHEMA, compression="zstd", use_dictionary=["source"],
                                           write_statistics=["id", "source"])
        table = pa.Table.from_arrays(
            [pa.array(self.ids, pa.string()), pa.array(self.texts, pa.string()),
             pa.array([self.source] * n, pa.string()), pa.array(self.metas, pa.string())], schema=DOC_SCHEMA)
        self.writer.write_table(table)
        self.ids, self.texts, self.metas, self.chars = [], [], [], 0
        self.rows_in_part += n
        if self.rows_in_part >= self.rows_per_part:
            self._close_part()
        self.room = min(WRITE_BATCH_ROWS, self.rows_per_part - self.rows_in_part)

    def _close_part(self) -> None:
        self.writer.close()
        os.replace(self.tmp, part_path(self.parts, self.index, self.part))
        self.writer, self.tmp, self.rows_in_part = None, None, 0
        self.part += 1

    def close(self) -> int:
        """Write what is left; the number of parts."""
        self._flush()
        if self.writer is not None:
            self._close_part()
        return self.part


def part_path(parts: Path, index: int, k: int) -> Path:
    return parts / f"docs-{index:05d}-{k:05d}.parquet"


CANDIDATE_SCHEMA = None  # DOC_SCHEMA + key, built on first use (pyarrow is imported lazily here)


def _candidate_schema():
    global CANDIDATE_SCHEMA
    if CANDIDATE_SCHEMA is None:
        import pyarrow as pa

        CANDIDATE_SCHEMA = DOC_SCHEMA.append(pa.field("key", pa.uint64()))
    return CANDIDATE_SCHEMA


def write_candidates(path: Path, chosen: list[tuple[int, str, str, str]], source: str) -> None:
    """An input's sampled documents sorted by (key, id), in small row groups for the finalizer's merge."""
    if not chosen:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _candidate_schema()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with pq.ParquetWriter(tmp, schema, compression="zstd", use_dictionary=["source"]) as w:
        for lo in range(0, len(chosen), CANDIDATE_BATCH_ROWS):
            rows = chosen[lo:lo + CANDIDATE_BATCH_ROWS]
            w.write_table(pa.Table.from_arrays(
                [pa.array([r[1] for r in rows], pa.string()), pa.array([r[2] for r in rows], pa.string()),
                 pa.array([source] * len(rows), pa.string()), pa.array([r[3] for r in rows], pa.string()),
                 pa.array([r[0] for r in rows], pa.uint64())], schema=schema))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------------
# Checking and finalizing (the process the executor makes the finalizer)


def _stats(out: Path, n: int) -> list[dict[str, Any]]:
    return [json.loads(stats_path(out, i).read_text()) for i in range(n)]


def _offsets(stats: list[dict[str, Any]]) -> list[int]:
    """Stream mode: the global index of each input's first output shard (inputs in order, parts in order)."""
    offsets, pos = [], 0
    for st in stats:
        offsets.append(pos)
        pos += int(st["extra"].get("parts", 0))
    return offsets


def _input_outputs(job: Job, stats: list[dict[str, Any]], offsets: list[int], i: int) -> list[Path]:
    """Where input i's rows are now: its parts, or (after renumbering) the final shards."""
    if job.cfg.num_docs is not None:
        return [job.parts / f"cand-{i:05d}.parquet"] if stats[i]["docs_out"] else []
    out = []
    for k in range(int(stats[i]["extra"].get("parts", 0))):
        p = part_path(job.parts, i, k)
        out.append(p if p.exists() else job.out / shard_name("docs", offsets[i] + k))
    return out


def check_outputs(job: Job) -> None:
    """The stage's contract, checked before it completes: every input's counts add up (read = kept + sampled_out +
    bad + empty + duplicate), its rows on disk are its kept count, and its ids are unique and carry its prefix (so
    ids are unique over the whole corpus: no prefix starts another, `_check_prefixes`)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    n = len(job.corpus.inputs)
    stats = _stats(job.out, n)
    for i, st in enumerate(stats):
        accounted = st["docs_out"] + sum(st["dropped"].get(k, 0) for k in DROP_REASONS)
        if st["docs_in"] != accounted:
            raise RuntimeError(f"prepare: {job.corpus.inputs[i].where}: {st['docs_in']} records read but "
                               f"{accounted} accounted for (kept + sampled_out + bad + empty + duplicate): {st}")
    if job.cfg.num_docs is not None and (job.out / INPUTS_FILE).exists():
        _check_final(job)  # a finalizer before us wrote the final shards (and may have removed the candidates)
        return
    offsets = _offsets(stats)
    for i, inp in enumerate(job.corpus.inputs):
        files = _input_outputs(job, stats, offsets, i)
        missing = [str(p) for p in files if not p.exists()]
        if missing:
            raise RuntimeError(f"prepare: {inp.where}: output file(s) missing: {missing[:3]}")
        if not files:
            if stats[i]["docs_out"]:
                raise RuntimeError(f"prepare: {inp.where}: {stats[i]['docs_out']} documents counted, none written")
            continue
        ids = pa.chunked_array([c for p in files for c in pq.read_table(p, columns=["id"]).column("id").chunks],
                               pa.string())
        if len(ids) != stats[i]["docs_out"]:
            raise RuntimeError(f"prepare: {inp.where}: {len(ids)} rows written, {stats[i]['docs_out']} counted")
        if not pc.all(pc.starts_with(ids, inp.id_prefix)).as_py():
            raise RuntimeError(f"prepare: {inp.where}: ids without the input's prefix {inp.id_prefix!r}")
        distinct = pc.count_distinct(ids).as_py()
        if distinct != len(ids):
            raise RuntimeError(f"prepare: {inp.where}: {len(ids) - distinct} repeated document ids")


def _check_final(job: Job) -> None:
    from proxlab.core.formats import read_ids

    expected = json.loads((job.out / INPUTS_FILE).read_text())["docs"]
    ids = read_ids(job.out)
    if len(ids) != expected or len(set(ids)) != len(ids):
        raise RuntimeError(f"prepare: {job.out}: {len(ids)} documents ({len(ids) - len(set(ids))} repeated ids), "
                           f"{expected} expected")


def finalize(job: Job, total: ShardStats) -> StageResult:
    out, cfg, inputs = job.out, job.cfg, job.corpus.inputs
    stats = _stats(out, len(inputs))
    if (out / INPUTS_FILE).exists():  # an earlier finalizer got this far: only the clean-up may be left
        summary = json.loads((out / INPUTS_FILE).read_text())
    else:
        if cfg.num_docs is None:
            per_input, n_shards, chars = _renumber(job, stats), None, total.chars_out
        else:
            per_input, n_shards, chars = _merge(job, stats)
        summary = _summary(job, stats, per_input, chars)
        if summary["docs"] == 0:
            raise RuntimeError(f"prepare: no usable documents in {job.corpus.where} "
                               f"({total.docs_in} records read: {total.dropped})")
        _collect_bad_logs(job)
        atomic_write_text(out / INPUTS_FILE, json.dumps(summary, indent=1, sort_keys=True))
    shutil.rmtree(job.parts, ignore_errors=True)
    rows = count_rows(out)
    if rows != summary["docs"] or len(list_shards(out)) != summary["shards"]:
        raise RuntimeError(f"prepare: {out} holds {rows} documents in {len(list_shards(out))} shards; "
                           f"{summary['docs']} in {summary['shards']} expected")
    return _result(job, total, summary)


def _renumber(job: Job, stats: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """Stream mode: parts/docs-<input>-<k> → docs-<offset(input) + k>; (kept, first shard, last shard + 1) per input.
    Idempotent: a part already renamed by an interrupted finalizer is found under its final name."""
    offsets = _offsets(stats)
    per_input = []
    for i, st in enumerate(stats):
        n_parts = int(st["extra"].get("parts", 0))
        for k in range(n_parts):
            src, dst = part_path(job.parts, i, k), job.out / shard_name("docs", offsets[i] + k)
            if src.exists():
                os.replace(src, dst)
            elif not dst.exists():
                raise RuntimeError(f"prepare: {src} is missing (and {dst} does not exist)")
        per_input.append((st["docs_out"], offsets[i], offsets[i] + n_parts))
    return per_input


def _merge(job: Job, stats: list[dict[str, Any]]) -> tuple[list[tuple[int, int, int]], int, int]:
    """num_docs mode: the cfg.num_docs smallest keys over every input's sorted candidates, in (key, id) order, written
    in shards of docs_per_shard rows; (kept, 0, 0) per input, the number of shards and the characters written."""
    import pyarrow.parquet as pq

    def rows(i: int, path: Path) -> Iterator[tuple[int, str, str, str, str, int]]:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=CANDIDATE_BATCH_ROWS):
            cols = batch.to_pydict()
            for key, doc_id, text, source, meta in zip(cols["key"], cols["id"], cols["text"], cols["source"],
                                                       cols["meta"]):
                yield key, doc_id, text, source, meta, i

    streams = [rows(i, job.parts / f"cand-{i:05d}.parquet") for i, st in enumerate(stats) if st["docs_out"]]
    kept = [0] * len(stats)
    shard = chars = 0
    batch: list[dict[str, str]] = []
    for _, doc_id, text, source, meta, i in islice(heapq.merge(*streams), job.cfg.num_docs):
        batch.append({"id": doc_id, "text": text, "source": source, "meta": meta})
        kept[i] += 1
        chars += len(text)
        if len(batch) == job.cfg.docs_per_shard:
            write_parquet(job.out / shard_name("docs", shard), batch, DOC_SCHEMA)
            shard, batch = shard + 1, []
    if batch:
        write_parquet(job.out / shard_name("docs", shard), batch, DOC_SCHEMA)
        shard += 1
    return [(k, 0, 0) for k in kept], shard, chars


def _summary(job: Job, stats: list[dict[str, Any]], per_input: list[tuple[int, int, int]],
             chars: int) -> dict[str, Any]:
    stream = job.cfg.num_docs is None
    entries = []
    for inp, st, (kept, lo, hi) in zip(job.corpus.inputs, stats, per_input):
        e = {"input": inp.where, "source": inp.source, "read": st["docs_in"], "kept": kept, **st["dropped"],
             "fixed_surrogates": st["extra"].get("fixed_surrogates", 0),
             "texts_with_nul": st["extra"].get("texts_with_nul", 0)}
        if stream:
            e["shards"] = [lo, hi]
        else:
            e["candidates"] = st["docs_out"]
        entries.append(e)
    docs = sum(k for k, _, _ in per_input)
    shards = per_input[-1][2] if stream and per_input else 0
    if not stream:
        shards = -(-docs // job.cfg.docs_per_shard)
    return {"mode": "stream" if stream else "num_docs", "docs": docs, "shards": shards, "chars": chars,
            "inputs": entries}


def _collect_bad_logs(job: Job) -> None:
    logs = sorted(job.parts.glob("bad-*.jsonl")) if job.parts.is_dir() else []
    if logs:
        atomic_write_text(job.out / BAD_LINES, "".join(p.read_text() for p in logs))


def _measure(job: Job, summary: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """The pool's measured tokens for the manifest (counts, extra), checked against corpus.tokens: off by more than
    TOKEN_TOLERANCE fails the stage (unless corpus.check_tokens=false), naming both numbers."""
    cfg = job.cfg
    est = token_estimate(_stats(job.out, len(job.corpus.inputs))) if job.tokenizer is not None else None
    info: dict[str, Any] = {"tokenizer": job.tokenizer_path, "expected": cfg.tokens, "check": cfg.check_tokens,
                            "tolerance": TOKEN_TOLERANCE, "per_input_sample": TOKEN_SAMPLE_PER_INPUT}
    if est is None:
        why = "no tokenizer (corpus.tokenizer)" if job.tokenizer is None else "no document was tokenized"
        log.info(f"prepare: pool tokens not measured: {why}"
                 + (f"; corpus.tokens={cfg.tokens:.4g} is not checked" if cfg.tokens else ""))
        return {}, {"tokens": {**info, "measured": None, "why": why}}
    tokens, se = est["tokens"], est["se"]
    kept = tokens * summary["chars"] / est["chars"] if est["chars"] else 0.0
    counts = {"tokens_estimate": round(tokens), "tokens_estimate_se": round(se), "tokens_kept_estimate": round(kept),
              "token_sample_docs": int(est["sampled_docs"])}
    info.update({"measured": tokens, "se": se, "relative_se": se / tokens if tokens else None,
                 "sampled_docs": int(est["sampled_docs"]), "docs": int(est["docs"]), "chars": int(est["chars"]),
                 "tokens_per_char": tokens / est["chars"] if est["chars"] else None, "kept_estimate": kept})
    line = (f"pool tokens ≈ {tokens:.4g} ± {se:.2g} (1 s.e., {se / tokens if tokens else 0:.2%}; "
            f"{int(est['sampled_docs']):,} of {int(est['docs']):,} documents tokenized with {job.tokenizer_path})")
    if cfg.tokens:
        off = tokens / cfg.tokens - 1
        info["off"] = off
        line += f"; corpus.tokens = {cfg.tokens:.4g} ({off:+.1%})"
        if abs(off) > TOKEN_TOLERANCE and cfg.check_tokens:
            pool = job.corpus.pool or {}
            hint = (f" ({pool['files_missing']:,} of the pool's files are missing)" if pool.get("files_missing")
                    else "")
            raise RuntimeError(
                f"prepare: the corpus measures {tokens:.4g} tokens (± {se:.2g}, {job.tokenizer_path}) but "
                f"corpus.tokens = {cfg.tokens:.4g}: off by {off:+.1%}, more than {TOKEN_TOLERANCE:.0%}{hint}. Check "
                f"the mirror and corpus.dumps, or set corpus.tokens={tokens:.4g}, or corpus.check_tokens=false")
    log.info(f"prepare: {line}")
    return counts, {"tokens": info}


def _result(job: Job, total: ShardStats, summary: dict[str, Any]) -> StageResult:
    token_counts, token_extra = _measure(job, summary)
    extra = total.extra
    docs = summary["docs"]
    sampled_out = total.dropped.get("sampled_out", 0) + (total.docs_out - docs)  # num_docs: candidates not taken
    by_source: dict[str, int] = {}
    for e in summary["inputs"]:
        if e["kept"]:
            by_source[e["source"]] = by_source.get(e["source"], 0) + e["kept"]
    counts = {"docs_read": total.docs_in, "docs_seen": docs + sampled_out, "docs": docs, "shards": summary["shards"],
              "chars": summary["chars"], "bad_lines": total.dropped.get("bad", 0),
              "duplicate_ids": total.dropped.get("duplicate", 0), "dropped_empty": total.dropped.get("empty", 0),
              "sampled_out": sampled_out, "fixed_surrogates": int(extra.get("fixed_surrogates", 0)),
              "texts_with_nul": int(extra.get("texts_with_nul", 0)), "input_files": len(summary["inputs"])}
    log.info(f"prepare: {docs} of {counts['docs_seen']} documents ({total.docs_in} records read) from "
             f"{job.corpus.where} ({len(summary['inputs'])} inputs) into {summary['shards']} shards; "
             f"{counts['bad_lines']} bad records skipped, {counts['duplicate_ids']} duplicate ids, "
             f"{counts['dropped_empty']} empty, {sampled_out} sampled out, {counts['fixed_surrogates']} with lone "
             f"surrogates fixed")
    extra_out: dict[str, Any] = {"source": job.corpus.where, "mode": summary["mode"], **token_extra}
    if job.corpus.pool:
        extra_out["pool"] = job.corpus.pool
        counts["pool_files_missing"] = job.corpus.pool["files_missing"]
    if len(by_source) <= MAX_BY_SOURCE:
        extra_out["by_source"] = by_source
    return StageResult(counts={**counts, **token_counts}, extra=extra_out)


# ---------------------------------------------------------------------------------------------------------------------


def main(spec: StageSpec) -> StageResult | None:
    cfg = load(CorpusConfig, spec.config, (spec.runtime or {}).get("settings"), where="corpus")
    data_dir = (spec.runtime or {}).get("data_dir")
    tokenizer, tokenizer_path = load_tokenizer(cfg.tokenizer, data_dir) if cfg.tokenizer else (None, None)
    if cfg.source == "hf":
        corpus = pool_hub_corpus(cfg) if cfg.pool else hf_corpus(cfg)
    elif cfg.source == "local":
        corpus = local_corpus(cfg, corpus_root(cfg, data_dir))
    else:
        raise ValueError(f"corpus.source={cfg.source!r}: expected 'local' or 'hf'")
    job = Job(cfg, spec.out, corpus, tokenizer, tokenizer_path)
    mode = "all documents" if cfg.num_docs is None and cfg.sample_fraction is None else (
        f"fraction {cfg.sample_fraction}" if cfg.num_docs is None else f"the {cfg.num_docs} smallest keys")
    total = run_shards(spec, ShardWork(shards=corpus.shards, process=partial(process_input, job),
                                       check=partial(check_outputs, job), desc=f"input files, {mode}"))
    return None if total is None else finalize(job, total)


if __name__ == "__main__":
    stage_cli(main)
