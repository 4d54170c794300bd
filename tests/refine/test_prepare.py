"""The prepare stage: deterministic sampling (num_docs, sample_fraction), streaming in input order, resume per input
file, SPMD ranks, and the bad-record policy (error naming file:line, or skip + count + log)."""

import gzip
import json

import pytest

from proxlab.core.stage import StageSpec, read_jsonl, run_stage
from proxlab.refine.prepare import BadInputError, main
from proxlab.core.formats import iter_docs, list_shards


def corpus_cfg(path, **kw):
    cfg = {"name": "t", "source": "local", "path": str(path), "include": ["*.jsonl", "*.jsonl.gz", "*.parquet"],
           "exclude": [], "hf_dataset": None, "hf_config": None, "hf_split": "train", "text_field": "text",
           "id_field": "id", "num_docs": None, "seed": 1, "docs_per_shard": 4, "on_bad_line": "error", "min_chars": 1}
    cfg.update(kw)
    return cfg


def write_jsonl(path, lines, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt") as f:
        for line in lines:
            f.write(line + "\n")


def docs(n, prefix="d"):
    return [json.dumps({"id": f"{prefix}{i}", "text": f"document number {i} of {prefix}"}) for i in range(n)]


def run(tmp_path, cfg, name="out"):
    spec = StageSpec(stage="prepare", key="k", out_dir=str(tmp_path / name), config=cfg)
    run_stage(main, spec)
    return spec.out


def test_reads_jsonl_and_gz_and_shards(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", docs(5, "a"))
    write_jsonl(src / "b.jsonl.gz", docs(6, "b"), gz=True)
    out = run(tmp_path, corpus_cfg(src))
    rows = list(iter_docs(out))
    # num_docs=None streams each input file into its own shards of docs_per_shard rows: a (4 + 1), b (4 + 2)
    assert len(rows) == 11 and len(list_shards(out)) == 4
    assert [r["id"] for r in rows] == [f"a/a{i}" for i in range(5)] + [f"b/b{i}" for i in range(6)]  # input order
    assert {r["source"] for r in rows} == {"a", "b"}
    assert len({r["id"] for r in rows}) == 11
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["docs"] == 11 and (out / "_SUCCESS").exists()


def test_sample_does_not_depend_on_file_layout(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    lines = docs(40)
    write_jsonl(one / "all.jsonl", lines)
    write_jsonl(two / "all.jsonl", lines[::-1])  # same documents, other order
    a = [r["id"] for r in iter_docs(run(tmp_path, corpus_cfg(one, num_docs=10), "a"))]
    b = [r["id"] for r in iter_docs(run(tmp_path, corpus_cfg(two, num_docs=10), "b"))]
    assert a == b and len(a) == 10
    c = [r["id"] for r in iter_docs(run(tmp_path, corpus_cfg(one, num_docs=10, seed=2), "c"))]
    assert set(c) != set(a)


def test_bad_line_is_an_error_naming_file_and_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", docs(2) + ['{"id": "x", "text": "unterminated'] + docs(2, "e"))
    with pytest.raises(BadInputError, match=r"a\.jsonl:3: malformed JSON"):
        run(tmp_path, corpus_cfg(src))


def test_bad_lines_skipped_and_counted_by_policy(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", docs(3) + ["not json", '{"id": 9, "text": 5}', "[1, 2]"] + docs(2, "e"))
    out = run(tmp_path, corpus_cfg(src, on_bad_line="skip"))
    assert len(list(iter_docs(out))) == 5
    bad = read_jsonl(out / "bad_lines.jsonl")
    assert [b["where"].rsplit(":", 1)[1] for b in bad] == ["4", "5", "6"]
    assert json.loads((out / "manifest.json").read_text())["counts"]["bad_lines"] == 3


def test_missing_corpus_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(tmp_path, corpus_cfg(tmp_path / "nowhere"))


# ---------------------------------------------------------------------------------------------------------------------
# Paper-scale corpora: streaming, sampling, resume, ranks, bad records (issue "Corpora at paper scale", parts 1, 6b)

import dataclasses  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from proxlab.core.config import CorpusConfig  # noqa: E402
from proxlab.core.formats import DOC_SCHEMA, read_ids, shard_name, write_parquet  # noqa: E402
from proxlab.core.sharding import shard_provenance  # noqa: E402
from proxlab.refine.prepare import corpus_files, sample_key  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def corpus_dir(tmp_path, files=6, per_file=50, name="src", dup_every=0):
    """`files` jsonl files (every other one gzip-compressed) of `per_file` documents with metadata."""
    src = tmp_path / name
    src.mkdir()
    for f in range(files):
        lines = [json.dumps({"id": f"doc{i}", "text": f"file {f} document {i} " + "word " * (i % 7),
                             "url": f"https://x{f}.example/{i}", "score": i / 7}) for i in range(per_file)]
        if dup_every:
            lines += lines[::dup_every]  # repeated ids within the file
        write_jsonl(src / (f"part{f:02d}.jsonl.gz" if f % 2 else f"part{f:02d}.jsonl"), lines, gz=bool(f % 2))
    return src


def old_sample_rows(src, n, seed, min_chars=1):
    """The sample older versions of `prepare` took (one heap over all files, one set of every id), as the rows of
    its shards: the contract the num_docs mode keeps."""
    seen, docs = set(), []
    for path in corpus_files(src, ["*.jsonl", "*.jsonl.gz"], []):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                rec = json.loads(line)
                if len(rec["text"].strip()) < min_chars:
                    continue
                doc_id = f"{path.name.split('.')[0]}/{rec.get('id', lineno)}"
                if doc_id in seen:
                    continue
                seen.add(doc_id)
                meta = {k: v for k, v in rec.items() if k not in ("text", "id")}
                docs.append((sample_key(seed, doc_id), doc_id, {"id": doc_id, "text": rec["text"],
                                                                 "source": path.name.split(".")[0],
                                                                 "meta": json.dumps(meta, sort_keys=True)}))
    docs.sort(key=lambda t: (t[0], t[1]))
    return [row for _, _, row in docs[:n]]


def test_num_docs_keeps_the_old_sample_byte_for_byte(tmp_path):
    src = corpus_dir(tmp_path, files=5, per_file=60, dup_every=9)
    out = run(tmp_path, corpus_cfg(src, num_docs=100, docs_per_shard=30, seed=3))
    expected = old_sample_rows(src, 100, 3)
    ref = tmp_path / "ref"
    for i in range(0, len(expected), 30):
        write_parquet(ref / shard_name("docs", i // 30), expected[i:i + 30], DOC_SCHEMA)
    assert [p.name for p in list_shards(out)] == [p.name for p in list_shards(ref)] == [
        "docs-00000.parquet", "docs-00001.parquet", "docs-00002.parquet", "docs-00003.parquet"]
    for a, b in zip(list_shards(out), list_shards(ref)):
        assert a.read_bytes() == b.read_bytes(), a.name
    counts = manifest(out)["counts"]
    assert counts["docs"] == 100 and counts["docs_seen"] == 300 and counts["duplicate_ids"] == 5 * 7
    assert counts["docs_read"] == 5 * (60 + 7) and counts["sampled_out"] == 200
    assert not (out / "parts").exists()


def test_num_docs_larger_than_the_corpus_keeps_everything_in_key_order(tmp_path):
    src = corpus_dir(tmp_path, files=3, per_file=20)
    out = run(tmp_path, corpus_cfg(src, num_docs=1000, docs_per_shard=25))
    ids = read_ids(out)
    assert ids == [r["id"] for r in old_sample_rows(src, 1000, 1)] and len(ids) == 60


def test_stream_with_fraction_keeps_exactly_the_ids_below_the_threshold(tmp_path):
    src = corpus_dir(tmp_path, files=4, per_file=100)
    out = run(tmp_path, corpus_cfg(src, sample_fraction=0.3, docs_per_shard=16, seed=5))
    everything = read_ids(run(tmp_path, corpus_cfg(src, docs_per_shard=16), "all"))
    expected = [i for i in everything if sample_key(5, i) < 0.3 * 2 ** 64]
    assert read_ids(out) == expected  # input order, not key order
    assert 0.2 * 400 < len(expected) < 0.4 * 400
    counts = manifest(out)["counts"]
    assert counts["docs"] == len(expected) and counts["sampled_out"] == 400 - len(expected)
    assert counts["docs_read"] == counts["docs"] + counts["sampled_out"]
    # shards are numbered contiguously from 0, each input file's in a block; all full but a file's last one
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in list_shards(out)]
    assert [p.name for p in list_shards(out)] == [shard_name("docs", i) for i in range(len(sizes))]
    inputs = json.loads((out / "inputs.json").read_text())["inputs"]
    assert inputs[0]["shards"][0] == 0 and inputs[-1]["shards"][1] == len(sizes)
    for e, nxt in zip(inputs, inputs[1:]):
        assert e["shards"][1] == nxt["shards"][0]
    for e in inputs:
        lo, hi = e["shards"]
        assert hi - lo == -(-e["kept"] // 16) and sum(sizes[lo:hi]) == e["kept"] and set(sizes[lo:hi - 1]) <= {16}


def test_fraction_with_num_docs_takes_the_smallest_keys_of_the_fraction(tmp_path):
    src = corpus_dir(tmp_path, files=3, per_file=80)
    all_rows = old_sample_rows(src, 10 ** 6, 2)
    below = [r["id"] for r in all_rows if sample_key(2, r["id"]) < 0.5 * 2 ** 64]
    out = run(tmp_path, corpus_cfg(src, sample_fraction=0.5, num_docs=20, seed=2))
    assert read_ids(out) == below[:20]
    few = run(tmp_path, corpus_cfg(src, sample_fraction=0.5, num_docs=10 ** 6, seed=2), "few")
    assert read_ids(few) == below


def test_fraction_one_keeps_all_and_bad_values_are_rejected_at_compose_time(tmp_path):
    from proxlab.core.config import ConfigError, CorpusConfig, ExperimentConfig, check_experiment

    src = corpus_dir(tmp_path, files=2, per_file=10)
    assert len(read_ids(run(tmp_path, corpus_cfg(src, sample_fraction=1.0)))) == 20
    for bad_value in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="corpus.sample_fraction"):
            check_experiment(ExperimentConfig(corpus=CorpusConfig(sample_fraction=bad_value)))
    check_experiment(ExperimentConfig(corpus=CorpusConfig(sample_fraction=0.25, num_docs=None)))


def test_duplicate_ids_within_a_file_are_counted_once_and_files_in_folders_keep_their_path(tmp_path):
    src = tmp_path / "src"
    (src / "2019").mkdir(parents=True)
    (src / "2020").mkdir()
    write_jsonl(src / "2019" / "part.jsonl", docs(3) + docs(2))  # d0, d1 repeated
    write_jsonl(src / "2020" / "part.jsonl", docs(3))  # the same raw ids in another file: other documents
    out = run(tmp_path, corpus_cfg(src))
    assert read_ids(out) == ["2019/part/d0", "2019/part/d1", "2019/part/d2", "2020/part/d0", "2020/part/d1",
                             "2020/part/d2"]
    assert manifest(out)["counts"]["duplicate_ids"] == 2


def test_files_whose_ids_could_collide_are_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_jsonl(src / "a.jsonl", docs(2))
    write_jsonl(src / "a.jsonl.gz", docs(2), gz=True)
    with pytest.raises(ValueError, match="overlapping document ids"):
        run(tmp_path, corpus_cfg(src))


def test_reads_parquet_by_row_batches_and_json_gz(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = [{"id": f"p{i}", "text": f"parquet document {i}", "lang": "en", "nested": {"x": 1}} for i in range(2500)]
    pq.write_table(pa.Table.from_pylist(rows), src / "p.parquet", row_group_size=700)
    write_jsonl(src / "rp.json.gz", docs(3, "r"), gz=True)
    out = run(tmp_path, corpus_cfg(src, include=["*.parquet", "*.json.gz"], docs_per_shard=1000))
    got = list(iter_docs(out))
    assert [r["id"] for r in got] == [f"p/p{i}" for i in range(2500)] + [f"rp/r{i}" for i in range(3)]
    assert json.loads(got[0]["meta"]) == {"lang": "en"}  # nested values are not metadata
    assert [pq.ParquetFile(p).metadata.num_rows for p in list_shards(out)] == [1000, 1000, 500, 3]


# --- resume, ranks ---------------------------------------------------------------------------------------------------


def stage_subprocess(spec_path, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "proxlab.refine.prepare", "--spec", str(spec_path)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def spec_file(tmp_path, cfg, out, name, **runtime):
    spec = StageSpec(stage="prepare", key="k", out_dir=str(out), config=cfg, runtime=runtime)
    path = tmp_path / f"{name}.spec.json"
    spec.save(path)
    return path


def test_resume_never_rereads_a_finished_input_file(tmp_path):
    src = corpus_dir(tmp_path, files=6, per_file=40)
    cfg = corpus_cfg(src, docs_per_shard=15)
    out = tmp_path / "out"
    # a first attempt finishes the odd-numbered input files (rank 1 of 2), then "dies" (never finalizes)
    run_stage(main, StageSpec(stage="prepare", key="k", out_dir=str(out), config=cfg,
                              runtime={"rank": 1, "world_size": 2}))
    first = shard_provenance(out, 6)
    assert sorted(first) == [1, 3, 5] and not (out / "_SUCCESS").exists()
    # ... and left a half-written part of input 2 behind
    (out / "parts" / "docs-00002-00000.parquet").write_bytes(b"half a file")
    (out / "parts" / ".docs-00002-00001.parquet.tmp.1").write_bytes(b"junk")
    # the finished inputs now hold garbage: rereading any of them would fail under on_bad_line=error
    files = corpus_files(src, ["*.jsonl", "*.jsonl.gz"], [])
    originals = {i: files[i].read_bytes() for i in (1, 3, 5)}
    for i in (1, 3, 5):
        files[i].write_bytes(b"not json at all\n")
    run_stage(main, StageSpec(stage="prepare", key="k", out_dir=str(out), config=cfg,
                              runtime={"rank": 0, "world_size": 1}))
    second = shard_provenance(out, 6)
    assert all(second[i] == first[i] for i in (1, 3, 5))  # untouched: nobody reread them
    assert {second[i]["world"] for i in (0, 2, 4)} == {1}
    for i, data in originals.items():
        files[i].write_bytes(data)
    clean = run(tmp_path, cfg, "clean")
    assert [p.read_bytes() for p in list_shards(out)] == [p.read_bytes() for p in list_shards(clean)]
    assert not (out / "parts").exists()


def test_resume_after_a_killed_process(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in range(16):
        write_jsonl(src / f"f{f:02d}.jsonl.gz", [json.dumps({"id": i, "text": f"text {f} {i} " * 40})
                                                for i in range(3000)], gz=True)
    cfg = corpus_cfg(src, docs_per_shard=1000)
    out = tmp_path / "out"
    proc = stage_subprocess(spec_file(tmp_path, cfg, out, "killed", rank=0, world_size=1))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (out / "shard-00002.json").exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = shard_provenance(out, 16)
    assert 3 <= len(done_before) < 16 and not (out / "_SUCCESS").exists()  # killed in the middle
    proc = stage_subprocess(spec_file(tmp_path, cfg, out, "resumed", rank=0, world_size=1))
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    after = shard_provenance(out, 16)
    assert all(after[i] == done_before[i] for i in done_before)  # finished inputs were not redone
    assert f"{len(done_before)} of rank 0's 16 shards already finished" in log
    ids = read_ids(out)
    assert len(ids) == len(set(ids)) == 16 * 3000
    assert manifest(out)["counts"]["docs_read"] == 16 * 3000


@pytest.mark.parametrize("num_docs", [None, 70])
def test_two_spmd_ranks_equal_one_rank(tmp_path, num_docs):
    src = corpus_dir(tmp_path, files=7, per_file=30, dup_every=5)
    cfg = corpus_cfg(src, num_docs=num_docs, sample_fraction=0.8, docs_per_shard=20, on_bad_line="skip")
    one = run(tmp_path, cfg, "one")
    two = tmp_path / "two"
    procs = [stage_subprocess(spec_file(tmp_path, cfg, two, f"r{r}", rank=r, world_size=2)) for r in (1, 0)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert read_ids(two) == read_ids(one)
    assert [p.read_bytes() for p in list_shards(two)] == [p.read_bytes() for p in list_shards(one)]
    by = shard_provenance(two, 7)
    assert {i: b["rank"] for i, b in by.items()} == {i: i % 2 for i in range(7)}
    counts_one, counts_two = manifest(one)["counts"], manifest(two)["counts"]
    assert counts_one == counts_two
    # a job-array task alone covers every input file and completes the stage
    arr = tmp_path / "arr"
    run_stage(main, StageSpec(stage="prepare", key="k", out_dir=str(arr), config=cfg,
                              runtime={"rank": 3, "world_size": 4, "array": True}))
    assert read_ids(arr) == read_ids(one) and (arr / "_SUCCESS").exists()


# --- bad records (part 6b) -------------------------------------------------------------------------------------------


GOOD = json.dumps({"id": "g", "text": "good text"})


def bad_corpus(tmp_path):
    """One file per kind of problem, good records around each; {file: (expected kept ids, bad line numbers)}."""
    src = tmp_path / "src"
    src.mkdir()
    lines = {
        "surrogate.jsonl": [GOOD.replace('"g"', '"s1"'), '{"id": "s2", "text": "lone \\ud800 high, \\udfff low"}',
                            '{"id": "s3", "text": "a pair \\ud83d\\ude00 is fine", "note": "x\\udc00"}',
                            GOOD.replace('"g"', '"s4"')],
        "nul.jsonl": ['{"id": "n1", "text": "nul \\u0000 inside"}', GOOD.replace('"g"', '"n2"')],
        "nonstring.jsonl": [GOOD.replace('"g"', '"t1"'), '{"id": "t2", "text": 5}', '{"id": "t3"}',
                            '{"id": "t4", "text": null}', GOOD.replace('"g"', '"t5"')],
        "nonobject.jsonl": [GOOD.replace('"g"', '"o1"'), "[1, 2]", '"a string"', "3", "null",
                            GOOD.replace('"g"', '"o2"')],
        "malformed.jsonl": [GOOD.replace('"g"', '"m1"'), '{"id": "m2", "text": "unterminated', "{nope}", "",
                            GOOD.replace('"g"', '"m3"')],
        "numbers.jsonl": ['{"id": 123456789012345678901234567890, "text": "big id", "n": 98765432109876543210}',
                          '{"id": "f1", "text": "nan meta", "x": NaN}'],
    }
    for name, ls in lines.items():
        write_jsonl(src / name, ls)
    with open(src / "badutf8.jsonl", "wb") as f:  # invalid UTF-8 bytes in one line, BOM on the first
        f.write(b"\xef\xbb\xbf" + GOOD.replace('"g"', '"u1"').encode() + b"\n")
        f.write(b'{"id": "u2", "text": "caf\xe9 latin-1"}\n')
        f.write(GOOD.replace('"g"', '"u3"').encode())  # no final newline
    (src / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (src / "utf16.jsonl").write_bytes(GOOD.encode("utf-16"))
    whole = gzip.compress(("\n".join(json.dumps({"id": f"z{i}", "text": f"gz text {i} " * 20})
                                     for i in range(400)) + "\n").encode())
    (src / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (src / "notgzip.jsonl.gz").write_bytes((GOOD + "\n").encode())
    (src / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(pa.Table.from_pylist([{"id": "q1", "text": "ok"}, {"id": "q2", "text": None},
                                         {"id": "q3", "text": "ok too"}]), src / "rows.parquet")
    return src


def test_bad_records_never_crash_the_stage_and_are_counted_by_kind(tmp_path):
    src = bad_corpus(tmp_path)
    out = run(tmp_path, corpus_cfg(src, on_bad_line="skip", docs_per_shard=1000))
    rows = {r["id"]: r for r in iter_docs(out)}
    # the good records around every bad one are kept
    for kept in ("surrogate/s1", "surrogate/s4", "nonstring/t1", "nonstring/t5", "nonobject/o1", "nonobject/o2",
                 "malformed/m1", "malformed/m3", "badutf8/u1", "badutf8/u3", "rows/q1", "rows/q3", "nul/n2"):
        assert kept in rows, kept
    # lone surrogates become U+FFFD (the record is kept); a proper pair stays one character
    assert rows["surrogate/s2"]["text"] == "lone \ufffd high, \ufffd low"
    assert rows["surrogate/s3"]["text"] == "a pair \U0001F600 is fine"
    assert json.loads(rows["surrogate/s3"]["meta"]) == {"note": "x\ufffd"}
    assert rows["nul/n1"]["text"] == "nul \x00 inside"  # NUL kept, counted
    assert "numbers/123456789012345678901234567890" in rows  # exact, as json reads it
    assert json.loads(rows["numbers/123456789012345678901234567890"]["meta"]) == {"n": 98765432109876543210}
    truncated = [i for i in rows if i.startswith("truncated/")]
    assert 0 < len(truncated) < 400 and truncated == [f"truncated/z{i}" for i in range(len(truncated))]
    counts = manifest(out)["counts"]
    bad = read_jsonl(out / "bad_lines.jsonl")
    where = {(Path(b["where"].rsplit(":", 1)[0]).name, int(b["where"].rsplit(":", 1)[1])): b["reason"] for b in bad}
    expected_bad = {("nonstring.jsonl", 2), ("nonstring.jsonl", 3), ("nonstring.jsonl", 4),
                    ("nonobject.jsonl", 2), ("nonobject.jsonl", 3), ("nonobject.jsonl", 4), ("nonobject.jsonl", 5),
                    ("malformed.jsonl", 2), ("malformed.jsonl", 3), ("badutf8.jsonl", 2), ("binary.jsonl", 1),
                    ("utf16.jsonl", 1), ("truncated.jsonl.gz", len(truncated) + 1), ("notgzip.jsonl.gz", 1),
                    ("corrupt.parquet", 1), ("rows.parquet", 2)}
    assert set(where) == expected_bad
    assert "binary file" in where[("binary.jsonl", 1)] and "truncated gzip" in where[("truncated.jsonl.gz",
                                                                                      len(truncated) + 1)]
    assert "invalid UTF-8" in where[("badutf8.jsonl", 2)] and "not a gzip file" in where[("notgzip.jsonl.gz", 1)]
    assert "parquet" in where[("corrupt.parquet", 1)] and "expected a JSON object" in where[("nonobject.jsonl", 3)]
    assert counts["bad_lines"] == len(expected_bad) and counts["fixed_surrogates"] == 2
    assert counts["texts_with_nul"] == 1
    assert counts["docs_read"] == counts["docs"] + counts["bad_lines"] + counts["dropped_empty"] + \
        counts["duplicate_ids"] + counts["sampled_out"]
    # every document is writable and readable back (no surrogate reached parquet)
    assert all(isinstance(r["text"], str) for r in iter_docs(out))


@pytest.mark.parametrize("name, line, problem", [
    ("nonstring.jsonl", 2, "field 'text' missing or not a string"),
    ("nonobject.jsonl", 2, "expected a JSON object, got list"),
    ("malformed.jsonl", 2, "malformed JSON"),
    ("badutf8.jsonl", 2, "invalid UTF-8"),
    ("binary.jsonl", 1, "binary file"),
    ("truncated.jsonl.gz", None, "truncated gzip file"),
    ("notgzip.jsonl.gz", 1, "not a gzip file"),
    ("corrupt.parquet", 1, "not a readable parquet file"),
    ("rows.parquet", 2, "field 'text' missing or not a string"),
])
def test_on_bad_line_error_names_file_line_and_problem(tmp_path, name, line, problem):
    src = bad_corpus(tmp_path)
    only = tmp_path / "only"
    only.mkdir()
    (only / name).write_bytes((src / name).read_bytes())
    with pytest.raises(BadInputError) as e:
        run(tmp_path, corpus_cfg(only, on_bad_line="error"))
    msg = str(e.value)
    assert f"{only / name}:" in msg and problem in msg
    if line is not None:
        assert f"{name}:{line}: " in msg


def test_surrogates_and_nul_are_not_errors_even_under_on_bad_line_error(tmp_path):
    src = bad_corpus(tmp_path)
    out = run(tmp_path, corpus_cfg(src, include=["surrogate.jsonl", "nul.jsonl", "numbers.jsonl"]))
    counts = manifest(out)["counts"]
    assert counts["docs"] == 8 and counts["fixed_surrogates"] == 2 and counts["texts_with_nul"] == 1
    assert not (out / "bad_lines.jsonl").exists()


# --- Hugging Face datasets (offline: a local json dataset stands in for the hub) ------------------------------------


def test_hf_source_streams_each_data_file_as_an_input(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    files = []
    for k in range(3):
        path = tmp_path / f"train-{k}.jsonl"
        write_jsonl(path, [json.dumps({"url": f"u{i % 4}", "text": f"hf {k} {i}"}) for i in range(6)])
        files.append(str(path))
    real = datasets.load_dataset
    calls = []

    def fake_load(name, config=None, split=None, streaming=False, **kw):
        calls.append((name, config, split, streaming, kw))
        return real("json", data_files=files, split="train", streaming=True, cache_dir=str(tmp_path / "cache"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = {**corpus_cfg(tmp_path, source="hf", hf_dataset="org/corpus", hf_config="c", id_field="url",
                        docs_per_shard=5), "path": None}
    if "hf_revision" in {f.name for f in dataclasses.fields(CorpusConfig)}:
        cfg["hf_revision"] = "abc123"
    out = run(tmp_path, cfg)
    ids = read_ids(out)
    assert calls[0][:4] == ("org/corpus", "c", "train", True)
    assert calls[0][4] == ({"revision": "abc123"} if "hf_revision" in cfg else {})
    # ids carry the data file's shard: a url repeated across files is two documents, within a file a duplicate
    assert ids == [f"org/corpus/{k:05d}/u{i}" for k in range(3) for i in range(4)]
    assert manifest(out)["counts"]["duplicate_ids"] == 3 * 2
    assert {r["source"] for r in iter_docs(out)} == {"org/corpus"}


def test_hf_source_offline_is_a_clear_error(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*a, **kw):
        raise ConnectionError("Couldn't reach the Hugging Face Hub (offline mode is enabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = {**corpus_cfg(tmp_path, source="hf", hf_dataset="HuggingFaceFW/fineweb"), "path": None}
    with pytest.raises(RuntimeError, match=r"cannot stream the Hugging Face dataset 'HuggingFaceFW/fineweb'.*"
                                           r"network access.*corpus.source=local"):
        run(tmp_path, cfg)


@pytest.mark.parametrize("num_docs", [None, 50])
def test_an_interrupted_finalizer_is_completed_by_the_next_run(tmp_path, monkeypatch, num_docs):
    import proxlab.refine.prepare as prepare

    src = corpus_dir(tmp_path, files=4, per_file=30)
    write_jsonl(src / "bad.jsonl", ["{oops"] + docs(3, "b"))
    cfg = corpus_cfg(src, num_docs=num_docs, docs_per_shard=7, on_bad_line="skip")
    clean = run(tmp_path, cfg, "clean")
    real = prepare._collect_bad_logs
    monkeypatch.setattr(prepare, "_collect_bad_logs", lambda job: (_ for _ in ()).throw(OSError("node died")))
    with pytest.raises(OSError, match="node died"):  # after the final shards were written or renumbered
        run(tmp_path, cfg, "out")
    monkeypatch.setattr(prepare, "_collect_bad_logs", real)
    out = run(tmp_path, cfg, "out")
    assert [p.read_bytes() for p in list_shards(out)] == [p.read_bytes() for p in list_shards(clean)]
    assert read_jsonl(out / "bad_lines.jsonl") == read_jsonl(clean / "bad_lines.jsonl") != []
    # killed after inputs.json, before the manifest: the next run only cleans up and completes
    (out / "_SUCCESS").unlink()
    (out / "manifest.json").unlink()
    (out / "parts").mkdir()
    again = run(tmp_path, cfg, "out")
    assert manifest(again)["counts"] == manifest(clean)["counts"] and not (out / "parts").exists()


def test_dotted_file_names_keep_distinct_sources_and_zstd_json_lines_are_read(tmp_path):
    """Only data extensions are stripped from a file's source (C4's `c4-train.00000-of-01024.json.gz` files stay
    distinct), and `.jsonl.zst` (DCLM) is read when included."""
    zstandard = pytest.importorskip("zstandard")
    src = tmp_path / "src"
    (src / "en").mkdir(parents=True)
    for i in range(2):
        write_jsonl(src / "en" / f"c4-train.{i:05d}-of-01024.json.gz", docs(2, f"c{i}-"), gz=True)
    (src / "shard_00000000_processed.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress("".join(line + "\n" for line in docs(3, "z")).encode()))
    out = run(tmp_path, corpus_cfg(src, include=["*.json.gz", "*.jsonl.zst"]))
    assert sorted({r["source"] for r in iter_docs(out)}) == [
        "en/c4-train.00000-of-01024", "en/c4-train.00001-of-01024", "shard_00000000_processed"]
    assert len(read_ids(out)) == 7
