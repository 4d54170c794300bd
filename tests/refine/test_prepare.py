"""The prepare stage: deterministic sampling, and the explicit bad-line policy (error naming file:line, or skip+count)."""

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
    assert len(rows) == 11 and len(list_shards(out)) == 3
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
