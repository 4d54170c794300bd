"""Stage `refine.rules`: the rule-based baselines of the paper's Table 2 (Gopher, C4, FineWeb quality rules), with
datatrove's filters.

Each filter runs in order; the first that rejects a document names the drop reason (`<filter>:<reason>`). C4's filter
also edits the text (it removes lines), as in datatrove. Every drop is counted by reason and, with
`rules.write_dropped`, the dropped documents are written beside the kept ones for audit.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from proxlab.core.config import RulesConfig, load
from proxlab.core.formats import (DOC_SCHEMA, DROP_SCHEMA, check_accounting, list_shards, read_docs, shard_name,
                                  write_parquet)
from proxlab.core.sharding import ShardStats, ShardWork, run_shards
from proxlab.core.stage import StageResult, StageSpec, stage_cli
from proxlab.core.tracking import MetricsLogger

FILTERS = ("gopher", "c4", "fineweb")


def build_filters(cfg: RulesConfig) -> list[tuple[str, Any]]:
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter

    makers: dict[str, Callable[[], Any]] = {
        "gopher": lambda: GopherQualityFilter(language=cfg.language),
        "c4": lambda: C4QualityFilter(filter_no_terminal_punct=cfg.c4_terminal_punct, language=cfg.language),
        "fineweb": lambda: FineWebQualityFilter(language=cfg.language),
    }
    unknown = [f for f in cfg.filters if f not in makers]
    if unknown:
        raise ValueError(f"refine.rules.filters: unknown filter(s) {unknown}; known: {list(makers)}")
    return [(name, makers[name]()) for name in cfg.filters]


def apply_filters(filters: list[tuple[str, Any]], text: str, doc_id: str) -> tuple[str | None, str | None]:
    """(new text, None) when kept, (None, reason) when dropped."""
    from datatrove.data import Document

    doc = Document(text=text, id=doc_id)
    for name, flt in filters:
        verdict = flt.filter(doc)
        keep, reason = (verdict, None) if isinstance(verdict, bool) else (verdict[0], verdict[1])
        if not keep:
            return None, f"{name}:{reason or 'rejected'}"
        if not doc.text.strip():
            return None, f"{name}:empty_after_edit"
    return doc.text, None


def filter_shard(filters: list[tuple[str, Any]], write_dropped: bool, out: Path, index: int, path: Path) -> ShardStats:
    """Filter one input shard into its kept and dropped files; return its counts."""
    stats = ShardStats()
    kept, dropped = [], []
    for row in read_docs(path):
        stats.docs_in += 1
        stats.chars_in += len(row["text"])
        text, reason = apply_filters(filters, row["text"], row["id"])
        if reason is None:
            kept.append({**row, "text": text})
            stats.docs_out += 1
            stats.chars_out += len(text)
        else:
            stats.drop(reason)
            dropped.append({"id": row["id"], "reason": reason, "text": row["text"] if write_dropped else None})
    write_parquet(out / shard_name("docs", index), kept, DOC_SCHEMA)
    write_parquet(out / shard_name("dropped", index), dropped, DROP_SCHEMA)
    return stats


def main(spec: StageSpec) -> StageResult | None:
    cfg = load(RulesConfig, spec.config, where="refine.rules")
    docs = spec.input("docs")
    total = run_shards(spec, ShardWork(
        shards=list_shards(docs),
        process=partial(filter_shard, build_filters(cfg), cfg.write_dropped, spec.out),
        check=partial(check_accounting, docs, spec.out),
        desc="+".join(cfg.filters)))
    return None if total is None else finish(spec, total)


def finish(spec: StageSpec, total: ShardStats) -> StageResult:
    log = MetricsLogger.for_stage(spec)
    log.summary({"refine/docs_in": total.docs_in, "refine/docs_kept": total.docs_out,
                 "refine/kept_ratio": total.docs_out / max(total.docs_in, 1),
                 "refine/chars_kept_ratio": total.chars_out / max(total.chars_in, 1),
                 **{f"refine/dropped/{k}": v for k, v in total.dropped.items()}})
    log.close()
    print(f"[proxlab] refine.rules: kept {total.docs_out}/{total.docs_in} documents; drops by reason: "
          f"{dict(sorted(total.dropped.items(), key=lambda kv: -kv[1]))}", flush=True)
    counts = {"docs_in": total.docs_in, "docs_out": total.docs_out, "chars_in": total.chars_in,
              "chars_out": total.chars_out, **{f"dropped/{k}": v for k, v in total.dropped.items()}}
    return StageResult(counts=counts, flops={"refine": 0.0}, extra={"dropped_by_reason": total.dropped})


if __name__ == "__main__":
    stage_cli(main)
