"""The rules variant: datatrove's Gopher/C4/FineWeb filters, every drop counted by reason, ids fully accounted for."""

import json

import pyarrow.parquet as pq
import pytest

from proxlab.core.stage import StageSpec, run_stage
from proxlab.refine import rules
from proxlab.core.formats import DOC_SCHEMA, iter_docs, shard_name, write_parquet

GOOD = " ".join(["The committee said that the new bridge will be open to the public with a small ceremony."] * 12)
CODE = GOOD + "\nfunction f() { return 1; } and the rest of the text is here to be long enough for the filters."


def docs():
    return [{"id": "good", "text": GOOD}, {"id": "short", "text": "Too short to be a document."},
            {"id": "code", "text": CODE}, {"id": "good2", "text": GOOD.replace("bridge", "library")}]


def run(tmp_path, filters, **kw):
    src = tmp_path / "docs"
    write_parquet(src / shard_name("docs", 0), docs()[:2], DOC_SCHEMA)
    write_parquet(src / shard_name("docs", 1), docs()[2:], DOC_SCHEMA)
    cfg = {"filters": filters, "c4_terminal_punct": True, "write_dropped": True, "language": "eng", **kw}
    spec = StageSpec(stage="refine.rules", key="k", out_dir=str(tmp_path / "out"), config=cfg,
                     inputs={"docs": str(src)}, logger={"backend": "none", "mode": "disabled"})
    run_stage(rules.main, spec)
    return spec.out


def test_each_drop_has_a_reason_and_every_id_is_accounted(tmp_path):
    out = run(tmp_path, ["gopher", "c4", "fineweb"])
    kept = {r["id"] for r in iter_docs(out)}
    dropped = {r["id"]: r["reason"] for r in iter_docs(out, prefix="dropped")}
    assert kept == {"good", "good2"}
    assert dropped == {"short": "gopher:gopher_short_doc", "code": "c4:curly_bracket"}
    assert pq.read_table(out / "dropped-00001.parquet").column("text").to_pylist()[0] == CODE  # kept for audit
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["docs_in"] == 4 and counts["docs_out"] == 2
    assert counts["dropped/gopher:gopher_short_doc"] == 1 and counts["dropped/c4:curly_bracket"] == 1


def test_single_filter_only_applies_its_rules(tmp_path):
    out = run(tmp_path, ["c4"])
    assert {r["id"] for r in iter_docs(out)} == {"good", "good2"}  # c4 drops "short" too: < 5 sentences
    assert {r["reason"] for r in iter_docs(out, prefix="dropped")} == {"c4:too_few_sentences", "c4:curly_bracket"}


def test_unknown_filter_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown filter.*'dolma'"):
        run(tmp_path, ["dolma"])


def test_interrupted_stage_redoes_only_unfinished_shards(tmp_path):
    out = run(tmp_path, ["gopher"])
    (out / "_SUCCESS").unlink()
    (out / "shard-00001.json").unlink()
    before = (out / "docs-00000.parquet").stat().st_mtime_ns
    cfg = {"filters": ["gopher"], "c4_terminal_punct": True, "write_dropped": True, "language": "eng"}
    run_stage(rules.main, StageSpec(stage="refine.rules", key="k", out_dir=str(out), config=cfg,
                                    inputs={"docs": str(tmp_path / "docs")}, logger={"backend": "none"}))
    assert (out / "docs-00000.parquet").stat().st_mtime_ns == before  # finished shard untouched
    assert (out / "shard-00001.json").exists() and (out / "_SUCCESS").exists()


def test_job_array_tasks_cover_every_shard_and_the_last_one_completes(tmp_path):
    import fcntl

    src = tmp_path / "docs"
    write_parquet(src / shard_name("docs", 0), docs()[:2], DOC_SCHEMA)
    write_parquet(src / shard_name("docs", 1), docs()[2:], DOC_SCHEMA)
    out = tmp_path / "out"
    out.mkdir()

    def task(rank):
        cfg = {"filters": ["gopher"], "c4_terminal_punct": True, "write_dropped": False, "language": "eng"}
        return run_stage(rules.main, StageSpec(stage="refine.rules", key="k", out_dir=str(out), config=cfg,
                                               inputs={"docs": str(src)}, logger={"backend": "none"},
                                               runtime={"rank": rank, "world_size": 2, "array": True}))

    with open(out / ".shard-00001.lock", "w") as held:  # another array task is busy with shard 1
        fcntl.flock(held, fcntl.LOCK_EX)
        assert task(0) is None  # did shard 0, left shard 1 to its holder, did not complete the stage
        assert (out / "shard-00000.json").exists() and not (out / "shard-00001.json").exists()
        assert not (out / "_SUCCESS").exists()
    result = task(1)  # e.g. the holder failed and its task was resubmitted alone
    assert result is not None and (out / "_SUCCESS").exists()
    assert result.counts["docs_in"] == 4
    assert {r["id"] for r in iter_docs(out)} | {r["id"] for r in iter_docs(out, prefix="dropped")} == {
        "good", "short", "code", "good2"}
