"""Stages `refine.generate_doc` / `refine.generate_chunk`: a refining model writes a program for every document (doc
level) or for every chunk of every document (chunk level). Executing them is `refine.apply`'s job, so re-executing
with other modes or thresholds never re-runs a model ("tag once, threshold later").

Input: a corpus artifact (`docs-NNNNN.parquet`). Output, per input shard, `programs-NNNNN.parquet`:

    id, chunk_index, start_line, end_line, prompt_tokens, output, output_tokens, finish_reason

* doc level: one row per document (chunk_index 0, the whole line range); the prompt is the raw document in the chat
  format of the refiner (prompts.render_doc_prompt), truncated to `max_prompt_tokens`.
* chunk level: one row per chunk (chunking.chunk_document with `chunk_tokens`, `overlong_line`), in chunk order, with
  the chunk's global line range; a document without any chunk (every line over-long and skipped) gets one row with
  chunk_index -1 and finish_reason "no_chunks", so every input id appears in the output.
* finish_reason: stop | length | prompt_too_long (not sent: no room left in the model's context) | no_chunks.

Backends (`backend`: hf | vllm | openai) sit behind `proxlab.refine.backends.Backend`. The model is loaded only when a
shard needs work, so a rerun whose shards are all finished loads nothing. Shards are placed by the shard executor
(`proxlab.core.sharding`: SPMD ranks or job-array claims); a finished shard is never redone, an interrupted one is
redone from its start. Before the stage completes, its check proves that the programs cover every input id exactly as
described; it reports prompt/generated tokens and inference FLOPs (2·N·(prompt + generated), N = the refiner's
non-embedding parameters), and names the refiner it ran in `refiner.json` for the apply stage.

This module runs in the vLLM environment too: no LitGPT, Hydra or W&B at import time (tracking imports W&B lazily).
"""

from __future__ import annotations

import dataclasses

import json
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from proxlab.core.config import GenerateConfig, load
from proxlab.core.flops import inference_flops
from proxlab.core.formats import (NO_CHUNKS, PROGRAM_SCHEMA, PROGRAMS, REFINER_FILE, list_shards, read_docs,
                                  shard_index, shard_name, write_parquet)
from proxlab.core.logs import get_logger
from proxlab.core.sharding import ShardStats, ShardWork, run_shards
from proxlab.core.stage import StageResult, StageSpec, accelerator_device, atomic_write_text, stage_cli
from proxlab.core.tracking import MetricsLogger

logger = get_logger("refine.generate")

LEVELS = ("doc", "chunk")


# ---------------------------------------------------------------------------------------------------------------------
# Failure kinds visible in the raw outputs (paper Table 36: repeated or empty output)


def is_repetitive(output: str, token_ids: list[int] | None = None, min_repeats: int = 3) -> bool:
    """A program line emitted `min_repeats`+ times (``remove_lines(start=7, end=7)`` over and over), or generated
    tokens that end in a loop (a period of ≤ 32 tokens repeated 4 times)."""
    lines = Counter(line.strip() for line in output.split("\n") if line.strip())
    if lines and max(lines.values()) >= min_repeats:
        return True
    ids = token_ids or []
    for period in range(1, 33):
        if len(ids) >= 4 * period and ids[-period:] * 4 == ids[-4 * period:]:
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------------
# Prompts of one shard


class PromptBuilder:
    """Doc- or chunk-level prompts (token ids) for documents, with the refiner's tokenizer and chat format.

    """

    def __init__(self, cfg: GenerateConfig, level: str, tokenizer):
        from proxlab.refine.chunking import hf_token_counter

        self.level = level
        self.tokenizer = tokenizer
        self.chat_format = cfg.chat_format
        self.double_bos = cfg.double_bos  # chunk level: the reference's BOS from vLLM before the rendered <s>
        self.truncation = cfg.truncation
        self.max_prompt_tokens = cfg.max_prompt_tokens
        self.chunk_tokens = cfg.chunk_tokens
        self.overlong = cfg.overlong_line
        self.counter = hf_token_counter(tokenizer) if level == "chunk" else None

    def doc_prompt(self, text: str) -> tuple[list[int], bool]:
        """(prompt ids, whether the prompt was truncated)."""
        from proxlab.refine.prompts import encode_prompt, render_doc_prompt, render_doc_prompt_text

        full = encode_prompt(render_doc_prompt_text(text, self.tokenizer, self.chat_format), self.tokenizer)
        if len(full) <= self.max_prompt_tokens:
            return full, False
        if self.truncation == "prompt":
            return full[: self.max_prompt_tokens], True
        return render_doc_prompt(text, self.tokenizer, self.max_prompt_tokens, self.truncation, self.chat_format), True

    def chunk_prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of a rendered chunk prompt: the one place chunk prompts are encoded (generate and sft_data)."""
        from proxlab.refine.prompts import encode_chunk_prompt

        return encode_chunk_prompt(prompt, self.tokenizer, self.double_bos)

    def rows(self, docs: list[dict[str, Any]],
             stats: ShardStats) -> tuple[list[dict[str, Any]], list[list[int] | None]]:
        """Output rows (without model fields) and their prompts; None for rows that get no model call."""
        from proxlab.refine.chunking import chunk_document, uncovered_lines
        from proxlab.refine.prompts import render_chunk_prompt

        rows: list[dict[str, Any]] = []
        prompts: list[list[int] | None] = []
        for doc in docs:
            text = doc["text"]
            n_lines = text.count("\n") + 1
            if self.level == "doc":
                ids, truncated = self.doc_prompt(text)
                stats.count("prompts_truncated", int(truncated))
                rows.append({"id": doc["id"], "chunk_index": 0, "start_line": 0, "end_line": n_lines - 1})
                prompts.append(ids)
                continue
            chunks = chunk_document(text, self.counter, self.chunk_tokens, self.overlong)
            skipped = len(uncovered_lines(chunks, n_lines)) if self.overlong == "skip" else 0
            stats.count("lines_skipped_overlong", skipped)
            if not chunks:
                rows.append({"id": doc["id"], "chunk_index": -1, "start_line": 0, "end_line": n_lines - 1})
                prompts.append(None)
                continue
            for k, chunk in enumerate(chunks):
                rows.append({"id": doc["id"], "chunk_index": k, "start_line": chunk.start_line,
                             "end_line": chunk.end_line})
                prompts.append(self.chunk_prompt_ids(render_chunk_prompt(chunk, self.tokenizer, self.chat_format)))
        return rows, prompts


# ---------------------------------------------------------------------------------------------------------------------
# Checks


def check_programs(docs_dir: Path, programs_dir: Path, level: str) -> None:
    """Every input document has its programs, in order, and nothing else: the stage fails otherwise."""
    for shard in list_shards(docs_dir):
        index = shard_index(shard)
        ids = pq.read_table(shard, columns=["id"]).column("id").to_pylist()
        path = Path(programs_dir) / shard_name(PROGRAMS, index)
        if not path.exists():
            raise RuntimeError(f"{programs_dir}: {path.name} is missing for input shard {shard.name}")
        t = pq.read_table(path, columns=["id", "chunk_index"])
        pid, pchunk = t.column("id").to_pylist(), t.column("chunk_index").to_pylist()
        if level == "doc":
            if pid != ids:
                raise RuntimeError(f"{path}: {len(pid)} programs for {len(ids)} documents, or ids out of order")
            continue
        expected_next: dict[str, int] = {}
        order: list[str] = []
        for doc_id, k in zip(pid, pchunk):
            if doc_id not in expected_next:
                order.append(doc_id)
                expected_next[doc_id] = 0
            if k == -1 and expected_next[doc_id] == 0:
                expected_next[doc_id] = -1
                continue
            if k != expected_next[doc_id]:
                raise RuntimeError(f"{path}: document {doc_id!r} has chunk {k} where chunk {expected_next[doc_id]} "
                                   f"was expected")
            expected_next[doc_id] += 1
        if order != ids:
            missing, extra = set(ids) - set(order), set(order) - set(ids)
            raise RuntimeError(f"{path}: programs do not cover the shard's documents exactly once, in order "
                               f"({len(missing)} missing e.g. {sorted(missing)[:3]}, {len(extra)} unknown "
                               f"e.g. {sorted(extra)[:3]})")


# ---------------------------------------------------------------------------------------------------------------------
# The stage


class ShardGenerator:
    """`process(index, path)` of the shard executor: prompts, generation and the programs file of one shard.

    The backend is built on the first shard that needs it, so a rerun whose shards are all finished loads no model."""

    def __init__(self, spec: StageSpec, cfg: GenerateConfig, level: str):
        self.spec, self.cfg, self.level = spec, cfg, level
        self.backend = None
        self.builder: PromptBuilder | None = None
        self.log = MetricsLogger.for_stage(spec)
        self.docs_done = self.calls = 0
        self.t0 = time.perf_counter()

    def _load(self) -> None:
        from proxlab.refine.backends import make_backend

        self.backend = make_backend(self.cfg, data_dir=self.spec.runtime.get("data_dir"), cache_root=_cache_root(),
                                    device=accelerator_device(self.spec.runtime.get("accelerator")))
        self.builder = PromptBuilder(self.cfg, self.level, self.backend.tokenizer)
        self.t0 = time.perf_counter()  # throughput is measured from here, without the model load
        logger.info(f"refine.generate_{self.level}: {self.backend.name} backend, model {self.cfg.model} "
                    f"({self.backend.model_path}) in {self.backend.dtype or 'the server dtype'}, loaded in "
                    f"{self.backend.stats.load_s:.1f} s")

    def __call__(self, index: int, path: Path) -> ShardStats:
        t_shard = time.perf_counter()
        docs = read_docs(path)
        stats = ShardStats(docs_in=len(docs), docs_out=len(docs))
        stats.chars_in = stats.chars_out = sum(len(d["text"]) for d in docs)
        out_rows: list[dict[str, Any]] = []
        for w in range(0, len(docs), self.cfg.docs_per_call):
            out_rows += self._generate(docs[w: w + self.cfg.docs_per_call], stats)
        stats.count("chunks" if self.level == "chunk" else "docs_prompted",
                    sum(1 for r in out_rows if r["chunk_index"] >= 0))
        write_parquet(self.spec.out / shard_name(PROGRAMS, index), out_rows, PROGRAM_SCHEMA)
        stats.count("wall_s", time.perf_counter() - t_shard)
        return stats

    def _generate(self, docs: list[dict[str, Any]], stats: ShardStats) -> list[dict[str, Any]]:
        """Rows for one backend call's documents; rows without a prompt (no chunks) get no model call."""
        if self.backend is None:
            self._load()
        rows, prompts = self.builder.rows(docs, stats)
        todo = [i for i, p in enumerate(prompts) if p is not None]
        gens = dict(zip(todo, self.backend.generate([prompts[i] for i in todo], self.cfg.max_new_tokens)
                        if todo else []))
        out = [_program_row(row, gens.get(i), stats) for i, row in enumerate(rows)]
        self.docs_done += len(docs)
        self.calls += 1
        elapsed, b = time.perf_counter() - self.t0, self.backend.stats
        self.log.log({"generate/docs_done": self.docs_done, "generate/docs_per_s": self.docs_done / elapsed,
                      "generate/output_tokens": b.output_tokens,
                      "generate/output_tokens_per_s": b.output_tokens / max(b.generate_s, 1e-9)}, step=self.calls)
        return out

    def close(self) -> dict[str, float]:
        """Free the engine; the load and generate seconds of this process. (The logger stays open: the stage's
        summary goes into the same W&B run as its progress.)"""
        if self.backend is None:
            return {"backend_load_s": 0.0, "backend_generate_s": 0.0}
        timing = {"backend_load_s": round(self.backend.stats.load_s, 3),
                  "backend_generate_s": round(self.backend.stats.generate_s, 3),
                  "dtype": self.backend.dtype}  # what the engine loaded (None: an openai server's own)
        self.backend.close()
        self.backend = None
        return timing


def _program_row(row: dict[str, Any], g, stats: ShardStats) -> dict[str, Any]:
    """An output row from a generation (None: a document without chunks), counted into `stats`."""
    from proxlab.refine.backends.base import PROMPT_TOO_LONG

    if g is None:
        stats.count("finish/" + NO_CHUNKS)
        return {**row, "prompt_tokens": 0, "output": "", "output_tokens": 0, "finish_reason": NO_CHUNKS}
    stats.count("prompts")
    stats.count("prompt_tokens_skipped" if g.finish_reason == PROMPT_TOO_LONG else "prompt_tokens", g.prompt_tokens)
    stats.count("output_tokens", g.output_tokens)
    stats.count("finish/" + g.finish_reason)
    if g.finish_reason != PROMPT_TOO_LONG:
        stats.count("fail/empty_output", int(not g.text.strip()))
        stats.count("fail/repeated_output", int(is_repetitive(g.text, g.token_ids)))
    return {**row, "prompt_tokens": g.prompt_tokens, "output": g.text, "output_tokens": g.output_tokens,
            "finish_reason": g.finish_reason}


def _cache_root() -> Path:
    from proxlab.core.paths import models_cache_dir

    return models_cache_dir().parent


def main(spec: StageSpec) -> StageResult | None:
    level = spec.config.get("level")
    if level not in LEVELS:
        raise ValueError(f"refine generate: config level={level!r}, expected one of {LEVELS}")
    cfg = load(GenerateConfig, {k: v for k, v in spec.config.items() if k != "level"},
               spec.runtime.get("settings"), where=f"refine.{level}")
    if "refiner" in spec.inputs:  # model=built: the refiner.select artifact's export (docs/refiners.md)
        from proxlab.refine.build.select import REFINER

        cfg = dataclasses.replace(cfg, model=str(spec.input("refiner") / REFINER), tokenizer=None)
    docs = spec.input("docs")
    generator = ShardGenerator(spec, cfg, level)
    try:
        total = run_shards(spec, ShardWork(shards=list_shards(docs), process=generator,
                                           check=partial(check_programs, docs, spec.out, level), desc=level))
        timing = generator.close()
        return None if total is None else finish(spec, cfg, level, total, timing, generator.log)
    finally:
        generator.close()
        generator.log.close()


def finish(spec: StageSpec, cfg: GenerateConfig, level: str, total: ShardStats, timing: dict[str, float],
           log: MetricsLogger) -> StageResult:
    from proxlab.models import resolve_model
    from proxlab.refine.backends.base import param_counts

    data_dir = spec.runtime.get("data_dir")
    model_path = resolve_model(cfg.model, data_dir)
    tokenizer_path = resolve_model(cfg.tokenizer, data_dir) if cfg.tokenizer else model_path
    atomic_write_text(spec.out / REFINER_FILE, json.dumps(
        {"model": cfg.model, "model_path": model_path, "tokenizer_path": tokenizer_path}, indent=2))
    n_total, n_nonembed = param_counts(model_path)
    counts = generation_counts(total, level)
    flops = inference_flops(n_nonembed, counts["prompt_tokens"], counts["output_tokens"])
    prompts = counts["prompts"]
    failures = {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("fail/")}
    finish_reasons = {k.split("/", 1)[1]: v for k, v in counts.items() if k.startswith("finish/")}
    log.summary({**{f"generate/{k}": v for k, v in counts.items()},
                 "generate/params_non_embedding": n_nonembed, "generate/flops": flops,
                 "generate/output_tokens_per_prompt": counts["output_tokens"] / max(prompts, 1),
                 **{f"generate/fail_rate/{k}": v / max(prompts, 1) for k, v in failures.items()}})
    logger.info(f"refine.generate_{level}: {prompts} prompts for {total.docs_in} documents, "
                f"{counts['prompt_tokens']} prompt + {counts['output_tokens']} generated tokens, {flops:.3e} FLOPs "
                f"(N={n_nonembed:,}); finish {finish_reasons}; failures {failures}")
    return StageResult(counts=counts, flops={"refine": flops},
                       extra={"level": level, "backend": cfg.backend, "model": cfg.model, "model_path": model_path,
                              "dtype": cfg.dtype,  # the planned dtype; the engine's, when this process loaded it
                              "params_total": n_total, "params_non_embedding": n_nonembed,
                              "finish_reasons": finish_reasons, "failures": failures, **timing})


def generation_counts(total: ShardStats, level: str) -> dict[str, int]:
    e = total.extra
    counts = {"docs_in": total.docs_in, "docs_out": total.docs_out, "prompts": int(e.get("prompts", 0)),
              "prompt_tokens": int(e.get("prompt_tokens", 0)), "output_tokens": int(e.get("output_tokens", 0)),
              "prompt_tokens_skipped": int(e.get("prompt_tokens_skipped", 0)),
              "prompts_truncated": int(e.get("prompts_truncated", 0))}
    counts["tokens_in"], counts["tokens_generated"] = counts["prompt_tokens"], counts["output_tokens"]
    if level == "chunk":
        counts.update(chunks=int(e.get("chunks", 0)), lines_skipped_overlong=int(e.get("lines_skipped_overlong", 0)))
    counts.update({k: int(v) for k, v in e.items() if k.startswith(("finish/", "fail/"))})
    return counts


if __name__ == "__main__":
    stage_cli(main)
