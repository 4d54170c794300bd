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
from `drop_ratio`, `min_ratio`, `max_errors`, `min_words`; refine.apply_doc's config lacks the chunk-only thresholds,
config.APPLY_CHUNK_ONLY_KEYS, so that they stay out of its key). Stats (kept/dropped by reason, words, chars and tokens
before and after, operations per program, program error rate, failure kinds such as repeated calls and normalize
sources not found) go to the manifest, metrics.jsonl and W&B; every input id is checked to be kept or dropped once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from proxlab.experiments.config import apply_settings
from proxlab.experiments.spec import StageResult, StageSpec, rank_and_world, stage_cli
from proxlab.experiments.tracking import MetricsLogger
from proxlab.refine.programs import FAILURE_KINDS, OP_NAMES, DecisionRules, run_chunk_programs, run_doc_program
from proxlab.refine.shards import (DOC_SCHEMA, DROP_SCHEMA, ShardStats, check_accounting, list_shards, read_docs,
                                   run_sharded, shard_name, write_parquet)

APPLIED_SCHEMA = pa.schema(
    [("id", pa.string()), ("dropped", pa.bool_()), ("reason", pa.string()), ("errors", pa.int32()),
     ("kept_original", pa.bool_()), ("programs", pa.int32()), ("words_before", pa.int64()),
     ("words_after", pa.int64()), ("chars_before", pa.int64()), ("chars_after", pa.int64()),
     ("removed_lines", pa.list_(pa.int32())), ("normalizations", pa.string())]
    + [(f"op_{k}", pa.int32()) for k in OP_NAMES] + [(f"fail_{k}", pa.int32()) for k in FAILURE_KINDS]
)
LEVELS = ("doc", "chunk")


def decision_rules(cfg: dict[str, Any]) -> DecisionRules:
    """ApplyConfig → DecisionRules. The default drop_ratio 0.05 is the reference's ``1 - 0.95`` bit for bit.

    `cfg` holds every ApplyConfig setting (``proxlab.experiments.config.apply_settings``); at doc level the chunk-only
    thresholds are the schema's defaults, which the doc-level executor never reads."""
    drop_ratio = float(cfg["drop_ratio"])
    if abs(drop_ratio - 0.05) < 1e-12:
        drop_ratio = 1 - 0.95
    return DecisionRules(drop_ratio=drop_ratio, min_ratio=float(cfg["min_ratio"]),
                         max_errors=int(cfg["max_errors"]), min_words=int(cfg["min_words"]))


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


def _token_counter(programs_dir: Path, data_dir: str | None):
    """``count(texts) -> list[int]`` with the refiner's tokenizer (named in the generate stage's manifest), to report
    tokens before/after; None when unknown. Uses the `tokenizers` library on tokenizer.json when the refiner is a
    local directory (fast, no transformers import), else the transformers tokenizer."""
    manifest = programs_dir / "manifest.json"
    if not manifest.exists():  # a hand-made programs folder: count words and characters only
        return None
    try:
        gen_cfg = json.loads(manifest.read_text())["config"]
        from proxlab.models import resolve_model

        path = Path(resolve_model(gen_cfg.get("tokenizer") or gen_cfg["model"], data_dir))
        if (path / "tokenizer.json").exists():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
            return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
        from proxlab.refine.backends.base import load_tokenizer

        hf = load_tokenizer(str(path))
        return lambda texts: [len(ids) for ids in hf(texts, add_special_tokens=False)["input_ids"]]
    except Exception as e:  # e.g. the tokenizer is not available offline: count words and characters
        print(f"[proxlab] refine.apply: no refiner tokenizer for token counts ({type(e).__name__}: {e}); "
              f"counting words and characters only", flush=True)
        return None


def main(spec: StageSpec) -> StageResult:
    cfg = apply_settings(spec.config)
    level = cfg.get("level")
    if level not in LEVELS:
        raise ValueError(f"refine apply: config level={level!r}, expected one of {LEVELS}")
    mode = cfg["mode"]
    rules = decision_rules(cfg)
    rank, world = rank_and_world(spec.runtime.get("rank"), spec.runtime.get("world_size"))
    docs_dir, programs_dir = spec.input("docs"), spec.input("programs")
    in_shards = list_shards(docs_dir)
    count_tokens = _token_counter(programs_dir, spec.runtime.get("data_dir")) if cfg["count_tokens"] else None

    def process(index: int, path: Path) -> ShardStats:
        docs = read_docs(path)
        programs_path = programs_dir / shard_name("programs", index)
        if not programs_path.exists():
            raise RuntimeError(f"{programs_dir}: {programs_path.name} missing for {path.name}")
        programs = _programs_by_doc(programs_path, level)
        stats = ShardStats()
        e = stats.extra
        kept, dropped, applied = [], [], []
        texts_in = {r["id"]: r["text"] for r in docs}
        for row in docs:
            text = row["text"]
            if row["id"] not in programs:
                raise RuntimeError(f"{programs_path}: no program for document {row['id']!r}")
            outputs = programs[row["id"]]
            if level == "doc":
                res = run_doc_program(text, outputs[0], mode=mode, rules=rules)
            else:
                res = run_chunk_programs(text, outputs, mode=mode, rules=rules)
            stats.docs_in += 1
            stats.chars_in += len(text)
            words_before = len(text.split())
            e["words_in"] = e.get("words_in", 0) + words_before
            reason = None
            if res.dropped:
                reason = drop_reason(level, res, rules)
                stats.drop(reason)
                dropped.append({"id": row["id"], "reason": reason, "text": text})
            else:
                kept.append({**row, "text": res.text})
                stats.docs_out += 1
                stats.chars_out += len(res.text)
                e["words_out"] = e.get("words_out", 0) + len(res.text.split())
                e["text_changed"] = e.get("text_changed", 0) + int(res.text != text)
            e["programs"] = e.get("programs", 0) + len(outputs)
            e["errors"] = e.get("errors", 0) + res.errors
            e["docs_with_errors"] = e.get("docs_with_errors", 0) + int(res.errors > 0)
            e["programs_discarded"] = e.get("programs_discarded", 0) + int(res.kept_original)
            e["lines_removed"] = e.get("lines_removed", 0) + (0 if res.kept_original or res.dropped
                                                              else len(res.removed_lines))
            for k, v in res.ops.items():
                e[f"op/{k}"] = e.get(f"op/{k}", 0) + v
            for k, v in res.failure_kinds.items():
                e[f"fail/{k}"] = e.get(f"fail/{k}", 0) + v
            applied.append({
                "id": row["id"], "dropped": res.dropped, "reason": reason, "errors": res.errors,
                "kept_original": res.kept_original, "programs": len(outputs), "words_before": words_before,
                "words_after": 0 if res.dropped else len(res.text.split()), "chars_before": len(text),
                "chars_after": len(res.text), "removed_lines": list(res.removed_lines),
                "normalizations": json.dumps([list(n) for n in res.normalizations], ensure_ascii=False),
                **{f"op_{k}": res.ops.get(k, 0) for k in OP_NAMES},
                **{f"fail_{k}": res.failure_kinds.get(k, 0) for k in FAILURE_KINDS},
            })
        if count_tokens is not None and docs:  # tokens of unchanged kept documents are not counted twice
            before = dict(zip((r["id"] for r in docs), count_tokens([r["text"] for r in docs])))
            changed = [r for r in kept if r["text"] != texts_in[r["id"]]]
            after = dict(zip((r["id"] for r in changed), count_tokens([r["text"] for r in changed])))
            e["tokens_in"] = float(sum(before.values()))
            e["tokens_out"] = float(sum(after.get(r["id"], before[r["id"]]) for r in kept))
        write_parquet(spec.out / shard_name("docs", index), kept, DOC_SCHEMA)
        write_parquet(spec.out / shard_name("dropped", index), dropped, DROP_SCHEMA)
        write_parquet(spec.out / shard_name("applied", index), applied, APPLIED_SCHEMA)
        return stats

    from tqdm import tqdm

    total = run_sharded(in_shards, spec.out, process, rank, world,
                        progress=lambda xs: tqdm(xs, desc=f"refine.apply_{level} ({mode})", unit="shard"))
    if rank == 0:
        check_accounting(docs_dir, spec.out)

    e = total.extra
    n = max(total.docs_in, 1)
    ops = {k.split("/", 1)[1]: int(v) for k, v in e.items() if k.startswith("op/")}
    fails = {k.split("/", 1)[1]: int(v) for k, v in e.items() if k.startswith("fail/")}
    calls = sum(v for k, v in ops.items() if k in ("remove_lines", "remove_all", "normalize", "noop",
                                                   "keep_doc", "drop_doc"))
    counts = {
        "docs_in": total.docs_in, "docs_out": total.docs_out, "chars_in": total.chars_in,
        "chars_out": total.chars_out, "words_in": int(e.get("words_in", 0)), "words_out": int(e.get("words_out", 0)),
        "tokens_in": int(e.get("tokens_in", 0)), "tokens_out": int(e.get("tokens_out", 0)),
        "programs": int(e.get("programs", 0)), "errors": int(e.get("errors", 0)),
        "docs_with_errors": int(e.get("docs_with_errors", 0)),
        "programs_discarded": int(e.get("programs_discarded", 0)), "lines_removed": int(e.get("lines_removed", 0)),
        "text_changed": int(e.get("text_changed", 0)),
        **{f"dropped/{k}": v for k, v in total.dropped.items()},
        **{f"op/{k}": v for k, v in ops.items()}, **{f"fail/{k}": v for k, v in fails.items()},
    }
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
    log = MetricsLogger.for_stage(spec, rank)
    log.summary({**{f"apply/{k}": v for k, v in counts.items()},
                 **{f"apply/{k}": v for k, v in rates.items() if v is not None}})
    log.table("apply/failure_kinds", ["kind", "count", "per_doc"],
              [[k, v, v / n] for k, v in sorted(fails.items()) if v])
    log.close()
    print(f"[proxlab] refine.apply_{level} ({mode}): kept {total.docs_out}/{total.docs_in} documents, words "
          f"{counts['words_in']} → {counts['words_out']}; drops {dict(sorted(total.dropped.items()))}; "
          f"program error rate {rates['program_error_rate']:.4f}; failure kinds "
          f"{ {k: v for k, v in fails.items() if v} }", flush=True)
    return StageResult(counts=counts, flops={"refine": 0.0},
                       extra={"level": level, "mode": mode, "rates": rates, "dropped_by_reason": total.dropped,
                              "failure_kinds": fails, "ops": ops})


if __name__ == "__main__":
    stage_cli(main)
