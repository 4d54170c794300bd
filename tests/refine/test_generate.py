"""Stages refine.generate_doc / refine.generate_chunk with a real tiny model (hf backend): output schema, accounting,
FLOPs, chunk rows, SIGKILL + resume, rank splitting, and the coverage check."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from proxlab.core.stage import run_stage
from proxlab.refine import apply, generate
from proxlab.refine.backends.base import param_counts
from proxlab.refine.chunking import chunk_document, hf_token_counter
from proxlab.core.formats import iter_docs, read_docs
from tiny_model import (apply_config, generate_config, make_spec, read_programs, run_stage_subprocess, stage_env,
                        tiny_model_path, web_texts, write_doc_shards)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    texts = web_texts(12, max_chars=2500)
    texts[3] = "x" * 3000  # one line far longer than chunk_tokens
    return write_doc_shards(tmp_path_factory.mktemp("gen") / "docs", texts, 5)


def test_doc_level_stage(tmp_path, corpus):
    spec = make_spec("refine.generate_doc", tmp_path / "out", generate_config("doc", str(tiny_model_path())),
                     docs=corpus)
    result = run_stage(generate.main, spec)
    assert sorted(p.name for p in spec.out.glob("programs-*.parquet")) == [
        "programs-00000.parquet", "programs-00001.parquet", "programs-00002.parquet"]
    table = pq.read_table(spec.out / "programs-00000.parquet")
    assert table.schema.equals(generate.PROGRAM_SCHEMA)
    rows = read_programs(spec.out)
    docs = list(iter_docs(corpus))
    assert [r["id"] for r in rows] == [d["id"] for d in docs]
    assert all(r["chunk_index"] == 0 and r["end_line"] == d["text"].count("\n") for r, d in zip(rows, docs))
    assert all(0 < r["prompt_tokens"] <= 256 and r["output_tokens"] <= 16 for r in rows)
    c = result.counts
    assert c["prompts"] == 12 and c["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows)
    assert c["output_tokens"] == sum(r["output_tokens"] for r in rows)
    assert c["prompts_truncated"] >= 1  # the long documents are cut at max_prompt_tokens
    n = param_counts(str(tiny_model_path()))[1]
    assert result.flops["refine"] == pytest.approx(2 * n * (c["prompt_tokens"] + c["output_tokens"]))
    manifest = json.loads((spec.out / "manifest.json").read_text())
    assert manifest["extra"]["params_non_embedding"] == n and (spec.out / "_SUCCESS").exists()
    summary = [json.loads(x) for x in (spec.out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("summary") and r["generate/prompts"] == 12 for r in summary)


def test_chunk_level_stage_rows_follow_chunking(tmp_path, corpus):
    cfg = generate_config("chunk", str(tiny_model_path()), chunk_tokens=200, overlong_line="skip")
    spec = make_spec("refine.generate_chunk", tmp_path / "out", cfg, docs=corpus)
    result = run_stage(generate.main, spec)
    rows = read_programs(spec.out)
    from transformers import AutoTokenizer

    counter = hf_token_counter(AutoTokenizer.from_pretrained(tiny_model_path()))
    expected = []
    for d in iter_docs(corpus):
        chunks = chunk_document(d["text"], counter, 200, "skip")
        expected += [(d["id"], k, ch.start_line, ch.end_line) for k, ch in enumerate(chunks)] or [
            (d["id"], -1, 0, d["text"].count("\n"))]
    assert [(r["id"], r["chunk_index"], r["start_line"], r["end_line"]) for r in rows] == expected
    skipped = [r for r in rows if r["chunk_index"] == -1]
    assert len(skipped) == 1 and skipped[0]["id"] == "doc-0003" and skipped[0]["finish_reason"] == "no_chunks"
    assert result.counts["chunks"] == len(rows) - 1 == result.counts["prompts"]
    assert result.counts["lines_skipped_overlong"] >= 1


def test_coverage_check_catches_lost_programs(tmp_path, corpus):
    spec = make_spec("refine.generate_doc", tmp_path / "out", generate_config("doc", str(tiny_model_path())),
                     docs=corpus)
    run_stage(generate.main, spec)
    generate.check_programs(corpus, spec.out, "doc")
    path = spec.out / "programs-00001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)
    with pytest.raises(RuntimeError, match="programs for"):
        generate.check_programs(corpus, spec.out, "doc")


def _wait_for(path, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"stage exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_sigkill_then_rerun_reuses_finished_shards_and_matches(tmp_path):
    docs = write_doc_shards(tmp_path / "docs", web_texts(24, max_chars=1500), 4)  # 6 shards
    cfg = generate_config("chunk", str(tiny_model_path()), chunk_tokens=120, max_new_tokens=24)
    ref = make_spec("refine.generate_chunk", tmp_path / "ref", cfg, docs=docs)
    run_stage(generate.main, ref)  # uninterrupted (in this process; cfg threads=1 in both, same numerics)

    spec = make_spec("refine.generate_chunk", tmp_path / "killed", cfg, docs=docs)
    spec.out.mkdir(parents=True)
    spec.save(spec.out / "spec.json")
    proc = subprocess.Popen([sys.executable, "-m", "proxlab.refine.generate", "--spec", str(spec.out / "spec.json")],
                            env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(spec.out / "shard-00001.json", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (spec.out / "_SUCCESS").exists()
    finished = sorted(p.name for p in spec.out.glob("shard-*.json"))
    assert 2 <= len(finished) < 6, finished
    mtimes = {p.name: p.stat().st_mtime_ns for p in spec.out.glob("programs-*.parquet")}

    again = run_stage_subprocess("proxlab.refine.generate", spec)
    assert "already finished; redoing none of them" in again.stdout + again.stderr
    for name in finished:  # finished shards were not redone
        program = name.replace("shard-", "programs-").replace(".json", ".parquet")
        assert (spec.out / program).stat().st_mtime_ns == mtimes[program]
    assert (spec.out / "_SUCCESS").exists()
    assert read_programs(spec.out) == read_programs(ref.out)

    # ... and the variant built from the resumed programs equals the uninterrupted one
    variants = []
    for gen in (ref.out, spec.out):
        out = tmp_path / f"apply-{gen.name}"
        run_stage(apply.main, make_spec("refine.apply_chunk", out, apply_config("chunk"), docs=docs, programs=gen))
        variants.append([read_docs(p) for p in sorted(out.glob("docs-*.parquet"))])
    assert variants[0] == variants[1]


def test_two_ranks_split_the_shards(tmp_path):
    """SPMD: every rank runs the same stage (as under Slurm) and takes shards i % world == rank; rank 0 waits for the
    rest, checks and completes the stage, rank 1 leaves after its own shards."""
    docs = write_doc_shards(tmp_path / "docs", web_texts(8, max_chars=800), 2)  # 4 shards
    cfg = generate_config("doc", str(tiny_model_path()), max_new_tokens=4)
    procs = []
    for rank in (0, 1):
        spec = make_spec("refine.generate_doc", tmp_path / "out", cfg, rank=rank, world=2, docs=docs)
        spec.out.mkdir(parents=True, exist_ok=True)
        path = spec.out / f"spec.rank{rank}.json"
        spec.save(path)
        procs.append(subprocess.Popen([sys.executable, "-m", "proxlab.refine.generate", "--spec", str(path)],
                                      env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    out = tmp_path / "out"
    assert (out / "_SUCCESS").exists()  # rank 0 marks the stage complete after every rank's shards are done
    assert len(read_programs(out)) == 8
    assert all("hf backend" in log for log in logs)  # both ranks loaded the model: each had shards to do
    assert "8 prompts for 8 documents" in logs[0] and "prompts for" not in logs[1]  # rank 0 alone completes it
    from proxlab.core.sharding import shard_provenance

    assert {i: b["rank"] for i, b in shard_provenance(out, 4).items()} == {0: 0, 1: 1, 2: 0, 3: 1}
