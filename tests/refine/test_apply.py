"""Stages refine.apply_doc / refine.apply_chunk on hand-written programs (no model): decisions, drop reasons,
per-document results, failure kinds, compat vs strict, accounting; and the apply stage's own cache key."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from proxlab.core.stage import run_stage
from proxlab.refine import apply
from proxlab.refine.generate import PROGRAM_SCHEMA
from proxlab.core.formats import iter_docs, shard_name, write_parquet
from tiny_model import apply_config, make_spec, write_doc_shards

LONG = "\n".join(f"Line {i} says something about the town council meeting and its budget." for i in range(8))
NAV = "Home | About | Contact\n" + LONG + "\nCopyright 2024 All rights reserved"


def programs_dir(tmp_path, rows_by_shard):
    out = tmp_path / "programs"
    for index, rows in enumerate(rows_by_shard):
        full = [{"chunk_index": 0, "start_line": 0, "end_line": 0, "prompt_tokens": 10, "output_tokens": 5,
                 "finish_reason": "stop", **r} for r in rows]
        write_parquet(out / shard_name("programs", index), full, PROGRAM_SCHEMA)
    return out


def run_apply(tmp_path, level, docs, programs, name="out", **cfg):
    spec = make_spec(f"refine.apply_{level}", tmp_path / name, apply_config(level, **cfg), docs=docs,
                     programs=programs)
    return spec.out, run_stage(apply.main, spec)


def test_doc_level_keep_and_drop(tmp_path):
    docs = write_doc_shards(tmp_path / "docs", [LONG, NAV, "short text here", LONG + " again"], 2)
    programs = programs_dir(tmp_path, [
        [{"id": "doc-0000", "output": "keep_doc()"}, {"id": "doc-0001", "output": "drop_doc()"}],
        [{"id": "doc-0002", "output": "garbage without the word"}, {"id": "doc-0003", "output": ""}],
    ])
    out, result = run_apply(tmp_path, "doc", docs, programs)
    assert {r["id"]: r["text"] for r in iter_docs(out)} == {"doc-0000": LONG, "doc-0002": "short text here",
                                                           "doc-0003": LONG + " again"}
    dropped = list(iter_docs(out, prefix="dropped"))
    assert [(r["id"], r["reason"], r["text"]) for r in dropped] == [("doc-0001", "doc_drop", NAV)]
    applied = pq.read_table(out / "applied-00000.parquet").to_pylist()
    assert [(r["id"], r["dropped"], r["op_keep_doc"], r["op_drop_doc"]) for r in applied] == [
        ("doc-0000", False, 1, 0), ("doc-0001", True, 0, 1)]
    c = result.counts
    assert (c["docs_in"], c["docs_out"], c["dropped/doc_drop"], c["programs"]) == (4, 3, 1, 4)
    assert c["words_out"] == c["words_in"] - len(NAV.split())
    assert result.extra["rates"]["kept_ratio"] == 0.75


def test_doc_level_strict_needs_a_decision(tmp_path):
    docs = write_doc_shards(tmp_path / "docs", [LONG, LONG], 2)
    programs = programs_dir(tmp_path, [[{"id": "doc-0000", "output": "I think we should drop this"},
                                        {"id": "doc-0001", "output": "drop_doc()"}]])
    out, compat = run_apply(tmp_path, "doc", docs, programs, name="compat")
    assert compat.counts["docs_out"] == 0  # compat: substring "drop" anywhere
    out, strict = run_apply(tmp_path, "doc", docs, programs, name="strict", mode="strict")
    assert [r["id"] for r in iter_docs(out)] == ["doc-0000"]  # strict: prose is no program (error, keep)
    assert strict.counts["fail/syntax_error"] + strict.counts["fail/no_decision"] >= 1


def chunk_programs(rows):
    """rows: (id, chunk_index, output)."""
    return [{"id": i, "chunk_index": k, "output": o} for i, k, o in rows]


def test_chunk_level_edits_drops_and_failure_kinds(tmp_path):
    texts = [NAV, NAV, NAV, "tiny doc with few words", NAV]
    docs = write_doc_shards(tmp_path / "docs", texts, 5)
    programs = programs_dir(tmp_path, [chunk_programs([
        # doc 0: two chunks; remove the navigation line and the footer, normalize a word
        ("doc-0000", 0,
         "remove_lines(line_start=0, line_end=0)\nnormalize(source_str=\"council\", target_str=\"board\")"),
        ("doc-0000", 1, "remove_lines(start=9, end=9)\nnormalize(source_str=\"not in the text\", target_str=\"\")"),
        # doc 1: removes everything -> chunk_drop_ratio
        ("doc-0001", 0, "remove_lines(line_start=0, line_end=9)"),
        # doc 2: two errors -> program discarded, original kept; repeated call counted
        ("doc-0002", 0, "remove_lines(0, 1)\nremove_lines(0, 1)\nkeep_chunk()"),
        # doc 3: nothing to do but <= 10 words -> chunk_min_words
        ("doc-0003", 0, "keep_chunk()"),
        # doc 4: no chunk at all (skipped over-long lines): kept as is
        ("doc-0004", -1, ""),
    ])])
    out, result = run_apply(tmp_path, "chunk", docs, programs)
    kept = {r["id"]: r["text"] for r in iter_docs(out)}
    lines = NAV.split("\n")
    assert kept["doc-0000"] == "\n".join(lines[1:-1]).replace("council", "board")
    assert kept["doc-0002"] == NAV and kept["doc-0004"] == NAV
    assert {r["id"]: r["reason"] for r in iter_docs(out, prefix="dropped")} == {
        "doc-0001": "chunk_drop_ratio", "doc-0003": "chunk_min_words"}
    applied = {r["id"]: r for r in pq.read_table(out / "applied-00000.parquet").to_pylist()}
    assert applied["doc-0000"]["removed_lines"] == [0, 9] and applied["doc-0000"]["programs"] == 2
    assert json.loads(applied["doc-0000"]["normalizations"]) == [["council", "board"]]
    assert applied["doc-0000"]["fail_normalize_source_not_found"] == 1
    assert applied["doc-0002"]["kept_original"] and applied["doc-0002"]["errors"] == 2
    assert applied["doc-0002"]["fail_repeated_calls"] == 1
    assert applied["doc-0004"]["programs"] == 0
    c = result.counts
    assert (c["docs_in"], c["docs_out"], c["programs_discarded"], c["docs_with_errors"]) == (5, 3, 1, 1)
    assert c["fail/normalize_source_not_found"] == 1 and c["fail/repeated_calls"] == 1
    assert c["op/remove_lines"] == 3 and c["op/normalize"] == 2 and c["lines_removed"] == 2
    assert result.extra["rates"]["program_error_rate"] == pytest.approx(1 / 5)


def test_strict_and_thresholds_change_the_variant_without_a_model(tmp_path):
    docs = write_doc_shards(tmp_path / "docs", [NAV], 1)
    programs = programs_dir(tmp_path, [chunk_programs([("doc-0000", 0, "remove_lines(0, 0)\nremove_lines(9, 9)")])])
    out, compat = run_apply(tmp_path, "chunk", docs, programs, name="compat")
    assert next(iter_docs(out))["text"] == NAV  # compat: positional arguments are two errors -> discarded
    out, strict = run_apply(tmp_path, "chunk", docs, programs, name="strict", mode="strict")
    assert next(iter_docs(out))["text"] == "\n".join(NAV.split("\n")[1:-1])
    out, _ = run_apply(tmp_path, "chunk", docs, programs, name="strict_tight", mode="strict", drop_ratio=0.95)
    assert list(iter_docs(out)) == [] and next(iter_docs(out, prefix="dropped"))["reason"] == "chunk_drop_ratio"


def test_missing_program_fails(tmp_path):
    docs = write_doc_shards(tmp_path / "docs", [LONG, LONG], 2)
    programs = programs_dir(tmp_path, [[{"id": "doc-0000", "output": "keep_doc()"}]])
    with pytest.raises(RuntimeError, match="no program for document 'doc-0001'"):
        run_apply(tmp_path, "doc", docs, programs)


def test_apply_has_its_own_cache_key():
    """Re-executing with strict mode or other thresholds re-keys the apply stages that read them, never the doc-level
    generation; a chunk-only threshold leaves refine.apply_doc's key alone."""
    from hydra import compose, initialize_config_dir

    from proxlab.runner.compose import register_schemas
    from proxlab.runner.graph import plan
    from proxlab.core.paths import REPO_ROOT

    register_schemas()
    for variant, last in (("doc", "refine.apply_doc"), ("prox", "refine.apply_chunk")):
        keys = []
        with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
            for overrides in ([], ["refine.apply.mode=strict"], ["refine.apply.drop_ratio=0.2"]):
                cfg = compose(config_name="config", overrides=[f"refine={variant}", *overrides])
                keys.append({s.name: s.key for s in plan(cfg, REPO_ROOT / "artifacts")})
        strict, chunk_threshold = keys[1:]
        for other in (strict, chunk_threshold):
            assert other["refine.generate_doc"] == keys[0]["refine.generate_doc"]
        assert strict[last] != keys[0][last]
        assert (chunk_threshold[last] != keys[0][last]) == (last == "refine.apply_chunk")
