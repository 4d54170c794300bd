"""Stages `refine.apply_doc` / `refine.apply_chunk`: execute the programs a refining model wrote (`refine.generate_*`)
with a mode and thresholds, and write the refined corpus variant. No model is loaded here, so re-executing with
`mode=strict` or other thresholds is cheap and never re-runs generation ("tag once, threshold later").

Inputs: `docs` (the corpus the programs were generated for) and `programs` (`programs-NNNNN.parquet`, one per docs
shard). Outputs per shard:

* `docs-NNNNN.parquet`: kept documents, same schema as the input, refined text;
* `dropped-NNNNN.parquet`: dropped documents (id, reason, original text). Reasons: `doc_drop` (doc-level program),
  `chunk_drop_ratio` (≤ drop_ratio of the words left), `chunk_min_words` (≤ min_words words left), `chunk_empty_doc`;
* `applied-NNNNN.parquet`: per document what its program did: decision, errors, whether the program was discarded,
  operation counts (`op_*`), failure kinds (`fail_*`), removed line numbers, normalizations, words/chars before and
  after, and the number of chunk programs.

Execution is `proxlab.refine.programs` (`run_doc_program` / `run_chunk_programs`, compat or strict, DecisionRules
from `drop_ratio`, `min_ratio`, `max_errors`, `min_words`; refine.apply_doc's key leaves out the chunk-only
thresholds, which ApplyConfig marks as such). Stats (kept/dropped by reason, words, chars and tokens
before and after, operations per program, program error rate, failure kinds such as repeated calls and normalize
sources not found) go to the manifest, metrics.jsonl and W&B; every input id is checked to be kept or dropped once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from proxlab.core.config import ApplyConfig, load
from proxlab.core.formats import (DOC_SCHEMA, DROP_SCHEMA, PROGRAMS, REFINER_FILE, check_accounting, list_shards,
                                  read_docs, shard_name, write_parquet)
from proxlab.core.logs import get_logger
from proxlab.core.sharding import ShardStats, ShardWork, run_shards
from proxlab.core.stage import StageResult, StageSpec, stage_cli
from proxlab.core.tracking import MetricsLogger
from proxlab.refine.programs import FAILURE_KINDS, OP_NAMES, DecisionRules, run_chunk_programs, run_doc_program

log = get_logger("refine.apply")

APPLIED_SCHEMA = pa.schema(
    [("id", pa.string()), ("dropped", pa.bool_()), ("reason", pa.string()), ("errors", pa.int32()),
     ("kept_original", pa.bool_()), ("programs", pa.int32()), ("words_before", pa.int64()),
     ("words_after", pa.int64()), ("chars_before", pa.int64()), ("chars_after", pa.int64()),
     ("removed_lines", pa.list_(pa.int32())), ("normalizations", pa.string())]
    + [(f"op_{k}", pa.int32()) for k in OP_NAMES] + [(f"fail_{k}", pa.int32()) for k in FAILURE_KINDS]
)
LEVELS = ("doc", "chunk")
TokenCounter = Callable[[list[str]], list[int]]


def decision_rules(cfg: ApplyConfig) -> DecisionRules:
    """ApplyConfig → DecisionRules. The default drop_ratio 0.05 is the reference's ``1 - 0.95`` bit for bit (at doc
    level the chunk-only thresholds keep the schema's defaults, which the doc-level executor never reads)."""
    drop_ratio = 1 - 0.95 if abs(cfg.drop_ratio - 0.05) < 1e-12 else cfg.drop_ratio
    return DecisionRules(drop_ratio=drop_ratio, min_ratio=cfg.min_ratio, max_errors=cfg.max_errors,
                         min_words=cfg.min_words)


def drop_reason(level: str, result, rules: DecisionRules) -> str:
    """Why a program dropped its document (the executor's decision order, per mode)."""
    if level == "doc":
        return "doc_drop"
    if result.failure_kinds.get("empty_document"):
        return "chunk_empty_doc"
    ratio = result.words_after / max(result.words_before, 1)
    if result.mode == "strict" and result.errors >= rules.max_errors:
        return "chunk_min_words"  # program discarded; the original itself is too short
    if ratio <= rules.drop_ratio and (result.mode == "strict" or result.errors < rules.max_errors):
        return "chunk_drop_ratio"
    return "chunk_min_words"


def _programs_by_doc(path: Path, level: str) -> dict[str, list[str]]:
    t = pq.read_table(path, columns=["id", "chunk_index", "output"])
    out: dict[str, list[tuple[int, str]]] = {}
    for doc_id, k, output in zip(t.column("id").to_pylist(), t.column("chunk_index").to_pylist(),
                                 t.column("output").to_pylist()):
        entry = out.setdefault(doc_id, [])
        if k >= 0:
            entry.append((k, output or ""))
    grouped = {doc_id: [o for _, o in sorted(items)] for doc_id, items in out.items()}
    if level == "doc":
        bad = [d for d, items in grouped.items() if len(items) != 1]
        if bad:
            raise RuntimeError(f"{path}: doc-level programs must be one per document; {bad[:3]} have "
                               f"{[len(grouped[d]) for d in bad[:3]]}")
    return grouped


def _token_counter(programs_dir: Path) -> TokenCounter | None:
    """``count(texts) -> list[int]`` with the refiner's tokenizer (named by the generate stage's `refiner.json`), to
    report tokens before/after; None when unknown. Uses the `tokenizers` library on tokenizer.json when there is one
    (fast, no transformers import), else the transformers tokenizer."""
    named = programs_dir / REFINER_FILE
    if not named.exists():  # a hand-made programs folder: count words and characters only
        return None
    try:
        path = Path(json.loads(named.read_text())["tokenizer_path"])
        if (path / "tokenizer.json").exists():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
            return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
        from proxlab.refine.backends.base import load_tokenizer

        hf = load_tokenizer(str(path))
        return lambda texts: [len(ids) for ids in hf(texts, add_special_tokens=False)["input_ids"]]
    except Exception as e:  # e.g. the tokenizer is not available offline: count words and characters
        log.info(f"refine.apply: no refiner tokenizer for token counts ({type(e).__name__}: {e}); "
                 f"counting words and characters only")
        return None


@dataclass(frozen=True)
class Execution:
    """How to execute one level's programs: everything `apply_shard` needs besides the shard."""

    level: str
    mode: str
    rules: DecisionRules
    count_tokens: TokenCounter | None


def execute(ex: Execution, text: str, outputs: list[str]):
    if ex.level == "doc":
        return run_doc_program(text, outputs[0], mode=ex.mode, rules=ex.rules)
    return run_chunk_programs(text, outputs, mode=ex.mode, rules=ex.rules)


def apply_shard(ex: Execution, programs_dir: Path, out: Path, index: int, path: Path) -> ShardStats:
    """Execute one shard's programs and write its kept, dropped and applied files: a function of its inputs only."""
    docs = read_docs(path)
    programs_path = programs_dir / shard_name(PROGRAMS, index)
    if not programs_path.exists():
        raise RuntimeError(f"{programs_dir}: {programs_path.name} missing for {path.name}")
    programs = _programs_by_doc(programs_path, ex.level)
    stats = ShardStats()
    kept, dropped, applied = [], [], []
    for row in docs:
        if row["id"] not in programs:
            raise RuntimeError(f"{programs_path}: no program for document {row['id']!r}")
        outputs = programs[row["id"]]
        res = execute(ex, row["text"], outputs)
        reason = drop_reason(ex.level, res, ex.rules) if res.dropped else None
        if reason:
            dropped.append({"id": row["id"], "reason": reason, "text": row["text"]})
        else:
            kept.append({**row, "text": res.text})
        _count(stats, row["text"], res, reason, len(outputs))
        applied.append(_applied_row(row, res, reason, len(outputs)))
    if ex.count_tokens is not None and docs:
        _count_tokens(stats, ex.count_tokens, docs, kept)
    write_parquet(out / shard_name("docs", index), kept, DOC_SCHEMA)
    write_parquet(out / shard_name("dropped", index), dropped, DROP_SCHEMA)
    write_parquet(out / shard_name("applied", index), applied, APPLIED_SCHEMA)
    return stats


def _count(stats: ShardStats, text: str, res, reason: str | None, n_programs: int) -> None:
    stats.docs_in += 1
    stats.chars_in += len(text)
    stats.count("words_in", len(text.split()))
    if reason:
        stats.drop(reason)
    else:
        stats.docs_out += 1
        stats.chars_out += len(res.text)
        stats.count("words_out", len(res.text.split()))
        stats.count("text_changed", int(res.text != text))
    stats.count("programs", n_programs)
    stats.count("errors", res.errors)
    stats.count("docs_with_errors", int(res.errors > 0))
    stats.count("programs_discarded", int(res.kept_original))
    stats.count("lines_removed", 0 if res.kept_original or res.dropped else len(res.removed_lines))
    for k, v in res.ops.items():
        stats.count(f"op/{k}", v)
    for k, v in res.failure_kinds.items():
        stats.count(f"fail/{k}", v)


def _applied_row(row: dict[str, Any], res, reason: str | None, n_programs: int) -> dict[str, Any]:
    text = row["text"]
    return {
        "id": row["id"], "dropped": res.dropped, "reason": reason, "errors": res.errors,
        "kept_original": res.kept_original, "programs": n_programs, "words_before": len(text.split()),
        "words_after": 0 if res.dropped else len(res.text.split()), "chars_before": len(text),
        "chars_after": len(res.text), "removed_lines": list(res.removed_lines),
        "normalizations": json.dumps([list(n) for n in res.normalizations], ensure_ascii=False),
        **{f"op_{k}": res.ops.get(k, 0) for k in OP_NAMES},
        **{f"fail_{k}": res.failure_kinds.get(k, 0) for k in FAILURE_KINDS},
    }


def _count_tokens(stats: ShardStats, count: TokenCounter, docs: list[dict[str, Any]],
                  kept: list[dict[str, Any]]) -> None:
    """Tokens in and out; an unchanged kept document is not tokenized twice."""
    before = dict(zip((r["id"] for r in docs), count([r["text"] for r in docs])))
    texts_in = {r["id"]: r["text"] for r in docs}
    changed = [r for r in kept if r["text"] != texts_in[r["id"]]]
    after = dict(zip((r["id"] for r in changed), count([r["text"] for r in changed])))
    stats.count("tokens_in", float(sum(before.values())))
    stats.count("tokens_out", float(sum(after.get(r["id"], before[r["id"]]) for r in kept)))


def main(spec: StageSpec) -> StageResult | None:
    level = spec.config.get("level")
    if level not in LEVELS:
        raise ValueError(f"refine apply: config level={level!r}, expected one of {LEVELS}")
    cfg = load(ApplyConfig, {k: v for k, v in spec.config.items() if k != "level"}, where="refine.apply")
    docs_dir, programs_dir = spec.input("docs"), spec.input("programs")
    ex = Execution(level, cfg.mode, decision_rules(cfg), _token_counter(programs_dir) if cfg.count_tokens else None)
    total = run_shards(spec, ShardWork(shards=list_shards(docs_dir),
                                       process=partial(apply_shard, ex, programs_dir, spec.out),
                                       check=partial(check_accounting, docs_dir, spec.out),
                                       desc=f"{level}, {cfg.mode}"))
    return None if total is None else finish(spec, ex, total)


def finish(spec: StageSpec, ex: Execution, total: ShardStats) -> StageResult:
    counts, rates, ops, fails = apply_counts(total)
    n = max(total.docs_in, 1)
    metrics = MetricsLogger.for_stage(spec)
    metrics.summary({**{f"apply/{k}": v for k, v in counts.items()},
                     **{f"apply/{k}": v for k, v in rates.items() if v is not None}})
    metrics.table("apply/failure_kinds", ["kind", "count", "per_doc"],
                  [[k, v, v / n] for k, v in sorted(fails.items()) if v])
    metrics.close()
    log.info(f"refine.apply_{ex.level} ({ex.mode}): kept {total.docs_out}/{total.docs_in} documents, words "
             f"{counts['words_in']} → {counts['words_out']}; drops {dict(sorted(total.dropped.items()))}; "
             f"program error rate {rates['program_error_rate']:.4f}; failure kinds "
             f"{ {k: v for k, v in fails.items() if v} }")
    return StageResult(counts=counts, flops={"refine": 0.0},
                       extra={"level": ex.level, "mode": ex.mode, "rates": rates, "dropped_by_reason": total.dropped,
                              "failure_kinds": fails, "ops": ops})


def apply_counts(total: ShardStats) -> tuple[dict[str, Any], dict[str, Any], dict[str, int], dict[str, int]]:
    """(counts, rates, operations, failure kinds) of the whole stage, from the shards' summed stats."""
    e = total.extra
    n = max(total.docs_in, 1)
    ops = {k.split("/", 1)[1]: int(v) for k, v in e.items() if k.startswith("op/")}
    fails = {k.split("/", 1)[1]: int(v) for k, v in e.items() if k.startswith("fail/")}
    calls = sum(v for k, v in ops.items() if k in ("remove_lines", "remove_all", "normalize", "noop",
                                                   "keep_doc", "drop_doc"))
    counts = {"docs_in": total.docs_in, "docs_out": total.docs_out, "chars_in": total.chars_in,
              "chars_out": total.chars_out,
              **{k: int(e.get(k, 0)) for k in ("words_in", "words_out", "tokens_in", "tokens_out", "programs",
                                               "errors", "docs_with_errors", "programs_discarded", "lines_removed",
                                               "text_changed")},
              **{f"dropped/{k}": v for k, v in total.dropped.items()},
              **{f"op/{k}": v for k, v in ops.items()}, **{f"fail/{k}": v for k, v in fails.items()}}
    rates = {
        "kept_ratio": total.docs_out / n,
        "chars_kept_ratio": total.chars_out / max(total.chars_in, 1),
        "words_kept_ratio": counts["words_out"] / max(counts["words_in"], 1),
        "tokens_kept_ratio": counts["tokens_out"] / max(counts["tokens_in"], 1) if counts["tokens_in"] else None,
        "program_error_rate": counts["docs_with_errors"] / n,
        "program_discard_rate": counts["programs_discarded"] / n,
        "ops_per_doc": calls / n,
        "ops_per_program": calls / max(counts["programs"], 1),
        "edit_ops_per_program": (ops.get("remove_lines", 0) + ops.get("remove_all", 0) + ops.get("normalize", 0))
        / max(counts["programs"], 1),
    }
    return counts, rates, ops, fails


if __name__ == "__main__":
    stage_cli(main)
