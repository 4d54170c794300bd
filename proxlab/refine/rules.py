"""Stage `refine.rules`: the rule-based baselines of the paper's Table 2 (Gopher, C4, FineWeb rules), with datatrove's
filters, as FineWeb's pipeline runs them (datatrove examples/fineweb.py).

`rules.filters` names rule sets, applied in the order given:

| rule set  | datatrove filters (the name each drop carries)                                      |
|-----------|-------------------------------------------------------------------------------------|
| `gopher`  | GopherRepetitionFilter (`gopher_rep`), then GopherQualityFilter (`gopher_qual`)      |
| `c4`      | C4QualityFilter (`c4`); terminal-punctuation line rule = `rules.c4_terminal_punct`   |
| `fineweb` | FineWebQualityFilter (`fineweb`)                                                    |

A single filter's name (`gopher_rep`, `gopher_qual`) is accepted too, e.g. for the Gopher quality rules alone.
`[gopher, c4, fineweb]` is FineWeb's order: repetition, quality, C4, FineWeb.

The first filter that rejects a document names the drop reason (`<filter>:<reason>`, e.g. `gopher_rep:dup_line_frac`).
C4's filter also edits the text, and the edited text is what later filters see and what is kept: it removes lines
with fewer than 3 words, with "javascript", with a cookie / terms-of-use phrase, with a word over 1000 characters
and (with `c4_terminal_punct`) without terminal punctuation; it removes Wikipedia-style citations ("[1]", "[edit]");
it strips lines and joins the survivors with single newlines. It drops the whole document when a line that passes the
word-count and punctuation rules contains "lorem ipsum" or "{", or when fewer than 5 sentences remain.

Drops are counted per filter and per reason, edits per filter (documents edited, characters removed, among the kept);
with `rules.write_dropped` the dropped documents are written beside the kept ones for audit.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from proxlab.core.config import RulesConfig, load
from proxlab.core.formats import (DOC_SCHEMA, DROP_SCHEMA, check_accounting, list_shards, read_docs, shard_name,
                                  write_parquet)
from proxlab.core.logs import get_logger
from proxlab.core.sharding import ShardStats, ShardWork, run_shards
from proxlab.core.stage import StageResult, StageSpec, stage_cli
from proxlab.core.tracking import MetricsLogger

log = get_logger("refine.rules")

# Rule set -> its datatrove filters, in FineWeb's pipeline order. The one definition the stage and `refine eval` use.
RULE_SETS: dict[str, tuple[str, ...]] = {"gopher": ("gopher_rep", "gopher_qual"), "c4": ("c4",),
                                         "fineweb": ("fineweb",)}
STEPS = ("gopher_rep", "gopher_qual", "c4", "fineweb")  # every filter, in FineWeb's order
FILTERS = tuple(RULE_SETS)  # the rule sets (paper Table 2)


def filter_steps(filters: list[str]) -> list[str]:
    """The datatrove filters that `rules.filters` names, in order: rule sets expanded, single filters as given."""
    unknown = [f for f in filters if f not in RULE_SETS and f not in STEPS]
    if unknown:
        raise ValueError(f"refine.rules.filters: unknown filter(s) {unknown}; known rule sets: {list(RULE_SETS)}, "
                         f"single filters: {list(STEPS)}")
    steps = [s for f in filters for s in RULE_SETS.get(f, (f,))]
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if repeated:
        raise ValueError(f"refine.rules.filters: {filters} applies {repeated} twice")
    return steps


def build_filters(cfg: RulesConfig) -> list[tuple[str, Any]]:
    """(name, datatrove filter) for each filter of `cfg.filters`, in order, with `cfg.language`."""
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    makers: dict[str, Callable[[], Any]] = {
        "gopher_rep": lambda: GopherRepetitionFilter(language=cfg.language),
        "gopher_qual": lambda: GopherQualityFilter(language=cfg.language),
        "c4": lambda: C4QualityFilter(filter_no_terminal_punct=cfg.c4_terminal_punct, language=cfg.language),
        "fineweb": lambda: FineWebQualityFilter(language=cfg.language),
    }
    return [(name, makers[name]()) for name in filter_steps(list(cfg.filters))]


def variant_rules(name: str) -> RulesConfig:
    """The rules of `conf/refine/<name>.yaml` (e.g. `rules_gopher`): what `refine=<name>` runs, over the schema's
    defaults as Hydra composes them. `refine eval --rules` scores these, so its rule sets are the variants'."""
    import yaml

    from proxlab.core.paths import REPO_ROOT

    path = REPO_ROOT / "conf" / "refine" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no refine variant {name!r}: {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    return load(RulesConfig, data.get("rules") or {}, where=f"{path.name}: refine.rules")


def apply_filters(filters: list[tuple[str, Any]], text: str, doc_id: str,
                  edits: dict[str, int] | None = None) -> tuple[str | None, str | None]:
    """(new text, None) when kept, (None, reason) when dropped. With `edits`, the characters each filter removed
    (filter name -> chars) are recorded there for the filters that changed the text."""
    from datatrove.data import Document

    doc = Document(text=text, id=doc_id)
    for name, flt in filters:
        verdict = flt.filter(doc)
        keep, reason = (verdict, None) if isinstance(verdict, bool) else (verdict[0], verdict[1])
        if not keep:
            return None, f"{name}:{reason or 'rejected'}"
        if not doc.text.strip():
            return None, f"{name}:empty_after_edit"
        if edits is not None and doc.text != text:
            edits[name] = edits.get(name, 0) + len(text) - len(doc.text)
        text = doc.text
    return doc.text, None


def filter_shard(filters: list[tuple[str, Any]], write_dropped: bool, out: Path, index: int, path: Path) -> ShardStats:
    """Filter one input shard into its kept and dropped files; return its counts."""
    stats = ShardStats()
    kept, dropped = [], []
    for row in read_docs(path):
        stats.docs_in += 1
        stats.chars_in += len(row["text"])
        edits: dict[str, int] = {}
        text, reason = apply_filters(filters, row["text"], row["id"], edits)
        if reason is None:
            kept.append({**row, "text": text})
            stats.docs_out += 1
            stats.chars_out += len(text)
            for name, chars in edits.items():  # kept documents only: chars_in(kept) - chars removed = chars_out
                stats.count(f"edited/{name}")
                stats.count(f"edit_chars_removed/{name}", chars)
        else:
            stats.drop(reason)
            dropped.append({"id": row["id"], "reason": reason, "text": row["text"] if write_dropped else None})
    write_parquet(out / shard_name("docs", index), kept, DOC_SCHEMA)
    write_parquet(out / shard_name("dropped", index), dropped, DROP_SCHEMA)
    return stats


def main(spec: StageSpec) -> StageResult | None:
    cfg = load(RulesConfig, spec.config, where="refine.rules")
    docs = spec.input("docs")
    filters = build_filters(cfg)
    total = run_shards(spec, ShardWork(
        shards=list_shards(docs),
        process=partial(filter_shard, filters, cfg.write_dropped, spec.out),
        check=partial(check_accounting, docs, spec.out),
        desc="+".join(name for name, _ in filters)))
    return None if total is None else finish(spec, total, [name for name, _ in filters])


def drops_by_filter(dropped: dict[str, int], steps: list[str]) -> dict[str, int]:
    """Drops per filter (every filter of the stage, 0 when it dropped nothing) from drops per `<filter>:<reason>`."""
    out = {name: 0 for name in steps}
    for reason, n in dropped.items():
        name = reason.split(":", 1)[0]
        out[name] = out.get(name, 0) + n
    return out


def finish(spec: StageSpec, total: ShardStats, steps: list[str]) -> StageResult:
    by_filter = drops_by_filter(total.dropped, steps)
    by_reason = dict(sorted(total.dropped.items(), key=lambda kv: (-kv[1], kv[0])))
    edits = {k: int(v) for k, v in sorted(total.extra.items())}
    metrics = MetricsLogger.for_stage(spec)
    metrics.summary({"refine/docs_in": total.docs_in, "refine/docs_kept": total.docs_out,
                     "refine/kept_ratio": total.docs_out / max(total.docs_in, 1),
                     "refine/chars_kept_ratio": total.chars_out / max(total.chars_in, 1),
                     **{f"refine/dropped_by_filter/{k}": v for k, v in by_filter.items()},
                     **{f"refine/dropped/{k}": v for k, v in by_reason.items()},
                     **{f"refine/{k}": v for k, v in edits.items()}})
    metrics.close()
    log.info(f"refine.rules ({' -> '.join(steps)}): kept {total.docs_out}/{total.docs_in} documents; "
             f"drops by filter: {by_filter}; by reason: {by_reason}; edits: {edits}")
    counts = {"docs_in": total.docs_in, "docs_out": total.docs_out, "chars_in": total.chars_in,
              "chars_out": total.chars_out, **{f"dropped_by_filter/{k}": v for k, v in by_filter.items()},
              **{f"dropped/{k}": v for k, v in by_reason.items()}, **edits}
    return StageResult(counts=counts, flops={"refine": 0.0},
                       extra={"filters": steps, "dropped_by_filter": by_filter, "dropped_by_reason": by_reason,
                              "edits": edits})


if __name__ == "__main__":
    stage_cli(main)
