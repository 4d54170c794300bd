"""Stage `prepare`: read a corpus (local jsonl / jsonl.gz / parquet, or a Hugging Face dataset id), take a deterministic
sample of N documents, and write shards of (id, text, source, meta).

The sample keeps the N documents with the smallest hash of (seed, id): it does not depend on file order or on how
many files the corpus is split into, and it streams in O(N) memory.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from proxlab.core.config import CorpusConfig, load
from proxlab.core.formats import DOC_SCHEMA, shard_name, write_parquet
from proxlab.core.paths import under_data_dir
from proxlab.core.stage import StageResult, StageSpec, append_jsonl, stage_cli


class BadInputError(ValueError):
    """A malformed input record under corpus.on_bad_line=error; the message names file and line."""


@dataclass
class RawDoc:
    id: str
    text: str
    source: str
    meta: dict[str, Any]


@dataclass
class BadLineCounter:
    policy: str
    log_path: Path
    count: int = 0

    def __call__(self, where: str, reason: str) -> None:
        if self.policy == "error":
            raise BadInputError(f"{where}: {reason} (set corpus.on_bad_line=skip to count and skip such lines)")
        self.count += 1
        append_jsonl(self.log_path, {"where": where, "reason": reason})
        if self.count <= 5:
            print(f"[proxlab] prepare: skipping {where}: {reason}", flush=True)


def corpus_files(root: Path, include: list[str], exclude: list[str]) -> list[Path]:
    if not root.exists():
        raise FileNotFoundError(f"corpus path {root} does not exist (corpus.path / paths.data_dir / $PROXLAB_DATA_DIR)")
    candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files = [p for p in candidates if any(fnmatch.fnmatch(p.name, pat) for pat in include)
             and not any(fnmatch.fnmatch(p.name, pat) for pat in exclude)]
    if not files:
        raise FileNotFoundError(f"no corpus files matching {include} (excluding {exclude}) under {root}")
    return files


def read_local(path: Path, text_field: str, id_field: str | None, min_chars: int, bad: BadLineCounter,
               dropped: dict[str, int]) -> Iterator[RawDoc]:
    source = path.name.split(".")[0]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        records: Iterator[tuple[int, Any]] = enumerate(pq.read_table(path).to_pylist(), start=1)
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
        records = _jsonl_records(path, opener, bad)
    for lineno, rec in records:
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict):
            bad(where, f"expected a JSON object, got {type(rec).__name__}")
            continue
        text = rec.get(text_field)
        if not isinstance(text, str):
            bad(where, f"field {text_field!r} missing or not a string")
            continue
        if len(text.strip()) < min_chars:
            dropped["empty"] = dropped.get("empty", 0) + 1
            continue
        raw_id = rec.get(id_field) if id_field else None
        doc_id = f"{source}/{raw_id if raw_id is not None else lineno}"
        meta = {k: v for k, v in rec.items() if k not in (text_field, id_field) and _small(v)}
        yield RawDoc(doc_id, text, source, meta)


def _jsonl_records(path: Path, opener, bad: BadLineCounter) -> Iterator[tuple[int, Any]]:
    with opener(path, "rt", encoding="utf-8", errors="strict") as f:
        lineno = 0
        while True:
            lineno += 1
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                bad(f"{path}:{lineno}", f"invalid UTF-8 ({e.reason})")
                break  # the decoder's position is lost; the rest of the file cannot be read reliably
            if not line:
                break
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                bad(f"{path}:{lineno}", f"malformed JSON ({e.msg} at column {e.colno})")


def _small(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) and len(str(v)) < 2000 or v is None


def read_hf(cfg: CorpusConfig, bad: BadLineCounter) -> Iterator[RawDoc]:
    from datasets import load_dataset

    ds = load_dataset(cfg.hf_dataset, cfg.hf_config, split=cfg.hf_split, streaming=True)
    for i, rec in enumerate(ds):
        text = rec.get(cfg.text_field)
        if not isinstance(text, str):
            bad(f"{cfg.hf_dataset}[{i}]", f"field {cfg.text_field!r} missing or not a string")
            continue
        raw_id = rec.get(cfg.id_field) if cfg.id_field else None
        yield RawDoc(f"{cfg.hf_dataset}/{raw_id if raw_id is not None else i}", text, cfg.hf_dataset, {})


def sample_key(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest(), "big")


def deterministic_sample(docs: Iterator[RawDoc], n: int | None, seed: int) -> tuple[list[RawDoc], int, int]:
    """The n documents with the smallest keys, in key order (a seeded shuffle); also (#seen, #duplicate ids)."""
    heap: list[tuple[int, str, RawDoc]] = []  # a max-heap via negated keys
    seen_ids: set[str] = set()
    seen = duplicates = 0
    for doc in docs:
        if doc.id in seen_ids:
            duplicates += 1
            continue
        seen_ids.add(doc.id)
        seen += 1
        key = sample_key(seed, doc.id)
        if n is None or len(heap) < n:
            heapq.heappush(heap, (-key, doc.id, doc))
        elif key < -heap[0][0]:
            heapq.heapreplace(heap, (-key, doc.id, doc))
    chosen = sorted(heap, key=lambda t: (-t[0], t[1]))
    return [d for _, _, d in chosen], seen, duplicates


def main(spec: StageSpec) -> StageResult:
    cfg = load(CorpusConfig, spec.config, where="corpus")
    bad = BadLineCounter(cfg.on_bad_line, spec.out / "bad_lines.jsonl")
    dropped: dict[str, int] = {}
    if cfg.source == "hf":
        stream = read_hf(cfg, bad)
        where = cfg.hf_dataset
    elif cfg.source == "local":
        root = under_data_dir(cfg.path, "web", spec.runtime.get("data_dir"))
        files = corpus_files(root, cfg.include, cfg.exclude)
        where = str(root)
        stream = (d for f in files for d in read_local(f, cfg.text_field, cfg.id_field, cfg.min_chars,
                                                        bad, dropped))
    else:
        raise ValueError(f"corpus.source={cfg.source!r}: expected 'local' or 'hf'")

    from tqdm import tqdm

    docs, seen, duplicates = deterministic_sample(tqdm(stream, desc="prepare: reading", unit="doc"),
                                                  cfg.num_docs, cfg.seed)
    if not docs:
        raise RuntimeError(f"prepare: no usable documents in {where}")
    per_shard = cfg.docs_per_shard
    n_shards = (len(docs) + per_shard - 1) // per_shard
    for i in range(n_shards):
        rows = [{"id": d.id, "text": d.text, "source": d.source, "meta": json.dumps(d.meta, sort_keys=True)}
                for d in docs[i * per_shard:(i + 1) * per_shard]]
        write_parquet(spec.out / shard_name("docs", i), rows, DOC_SCHEMA)

    by_source: dict[str, int] = {}
    for d in docs:
        by_source[d.source] = by_source.get(d.source, 0) + 1
    counts = {"docs_seen": seen, "docs": len(docs), "shards": n_shards, "chars": sum(len(d.text) for d in docs),
              "bad_lines": bad.count, "duplicate_ids": duplicates, **{f"dropped_{k}": v for k, v in dropped.items()}}
    print(f"[proxlab] prepare: {len(docs)} of {seen} documents from {where} into {n_shards} shards "
          f"({bad.count} bad lines skipped, {duplicates} duplicate ids)", flush=True)
    return StageResult(counts=counts, extra={"by_source": by_source, "source": where})


if __name__ == "__main__":
    stage_cli(main)
