"""Stage `refiner.annotate`: a teacher labels seed documents and writes programs for the chunks of the kept ones
(paper §2.3, §A.1). Teachers and parsing rules: `proxlab.refine.build.teachers`; docs/refiners.md.

Inputs: `docs` (a prepare artifact, `docs-NNNNN.parquet`), optional `tokenizer` (the refiner's tokenizer directory;
else config `refiner_tokenizer`). Seeds: the first `num_docs` documents in corpus order (prepare writes a hash-ordered
sample, so they are a random sample of the pool). Output, per input shard (the shard executor places them):

* `doc-NNNNN.parquet`: id, text, teacher, label, edu_score, format_score, edu_raw, format_raw, excluded;
* `chunk-NNNNN.parquet`: id, chunk, text (the chunk's numbered lines, as `render_chunk_prompt` embeds them), noise,
  teacher, program, excluded: one row per chunk and noise type (LLM: navigation, url, footer; rules: one "rules" row),
  for the documents whose label (the rules label, or Eq. 2 on the scores) is keep. Chunks are cut exactly as the
  refine stage cuts them: `chunk_document` with the refiner's tokenizer, `chunk_tokens` and `overlong_line`.
* `stats.json` and the manifest: excluded rows per kind and level, parse failures, teacher calls, tokens, FLOPs.

Unparsable or out-of-range answers are counted and excluded, never fatal. The stage fails (no `_SUCCESS`) when the
excluded fraction of the doc rows or of the chunk rows exceeds `max_excluded_fraction`, naming the fraction and
showing three excluded examples.

Runs in either environment (the vLLM one too): no LitGPT, Lightning or lm-eval.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from proxlab.core.config import AnnotateConfig, ConfigError, load
from proxlab.core.flops import inference_flops
from proxlab.core.formats import corpus_shards, read_docs, shard_index, shard_name, write_parquet
from proxlab.core.logs import get_logger
from proxlab.core.sharding import ShardStats, ShardWork, run_shards
from proxlab.core.stage import StageResult, StageSpec, accelerator_device, atomic_write_text, stage_cli
from proxlab.core.tracking import MetricsLogger

log = get_logger("refiner.annotate")

DOC, CHUNK = "doc", "chunk"
STATS_FILE = "stats.json"
ANNOTATION_DOC_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("teacher", pa.string()), ("label", pa.string()),
    ("edu_score", pa.int32()), ("format_score", pa.int32()), ("edu_raw", pa.string()), ("format_raw", pa.string()),
    ("excluded", pa.string()),
])
ANNOTATION_CHUNK_SCHEMA = pa.schema([
    ("id", pa.string()), ("chunk", pa.int32()), ("text", pa.string()), ("noise", pa.string()),
    ("teacher", pa.string()), ("program", pa.string()), ("excluded", pa.string()),
])


def check_config(cfg: AnnotateConfig) -> None:
    if cfg.teacher not in ("rules", "llm"):
        raise ConfigError("refiner.annotate.teacher", cfg.teacher, "expected rules or llm")
    if cfg.overlong_line not in ("own_chunk", "skip"):
        raise ConfigError("refiner.annotate.overlong_line", cfg.overlong_line, "expected own_chunk or skip")
    if cfg.chunk_tokens < 1:
        raise ConfigError("refiner.annotate.chunk_tokens", cfg.chunk_tokens, "must be > 0")
    if cfg.num_docs is not None and cfg.num_docs < 1:
        raise ConfigError("refiner.annotate.num_docs", cfg.num_docs, "must be > 0 (or null: every document)")
    if not 0.0 <= cfg.max_excluded_fraction <= 1.0:
        raise ConfigError("refiner.annotate.max_excluded_fraction", cfg.max_excluded_fraction, "must lie in [0, 1]")
    if cfg.teacher == "llm":
        from proxlab.core.config import check_generate

        check_generate(cfg.llm, "annotate.llm")


def seeds_per_shard(shards: list[Path], num_docs: int | None) -> list[int]:
    """How many leading documents of each shard are seeds: the first `num_docs` of the corpus (None: all)."""
    out, left = [], num_docs
    for shard in shards:
        n = pq.ParquetFile(shard).metadata.num_rows
        take = n if left is None else min(n, left)
        out.append(take)
        if left is not None:
            left -= take
    return out


def refiner_tokenizer_path(spec: StageSpec, cfg: AnnotateConfig) -> str:
    """The refiner's tokenizer: the `tokenizer` input, else `refiner_tokenizer` (a path or a model name)."""
    if "tokenizer" in spec.inputs:
        return str(spec.input("tokenizer"))
    if cfg.refiner_tokenizer:
        from proxlab.models import resolve_model

        return resolve_model(cfg.refiner_tokenizer, spec.runtime.get("data_dir"))
    raise ValueError("refiner.annotate: chunks are cut with the refiner's tokenizer, but the stage has no `tokenizer` "
                     "input and refiner.annotate.refiner_tokenizer is not set")


class ShardAnnotator:
    """`process(index, path)` of the shard executor. The teacher and tokenizer load on the first shard with work."""

    def __init__(self, spec: StageSpec, cfg: AnnotateConfig, seeds: list[int]):
        self.spec, self.cfg, self.seeds = spec, cfg, seeds
        self.teacher = None
        self.counter = None
        self.timing: dict[str, Any] = {}

    def _load(self) -> None:
        from proxlab.core.paths import models_cache_dir
        from proxlab.refine.backends.base import load_tokenizer
        from proxlab.refine.build.teachers import make_teacher
        from proxlab.refine.chunking import hf_token_counter

        self.counter = hf_token_counter(load_tokenizer(refiner_tokenizer_path(self.spec, self.cfg)))
        self.teacher = make_teacher(self.cfg, data_dir=self.spec.runtime.get("data_dir"),
                                    cache_root=models_cache_dir().parent,
                                    device=accelerator_device(self.spec.runtime.get("accelerator")))

    def __call__(self, index: int, path: Path) -> ShardStats:
        from proxlab.refine.chunking import chunk_document, uncovered_lines

        docs = read_docs(path, columns=["id", "text"])[: self.seeds[index]]
        stats = ShardStats(docs_in=len(docs))
        stats.chars_in = sum(len(d["text"]) for d in docs)
        doc_rows: list[dict[str, Any]] = []
        chunk_rows: list[dict[str, Any]] = []
        if docs and self.teacher is None:
            self._load()
        window = max(self.cfg.llm.docs_per_call, 1)
        for w in range(0, len(docs), window):
            batch = docs[w: w + window]
            for doc, ann in zip(batch, self.teacher.annotate_docs(batch, stats)):
                doc_rows.append({"id": doc["id"], "text": doc["text"], "teacher": self.teacher.name,
                                 **{k: getattr(ann, k) for k in ("label", "edu_score", "format_score", "edu_raw",
                                                                 "format_raw", "excluded")}})
                if ann.excluded:
                    stats.count(f"excluded/{DOC}/{ann.excluded}")
                if not ann.keep():
                    continue
                stats.docs_out += 1
                stats.chars_out += len(doc["text"])
                n_lines = doc["text"].count("\n") + 1
                chunks = chunk_document(doc["text"], self.counter, self.cfg.chunk_tokens, self.cfg.overlong_line)
                if self.cfg.overlong_line == "skip":
                    stats.count("lines_skipped_overlong", len(uncovered_lines(chunks, n_lines)))
                stats.count("chunks", len(chunks))
                for k, (chunk, anns) in enumerate(zip(chunks, self.teacher.annotate_chunks(doc["text"], chunks,
                                                                                          stats))):
                    for a in anns:
                        chunk_rows.append({"id": doc["id"], "chunk": k, "text": chunk.text, "noise": a.noise,
                                           "teacher": self.teacher.name, "program": a.program,
                                           "excluded": a.excluded})
                        if a.excluded:
                            stats.count(f"excluded/{CHUNK}/{a.excluded}")
        stats.count("doc_rows", len(doc_rows))
        stats.count("chunk_rows", len(chunk_rows))
        write_parquet(self.spec.out / shard_name(CHUNK, index), chunk_rows, ANNOTATION_CHUNK_SCHEMA)
        write_parquet(self.spec.out / shard_name(DOC, index), doc_rows, ANNOTATION_DOC_SCHEMA)
        return stats

    def close(self) -> None:
        if self.teacher is not None:
            self.timing = self.teacher.close()
            self.teacher = None


def excluded_examples(out: Path, level: str, n: int = 3) -> list[str]:
    """The first `n` excluded rows of a level, as short lines for an error message."""
    examples = []
    for f in sorted(out.glob(f"{level}-*.parquet")):
        for r in pq.read_table(f).to_pylist():
            if r["excluded"]:
                answer = r.get("program") if level == CHUNK else (r["edu_raw"] if r["excluded"].startswith("edu")
                                                                 else r["format_raw"])
                where = r["id"] if level == DOC else f"{r['id']} chunk {r['chunk']} ({r['noise']})"
                examples.append(f"{where}: {r['excluded']}: teacher wrote {(answer or '')[:160]!r}")
                if len(examples) == n:
                    return examples
    return examples


def check_annotations(shards: list[Path], out: Path, seeds: list[int], max_excluded: float) -> None:
    """Every input shard has its two files with its seed ids in order; the excluded fractions are within bounds."""
    totals = {DOC: [0, 0], CHUNK: [0, 0]}  # level -> [rows, excluded]
    for shard, n_seeds in zip(shards, seeds):
        index = shard_index(shard)
        want = pq.read_table(shard, columns=["id"]).column("id").to_pylist()[:n_seeds]
        for level in (DOC, CHUNK):
            path = out / shard_name(level, index)
            if not path.exists():
                raise RuntimeError(f"{out}: {path.name} is missing for input shard {shard.name}")
            t = pq.read_table(path, columns=["id", "excluded"])
            totals[level][0] += t.num_rows
            totals[level][1] += t.num_rows - t.column("excluded").null_count
            if level == DOC and t.column("id").to_pylist() != want:
                raise RuntimeError(f"{path}: its ids are not the first {n_seeds} documents of {shard.name}, in order")
    for level, (rows, excluded) in totals.items():
        if rows and excluded / rows > max_excluded:
            examples = "\n  ".join(excluded_examples(out, level))
            raise RuntimeError(f"refiner.annotate: {excluded}/{rows} = {excluded / rows:.1%} of the {level} rows are "
                               f"excluded, more than max_excluded_fraction={max_excluded:.1%} (a broken teacher or "
                               f"prompt?). Examples:\n  {examples}")


def main(spec: StageSpec) -> StageResult | None:
    cfg = load(AnnotateConfig, spec.config, spec.runtime.get("settings"), where="refiner.annotate")
    check_config(cfg)
    shards = corpus_shards(spec.input("docs"), "docs")
    seeds = seeds_per_shard(shards, cfg.num_docs)
    annotator = ShardAnnotator(spec, cfg, seeds)
    try:
        total = run_shards(spec, ShardWork(
            shards=shards, process=annotator,
            check=partial(check_annotations, shards, spec.out, seeds, cfg.max_excluded_fraction),
            desc=f"teacher {cfg.teacher}"))
        annotator.close()
        return None if total is None else finish(spec, cfg, total, annotator.timing)
    finally:
        annotator.close()


def finish(spec: StageSpec, cfg: AnnotateConfig, total: ShardStats, timing: dict[str, Any]) -> StageResult:
    e = total.extra
    counts: dict[str, Any] = {
        "docs_in": total.docs_in, "docs_kept": total.docs_out, "doc_rows": int(e.get("doc_rows", 0)),
        "chunk_rows": int(e.get("chunk_rows", 0)), "chunks": int(e.get("chunks", 0)),
        "teacher_calls": int(e.get("teacher_calls", 0)), "prompt_tokens": int(e.get("prompt_tokens", 0)),
        "output_tokens": int(e.get("output_tokens", 0)), "docs_truncated": int(e.get("docs_truncated", 0)),
        **{k: int(v) for k, v in sorted(e.items()) if k.startswith(("excluded/", "unparsed/", "finish/", "rules_"))}}
    for level in (DOC, CHUNK):
        counts[f"excluded/{level}"] = sum(v for k, v in counts.items() if k.startswith(f"excluded/{level}/"))
    flops, params = 0.0, None
    if cfg.teacher == "llm":
        from proxlab.models import resolve_model
        from proxlab.refine.backends.base import param_counts

        params = param_counts(resolve_model(cfg.llm.model, spec.runtime.get("data_dir")))[1]
        flops = inference_flops(params, counts["prompt_tokens"], counts["output_tokens"])
    stats = {"teacher": cfg.teacher, "model": cfg.llm.model if cfg.teacher == "llm" else None,
             "params_non_embedding": params, "teacher_flops": flops, "counts": counts, **timing}
    atomic_write_text(spec.out / STATS_FILE, json.dumps(stats, indent=2, sort_keys=True))
    metrics = MetricsLogger.for_stage(spec)
    metrics.summary({f"annotate/{k}": v for k, v in counts.items()} | {"annotate/flops": flops})
    metrics.close()
    log.info(f"refiner.annotate (teacher {cfg.teacher}): {total.docs_out}/{total.docs_in} seed documents kept, "
             f"{counts['chunk_rows']} chunk annotations; excluded {counts['excluded/doc']} doc and "
             f"{counts['excluded/chunk']} chunk rows; {counts['teacher_calls']} teacher calls, {flops:.3e} FLOPs")
    return StageResult(counts=counts, flops={"annotate": flops}, extra=stats)


if __name__ == "__main__":
    stage_cli(main)
