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
shard needs work, so a rerun whose shards are all finished loads nothing. Shards are split by rank
(`runtime.rank/world_size`, else SLURM_PROCID/SLURM_NTASKS); a finished shard has its `shard-NNNNN.json` and is never
redone; an interrupted one is redone from its start. At the end the stage checks that the programs cover every input
id exactly as described, and reports prompt/generated tokens and inference FLOPs (2·N·(prompt + generated), N = the
refiner's non-embedding parameters).

This module runs in the vLLM environment too: no LitGPT, Hydra or W&B at import time (tracking imports W&B lazily).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from proxlab.experiments.config import generate_settings
from proxlab.experiments.flops import inference_flops
from proxlab.experiments.spec import StageResult, StageSpec, rank_and_world, stage_cli
from proxlab.experiments.tracking import MetricsLogger
from proxlab.refine.shards import ShardStats, list_shards, read_docs, run_sharded, shard_name, write_parquet

PROGRAM_SCHEMA = pa.schema([
    ("id", pa.string()), ("chunk_index", pa.int32()), ("start_line", pa.int32()), ("end_line", pa.int32()),
    ("prompt_tokens", pa.int32()), ("output", pa.string()), ("output_tokens", pa.int32()),
    ("finish_reason", pa.string()),
])
PROGRAMS = "programs"
NO_CHUNKS = "no_chunks"
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

    `cfg` holds every GenerateConfig setting and `level` (``proxlab.experiments.config.generate_settings``)."""

    def __init__(self, cfg: dict[str, Any], tokenizer):
        from proxlab.refine.chunking import hf_token_counter

        self.cfg = cfg
        self.level = cfg["level"]
        self.tokenizer = tokenizer
        self.chat_format = cfg["chat_format"]
        self.truncation = cfg["truncation"]
        self.max_prompt_tokens = int(cfg["max_prompt_tokens"])
        self.chunk_tokens = int(cfg["chunk_tokens"])
        self.overlong = cfg["overlong_line"]
        self.counter = hf_token_counter(tokenizer) if self.level == "chunk" else None

    def doc_prompt(self, text: str) -> tuple[list[int], bool]:
        """(prompt ids, whether the prompt was truncated)."""
        from proxlab.refine.prompts import encode_prompt, render_doc_prompt, render_doc_prompt_text

        full = encode_prompt(render_doc_prompt_text(text, self.tokenizer, self.chat_format), self.tokenizer)
        if len(full) <= self.max_prompt_tokens:
            return full, False
        if self.truncation == "prompt":
            return full[: self.max_prompt_tokens], True
        return render_doc_prompt(text, self.tokenizer, self.max_prompt_tokens, self.truncation, self.chat_format), True

    def rows(self, docs: list[dict[str, Any]],
             stats: ShardStats) -> tuple[list[dict[str, Any]], list[list[int] | None]]:
        """Output rows (without model fields) and their prompts; None for rows that get no model call."""
        from proxlab.refine.chunking import chunk_document, uncovered_lines
        from proxlab.refine.prompts import encode_prompt, render_chunk_prompt

        rows: list[dict[str, Any]] = []
        prompts: list[list[int] | None] = []
        for doc in docs:
            text = doc["text"]
            n_lines = text.count("\n") + 1
            if self.level == "doc":
                ids, truncated = self.doc_prompt(text)
                stats.extra["prompts_truncated"] = stats.extra.get("prompts_truncated", 0) + int(truncated)
                rows.append({"id": doc["id"], "chunk_index": 0, "start_line": 0, "end_line": n_lines - 1})
                prompts.append(ids)
                continue
            chunks = chunk_document(text, self.counter, self.chunk_tokens, self.overlong)
            skipped = len(uncovered_lines(chunks, n_lines)) if self.overlong == "skip" else 0
            stats.extra["lines_skipped_overlong"] = stats.extra.get("lines_skipped_overlong", 0) + skipped
            if not chunks:
                rows.append({"id": doc["id"], "chunk_index": -1, "start_line": 0, "end_line": n_lines - 1})
                prompts.append(None)
                continue
            for k, chunk in enumerate(chunks):
                rows.append({"id": doc["id"], "chunk_index": k, "start_line": chunk.start_line,
                             "end_line": chunk.end_line})
                prompts.append(encode_prompt(render_chunk_prompt(chunk, self.tokenizer, self.chat_format),
                                             self.tokenizer))
        return rows, prompts


# ---------------------------------------------------------------------------------------------------------------------
# Checks


def check_programs(docs_dir: Path, programs_dir: Path, level: str) -> None:
    """Every input document has its programs, in order, and nothing else: the stage fails otherwise."""
    for shard in list_shards(docs_dir):
        index = int(shard.stem.rsplit("-", 1)[1])
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


def _cache_root() -> Path:
    from proxlab.experiments.paths import models_cache_dir

    return models_cache_dir().parent


def _device(runtime: dict[str, Any]) -> str | None:
    acc = runtime.get("accelerator", "auto")
    return {"cpu": "cpu", "gpu": "cuda"}.get(acc)


def main(spec: StageSpec) -> StageResult:
    from tqdm import tqdm

    from proxlab.models import resolve_model
    from proxlab.refine.backends import make_backend
    from proxlab.refine.backends.base import PROMPT_TOO_LONG, param_counts

    cfg = generate_settings(spec.config, spec.runtime)
    level = cfg.get("level")
    if level not in LEVELS:
        raise ValueError(f"refine generate: config level={level!r}, expected one of {LEVELS}")
    rank, world = rank_and_world(spec.runtime.get("rank"), spec.runtime.get("world_size"))
    data_dir = spec.runtime.get("data_dir")
    in_dir = spec.input("docs")
    in_shards = list_shards(in_dir)
    max_new = int(cfg["max_new_tokens"])
    window = max(1, int(cfg["docs_per_shard"]))  # documents per backend call (progress, memory)
    log = MetricsLogger.for_stage(spec, rank)
    state: dict[str, Any] = {"backend": None, "builder": None, "docs_done": 0, "t0": time.perf_counter(), "step": 0}

    def backend():
        if state["backend"] is None:
            b = make_backend(cfg, data_dir=data_dir, cache_root=_cache_root(), device=_device(spec.runtime))
            state["backend"], state["builder"] = b, PromptBuilder(cfg, b.tokenizer)
            state["t0"] = time.perf_counter()  # throughput is measured from here, without the model load
            print(f"[proxlab] refine.generate_{level}: {b.name} backend, model {cfg['model']} "
                  f"({b.model_path}), loaded in {b.stats.load_s:.1f} s", flush=True)
        return state["backend"]

    def process(index: int, path: Path) -> ShardStats:
        t_shard = time.perf_counter()
        docs = read_docs(path)
        stats = ShardStats(docs_in=len(docs), docs_out=len(docs))
        stats.chars_in = stats.chars_out = sum(len(d["text"]) for d in docs)
        out_rows: list[dict[str, Any]] = []
        extra = stats.extra
        for w in range(0, len(docs), window):
            b = backend()
            part = docs[w: w + window]
            rows, prompts = state["builder"].rows(part, stats)
            todo = [i for i, p in enumerate(prompts) if p is not None]
            gens = b.generate([prompts[i] for i in todo], max_new) if todo else []
            by_row = dict(zip(todo, gens))
            for i, row in enumerate(rows):
                g = by_row.get(i)
                if g is None:
                    out_rows.append({**row, "prompt_tokens": 0, "output": "", "output_tokens": 0,
                                     "finish_reason": NO_CHUNKS})
                    extra["finish/" + NO_CHUNKS] = extra.get("finish/" + NO_CHUNKS, 0) + 1
                    continue
                out_rows.append({**row, "prompt_tokens": g.prompt_tokens, "output": g.text,
                                 "output_tokens": g.output_tokens, "finish_reason": g.finish_reason})
                extra["prompts"] = extra.get("prompts", 0) + 1
                key = "prompt_tokens_skipped" if g.finish_reason == PROMPT_TOO_LONG else "prompt_tokens"
                extra[key] = extra.get(key, 0) + g.prompt_tokens
                extra["output_tokens"] = extra.get("output_tokens", 0) + g.output_tokens
                extra["finish/" + g.finish_reason] = extra.get("finish/" + g.finish_reason, 0) + 1
                if g.finish_reason != PROMPT_TOO_LONG:
                    extra["fail/empty_output"] = extra.get("fail/empty_output", 0) + int(not g.text.strip())
                    extra["fail/repeated_output"] = (extra.get("fail/repeated_output", 0)
                                                     + int(is_repetitive(g.text, g.token_ids)))
            state["docs_done"] += len(part)
            state["step"] += 1
            elapsed = time.perf_counter() - state["t0"]
            log.log({"generate/docs_done": state["docs_done"], "generate/docs_per_s": state["docs_done"] / elapsed,
                     "generate/output_tokens": b.stats.output_tokens,
                     "generate/output_tokens_per_s": b.stats.output_tokens / max(b.stats.generate_s, 1e-9)},
                    step=state["step"])
        extra["chunks" if level == "chunk" else "docs_prompted"] = float(sum(1 for r in out_rows
                                                                              if r["chunk_index"] >= 0))
        write_parquet(spec.out / shard_name(PROGRAMS, index), out_rows, PROGRAM_SCHEMA)
        extra["wall_s"] = time.perf_counter() - t_shard
        return stats

    total = run_sharded(in_shards, spec.out, process, rank, world,
                        progress=lambda xs: tqdm(xs, desc=f"refine.generate_{level}", unit="shard"))
    timing = {"backend_load_s": 0.0, "backend_generate_s": 0.0}
    if state["backend"] is not None:
        timing = {"backend_load_s": round(state["backend"].stats.load_s, 3),
                  "backend_generate_s": round(state["backend"].stats.generate_s, 3)}
        state["backend"].close()
    if rank == 0:
        check_programs(in_dir, spec.out, level)

    model_path = resolve_model(cfg["model"], data_dir)
    n_total, n_nonembed = param_counts(model_path)
    e = total.extra
    prompt_tokens, output_tokens = int(e.get("prompt_tokens", 0)), int(e.get("output_tokens", 0))
    prompts = int(e.get("prompts", 0))
    finish = {k.split("/", 1)[1]: int(v) for k, v in e.items() if k.startswith("finish/")}
    failures = {k.split("/", 1)[1]: int(v) for k, v in e.items() if k.startswith("fail/")}
    counts = {"docs_in": total.docs_in, "docs_out": total.docs_out, "prompts": prompts,
              "prompt_tokens": prompt_tokens, "output_tokens": output_tokens,
              "tokens_in": prompt_tokens, "tokens_generated": output_tokens,
              "prompt_tokens_skipped": int(e.get("prompt_tokens_skipped", 0)),
              "prompts_truncated": int(e.get("prompts_truncated", 0)),
              **({"chunks": int(e.get("chunks", 0)), "lines_skipped_overlong": int(e.get("lines_skipped_overlong", 0))}
                 if level == "chunk" else {}),
              **{f"finish/{k}": v for k, v in finish.items()}, **{f"fail/{k}": v for k, v in failures.items()}}
    flops = inference_flops(n_nonembed, prompt_tokens, output_tokens)
    summary = {f"generate/{k}": v for k, v in counts.items()}
    summary.update({"generate/params_non_embedding": n_nonembed, "generate/flops": flops,
                    "generate/output_tokens_per_prompt": output_tokens / max(prompts, 1),
                    **{f"generate/fail_rate/{k}": v / max(prompts, 1) for k, v in failures.items()}})
    log.summary(summary)
    log.close()
    print(f"[proxlab] refine.generate_{level}: {prompts} prompts for {total.docs_in} documents, "
          f"{prompt_tokens} prompt + {output_tokens} generated tokens, {flops:.3e} FLOPs (N={n_nonembed:,}); "
          f"finish {finish}; failures {failures}", flush=True)
    return StageResult(counts=counts, flops={"refine": flops},
                       extra={"level": level, "backend": cfg["backend"], "model": cfg["model"],
                              "model_path": model_path, "params_total": n_total, "params_non_embedding": n_nonembed,
                              "finish_reasons": finish, "failures": failures, **timing})


if __name__ == "__main__":
    stage_cli(main)
