"""The paper's pools (issue "Corpora at paper scale", part 2): listings, dumps, mirrors in each dataset's own layout,
the hub path, and prepare's token measurement and check. Mirrors are generated small, with the real directory layout and
file names, from the shared web texts."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import proxlab.refine.pools as pools
from proxlab.core.config import POOL_NAMES, CorpusConfig, split_settings
from proxlab.core.formats import iter_docs, read_ids
from proxlab.core.stage import StageSpec, run_stage
from proxlab.refine.pools import POOLS, rpv2_listing, select, split_dumps
from proxlab.refine.prepare import input_files, main

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------------------------------
# Listings and dumps


def test_redpajama_listing_is_the_reference_codes():
    files = rpv2_listing()
    assert len(files) == 11_760 == 84 * 70 * 2 and len(set(files)) == len(files)
    # the listed order: snapshot, then partition (en_head for all 70 shards, then en_middle), then shard
    assert files[:2] == ["2014-15/0000/en_head.json.gz", "2014-15/0001/en_head.json.gz"]
    assert files[70] == "2014-15/0000/en_middle.json.gz" and files[-1] == "2023-14/0069/en_middle.json.gz"
    assert len({f.split("/")[0] for f in files}) == 84


def test_redpajama_dumps_are_fixed_disjoint_and_cover_the_pool():
    files = rpv2_listing()
    dumps = split_dumps(files, 8, 1234)
    assert [len(d) for d in dumps] == [1470] * 8
    assert sorted(f for d in dumps for f in d) == sorted(files)
    assert split_dumps(files, 8, 1234) == dumps  # a fixed seed: the same dumps on every machine
    assert split_dumps(files, 8, 1235) != dumps
    # pinned: random.Random(1234).shuffle over the listed order, file i -> dump i mod 8
    assert dumps[0][:3] == ["2020-40/0004/en_head.json.gz", "2015-32/0058/en_head.json.gz",
                            "2017-47/0032/en_head.json.gz"]
    one = select(POOLS["redpajama_v2"], files, (0,), 8, 1234)
    two = select(POOLS["redpajama_v2"], files, (0, 1), 8, 1234)
    assert len(one.expected) == 1470 and len(two.expected) == 2940 and set(one.expected) < set(two.expected)
    assert one.expected == [f for f in files if f in set(dumps[0])]  # read in the listed order


@pytest.mark.parametrize("name", sorted(POOLS))
def test_every_pool_splits_into_disjoint_covering_dumps_whatever_the_mirror_holds(name):
    pool = POOLS[name]
    found = fake_listing(name)
    complete = pool.listing(found)
    assert complete == pool.listing(list(reversed(found)))  # the listing does not depend on the order found
    n = max(pool.num_dumps, 3)
    parts = [select(pool, found, (d,), n, 7).expected for d in range(n)]
    assert sorted(f for p in parts for f in p) == sorted(complete)
    assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1:])
    # a file missing from the mirror (here the first of a sequence) moves no other file into another dump
    fewer = found[1:]
    assert [select(pool, fewer, (d,), n, 7).expected for d in range(n)] == parts
    assert [m for d in range(n) for m in select(pool, fewer, (d,), n, 7).missing] == [pool.canonical(found[0])]


def fake_listing(name: str) -> list[str]:
    """The names a small mirror of each pool holds (the datasets' own layouts)."""
    return {
        "redpajama_v2": rpv2_listing(),
        "c4": [f"en/c4-train.{i:05d}-of-01024.json.gz" for i in range(1024)],
        "fineweb": [f"sample/350BT/{r:03d}_{i:05d}.parquet" for r in range(3) for i in range(4)],
        "fineweb_edu": [f"sample/100BT/{r:03d}_{i:05d}.parquet" for r in range(2) for i in range(3)],
        "openwebmath": [f"data/train-{i:05d}-of-00006-{i:04x}beef.parquet" for i in range(6)],
        "dclm_baseline": [f"global-shard_01_of_10/local-shard_{k}_of_10/shard_{i:08d}_processed.jsonl.zst"
                          for k in range(10) for i in range(2)],
    }[name]


def test_pool_names_and_conf_corpus_files_agree_with_the_pools():
    assert set(POOL_NAMES) == set(POOLS)
    seen = set()
    for path in sorted((REPO / "conf" / "corpus").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        base = yaml.safe_load((path.parent / f"{doc['defaults'][0]}.yaml").read_text()) if "defaults" in doc else {}
        doc = {**base, **{k: v for k, v in doc.items() if k != "defaults"}}
        if not doc.get("pool"):
            continue
        pool = POOLS[doc["pool"]]
        seen.add(pool.name)
        assert (doc["text_field"], doc["id_field"]) == (pool.text_field, pool.id_field), path.name
        assert (doc["num_dumps"], doc["dump_seed"]) == (pool.num_dumps, pool.dump_seed), path.name
        assert doc["hf_dataset"] == pool.hf_dataset and doc["num_docs"] is None, path.name
        assert doc["tokenizer"] == "${model.tokenizer.path}", path.name
    assert seen == set(POOLS)


def test_table7_rows_are_the_papers():
    rows = pools.table7_rows("table2", "redpajama_v2", "prox", "tlm_xs", "tlm_s", (0,))
    assert [(r.corpus_b, r.train_b, r.epochs) for r in rows] == [(16.0, 26.2, 1.64)]
    assert [r.corpus_b for r in pools.table7_rows("fig5", "redpajama_v2", "prox", "tlm_m", "tlm_xs", (0,))] == [18.0]
    assert [r.corpus_b for r in pools.table7_rows("fig6", "redpajama_v2", "raw", None, "tlm_m", (0, 1))] == [123.5]
    assert pools.table7_rows("fig6", "redpajama_v2", "raw", None, "tlm_m", (0,)) == []
    assert [r.train_b for r in pools.table7_rows("table5", "openwebmath", "raw", None, "mistral_7b")] == [10.5]
    for r in pools.TABLE7:  # epochs = train / corpus, except the two rows Table 7 prints otherwise
        if r.corpus_b and r.epochs is not None and (r.experiment, r.pool, r.variant) not in (
                ("fig6", "c4", "raw"), ("table5", "openwebmath", "prox")):
            assert r.train_b / r.corpus_b == pytest.approx(r.epochs, abs=0.02), r


# ---------------------------------------------------------------------------------------------------------------------
# Small mirrors in each dataset's layout


@pytest.fixture(scope="module")
def texts(shared_web_texts) -> list[str]:
    return [t for t in shared_web_texts if len(t) < 20_000]


class Texts:
    """Documents' texts taken in turn from the shared web sample (each file gets its own)."""

    def __init__(self, texts: list[str]):
        self.texts, self.i = texts, 0

    def take(self, n: int) -> list[str]:
        out = [self.texts[(self.i + k) % len(self.texts)] for k in range(n)]
        self.i += n
        return out


def write_lines(path: Path, records: list[dict], compress: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    if compress == "gzip":
        data = gzip.compress(data)
    elif compress == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)


def write_parquet_rows(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)


def rpv2_records(texts: list[str], rel: str) -> list[dict]:
    """What a RedPajama-V2 document line holds (CCNet fields; no id)."""
    snap = rel.split("/")[0]
    return [{"url": f"https://site{i}.example/{rel}", "date_download": f"{snap}T01:02:03Z",
             "digest": "sha1:" + hashlib.sha1(t.encode()).hexdigest(), "length": len(t), "nlines": t.count("\n") + 1,
             "source_domain": f"site{i}.example", "title": t[:40], "raw_content": t, "cc_segment": "crawl-data/x",
             "original_nlines": t.count("\n") + 3, "original_length": len(t) + 20, "line_ids": [0, 1],
             "language": "en", "language_score": 0.93, "perplexity": 312.5, "bucket": rel.split("_")[-1][:4]}
            for i, t in enumerate(texts)]


def make_mirror(name: str, root: Path, rels: list[str], source: Texts, per_file: int = 6) -> None:
    for rel in rels:
        texts = source.take(per_file)
        path = root / rel
        if name == "redpajama_v2":
            write_lines(path, rpv2_records(texts, rel), "gzip")
        elif name == "c4":
            write_lines(path, [{"text": t, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://c4.example/{i}"}
                               for i, t in enumerate(texts)], "gzip")
        elif name in ("fineweb", "fineweb_edu"):
            rows = [{"text": t, "id": f"<urn:uuid:{hashlib.md5((rel + str(i)).encode()).hexdigest()}>",
                     "dump": "CC-MAIN-2024-10", "url": f"https://fw.example/{i}", "date": "2024-02-21T10:00:00Z",
                     "file_path": "s3://commoncrawl/x.warc.gz", "language": "en", "language_score": 0.95,
                     "token_count": len(t) // 4} for i, t in enumerate(texts)]
            if name == "fineweb_edu":
                rows = [{**r, "score": 3.1, "int_score": 3} for r in rows]
            write_parquet_rows(path, rows)
        elif name == "openwebmath":
            write_parquet_rows(path, [{"url": f"https://math.example/{i}", "text": t, "date": "2023-01-01",
                                       "metadata": json.dumps({"extraction_info": {"found_math": True}})}
                                      for i, t in enumerate(texts)])
        elif name == "dclm_baseline":
            write_lines(path, [{"bff_contained_ngram_count_before_dedup": 0, "language_id_whole_page_fasttext":
                                {"en": 0.97}, "metadata": {"Content-Length": "1234"}, "previous_word_count": 300,
                                "text": t, "url": f"https://dclm.example/{i}", "warcinfo": "isPartOf: CC-MAIN",
                                "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob": 0.2}
                               for i, t in enumerate(texts)], "zstd")


def pool_cfg(name: str, mirror: Path | None, **kw) -> dict:
    pool = POOLS[name]
    cfg = {"name": name, "source": "local", "path": str(mirror) if mirror else None, "pool": name,
           "text_field": pool.text_field, "id_field": pool.id_field, "num_docs": None, "docs_per_shard": 1000,
           "num_dumps": pool.num_dumps, "dump_seed": pool.dump_seed, "dumps": list(pool.dumps)}
    cfg.update(kw)
    return cfg


def run(tmp_path: Path, cfg: dict, name: str = "out") -> Path:
    """prepare as the graph launches it: hashed settings in config, runtime ones (tokens, tokenizer, check) apart."""
    hashed, runtime = split_settings(CorpusConfig, cfg)
    spec = StageSpec(stage="prepare", key="k", out_dir=str(tmp_path / name), config=hashed,
                     runtime={"settings": runtime})
    run_stage(main, spec)
    return spec.out


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def inputs_read(out: Path) -> list[str]:
    return [e["source"] for e in json.loads((out / "inputs.json").read_text())["inputs"]]


def exact_tokens(llama_dir: Path, texts: list[str]) -> int:
    """The tokens `tokenize` makes of these documents with the Llama-2 tokenizer: text tokens + 1 EOS each."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(llama_dir / "tokenizer.json"))
    return sum(len(e.ids) + 1 for e in tok.encode_batch(texts, add_special_tokens=False))


# --- RedPajama-V2 -----------------------------------------------------------------------------------------------------


def test_redpajama_mirror_reads_exactly_the_dumps_files_with_line_number_ids(tmp_path, texts, llama_dir):
    pool, mirror = POOLS["redpajama_v2"], tmp_path / "rpv2"
    n = 980  # 12 files a dump: the real listing and shuffle, small dumps
    dumps = split_dumps(rpv2_listing(), n, 1234)
    make_mirror("redpajama_v2", mirror, dumps[0] + dumps[1] + dumps[5][:2], Texts(texts))  # + 2 files of dump 5
    cfg = pool_cfg("redpajama_v2", mirror, num_dumps=n, dumps=[0, 1], tokenizer=str(llama_dir))
    want = [f for f in rpv2_listing() if f in set(dumps[0] + dumps[1])]
    assert [p.relative_to(mirror).as_posix() for p in input_files(CorpusConfig(**cfg), mirror)] == want
    out = run(tmp_path, cfg)
    assert inputs_read(out) == [f.removesuffix(".json.gz") for f in want]
    rows = list(iter_docs(out))
    assert len(rows) == 24 * 6 and manifest(out)["counts"]["input_files"] == 24
    first = rows[0]
    assert first["id"] == want[0].removesuffix(".json.gz") + "/1"  # RedPajama's doc_id <file>.json.gz/0
    meta = json.loads(first["meta"])
    assert meta["url"].endswith(want[0]) and meta["language"] == "en" and "raw_content" not in meta
    assert first["text"] == json.loads(gzip.decompress((mirror / want[0]).read_bytes()).splitlines()[0])[
        "raw_content"]
    assert manifest(out)["extra"]["pool"]["files_expected"] == 24 and manifest(out)["counts"]["pool_files_missing"] == 0
    assert pool.remote("main").startswith("https://data.together.xyz/redpajama-data-v2/v1.0.0/documents")


# --- FineWeb: missing files, partial mirrors, the hub path ---------------------------------------------------------


def test_fineweb_dumps_and_a_missing_file_is_a_clear_error_unless_partial_is_allowed(tmp_path, texts):
    mirror = tmp_path / "fineweb"
    found = [f"sample/350BT/{r:03d}_{i:05d}.parquet" for r in range(2) for i in range(7)]
    make_mirror("fineweb", mirror, found, Texts(texts), per_file=4)
    (mirror / "sample" / "10BT").mkdir(parents=True)  # another sample beside it: not the pool
    make_mirror("fineweb", mirror, ["sample/10BT/000_00000.parquet"], Texts(texts))
    chosen = select(POOLS["fineweb"], found, (0, 1), 7, 1234).expected
    assert len(chosen) == 4
    out = run(tmp_path, pool_cfg("fineweb", mirror))
    assert inputs_read(out) == [c.removesuffix(".parquet") for c in chosen]
    assert all(r["id"].split("/")[-1].startswith("<urn:uuid:") for r in iter_docs(out))

    victim = chosen[1]
    (mirror / victim).unlink()
    with pytest.raises(FileNotFoundError, match=rf"pool fineweb: 1 of the 4 files of dumps \[0, 1\] are missing .*"
                                                rf"first: {victim}.*corpus.allow_partial=true"):
        run(tmp_path, pool_cfg("fineweb", mirror), "broken")
    partial = run(tmp_path, pool_cfg("fineweb", mirror, allow_partial=True), "partial")
    assert inputs_read(partial) == [c.removesuffix(".parquet") for c in chosen if c != victim]
    assert manifest(partial)["counts"]["pool_files_missing"] == 1
    assert manifest(partial)["extra"]["pool"]["missing_first"] == [victim]
    # a file of a dump nobody reads may be missing
    other = next(f for f in found if f not in chosen)
    make_mirror("fineweb", mirror, [victim], Texts(texts), per_file=4)
    (mirror / other).unlink()
    assert len(input_files(CorpusConfig(**pool_cfg("fineweb", mirror)), mirror)) == 4


def test_hub_source_reads_the_pool_files_as_a_mirror_would(tmp_path, texts, monkeypatch):
    """corpus.source=hf: the pool's files listed and read through fsspec (a local filesystem stands in for the hub):
    the same documents, ids and sources as the mirror."""
    from fsspec.implementations.local import LocalFileSystem

    mirror = tmp_path / "hub"
    found = [f"sample/350BT/{r:03d}_{i:05d}.parquet" for r in range(2) for i in range(7)]
    make_mirror("fineweb", mirror, found, Texts(texts), per_file=3)
    local = run(tmp_path, pool_cfg("fineweb", mirror), "local")
    asked = []

    def hub(pool, revision):
        asked.append((pool.name, revision))
        return LocalFileSystem(), str(mirror)

    monkeypatch.setattr(pools, "remote_filesystem", hub)
    import proxlab.refine.prepare as prepare

    monkeypatch.setattr(prepare, "remote_filesystem", hub)
    remote = run(tmp_path, pool_cfg("fineweb", None, source="hf", hf_dataset="HuggingFaceFW/fineweb",
                                    hf_revision="abc123"), "remote")
    assert asked == [("fineweb", "abc123")]
    assert list(iter_docs(remote)) == list(iter_docs(local))
    assert POOLS["fineweb"].remote("abc123") == "hf://datasets/HuggingFaceFW/fineweb@abc123"


def test_hub_source_offline_is_a_clear_error(tmp_path, monkeypatch):
    import proxlab.refine.prepare as prepare

    def offline(pool, revision):
        raise ConnectionError("offline mode is enabled")

    monkeypatch.setattr(prepare, "remote_filesystem", offline)
    with pytest.raises(RuntimeError, match=r"cannot list pool fineweb at hf://datasets/HuggingFaceFW/fineweb@main.*"
                                           r"hf download HuggingFaceFW/fineweb.*corpus.source=local"):
        run(tmp_path, pool_cfg("fineweb", None, source="hf", hf_dataset="HuggingFaceFW/fineweb"))


# --- C4, OpenWebMath, FineWeb-Edu, DCLM -------------------------------------------------------------------------------


def test_c4_reads_train_files_only_and_names_what_is_missing(tmp_path, texts):
    mirror = tmp_path / "c4"
    have = [f"en/c4-train.{i:05d}-of-01024.json.gz" for i in range(6)]
    make_mirror("c4", mirror, have + ["en/c4-validation.00000-of-00008.json.gz"], Texts(texts), per_file=3)
    with pytest.raises(FileNotFoundError, match=r"pool c4: 1,018 of the 1,024 files of dumps \[0\] are missing .*"
                                                r"first: en/c4-train.00006-of-01024.json.gz"):
        run(tmp_path, pool_cfg("c4", mirror))
    out = run(tmp_path, pool_cfg("c4", mirror, allow_partial=True))
    assert inputs_read(out) == [h.removesuffix(".json.gz") for h in have]  # one source per file: no collision
    ids = read_ids(out)
    assert ids[:3] == ["en/c4-train.00000-of-01024/1", "en/c4-train.00000-of-01024/2",
                       "en/c4-train.00000-of-01024/3"]
    assert json.loads(next(iter_docs(out))["meta"])["url"] == "https://c4.example/0"


def test_openwebmath_reads_every_train_file_and_knows_its_count_from_the_names(tmp_path, texts):
    mirror = tmp_path / "owm"
    files = [f"data/train-{i:05d}-of-00004-{i:04x}beef.parquet" for i in range(4)]
    make_mirror("openwebmath", mirror, files, Texts(texts), per_file=5)
    out = run(tmp_path, pool_cfg("openwebmath", mirror))
    assert len(read_ids(out)) == 20 and inputs_read(out) == [f.removesuffix(".parquet") for f in files]
    (mirror / files[2]).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 4 files .*first: data/train-00002-of-00004\*\.parquet"):
        run(tmp_path, pool_cfg("openwebmath", mirror), "again")


def test_fineweb_edu_reads_its_sample(tmp_path, texts):
    mirror = tmp_path / "fwe"
    files = [f"sample/100BT/000_{i:05d}.parquet" for i in range(3)]
    make_mirror("fineweb_edu", mirror, files + ["sample/10BT/000_00000.parquet"], Texts(texts), per_file=4)
    out = run(tmp_path, pool_cfg("fineweb_edu", mirror))
    assert inputs_read(out) == [f.removesuffix(".parquet") for f in files]
    assert json.loads(next(iter_docs(out))["meta"])["int_score"] == 3


def test_dclm_reads_zstd_json_lines(tmp_path, texts):
    mirror = tmp_path / "dclm"
    files = fake_listing("dclm_baseline")
    make_mirror("dclm_baseline", mirror, files, Texts(texts), per_file=3)
    out = run(tmp_path, pool_cfg("dclm_baseline", mirror))
    assert len(read_ids(out)) == 60 and len(inputs_read(out)) == 20
    row = next(iter_docs(out))
    assert row["id"] == "global-shard_01_of_10/local-shard_0_of_10/shard_00000000_processed/1"
    assert json.loads(row["meta"])["url"] == "https://dclm.example/0"
    # a truncated .zst file: the records before the damage are kept, one bad record, the rest skipped
    path = mirror / files[0]
    path.write_bytes(path.read_bytes()[:-9])
    out = run(tmp_path, pool_cfg("dclm_baseline", mirror, on_bad_line="skip"), "damaged")
    assert manifest(out)["counts"]["bad_lines"] == 1
    bad = json.loads((out / "bad_lines.jsonl").read_text().splitlines()[0])
    assert "truncated zstd file" in bad["reason"]


# --- Token measurement and check --------------------------------------------------------------------------------------


def test_token_check_passes_with_the_pools_size_and_fails_naming_both_numbers(tmp_path, texts, llama_dir,
                                                                            monkeypatch):
    mirror = tmp_path / "owm"
    files = [f"data/train-{i:05d}-of-00003-abcd.parquet" for i in range(3)]
    source = Texts(texts)
    make_mirror("openwebmath", mirror, files, source, per_file=8)
    exact = exact_tokens(llama_dir, [t for f in files for t in pq.read_table(mirror / f).column("text").to_pylist()])
    ok = run(tmp_path, pool_cfg("openwebmath", mirror, tokenizer=str(llama_dir), tokens=exact * 1.03), "ok")
    m = manifest(ok)
    # every file holds fewer documents than the per-file sample: the measurement is exact
    assert m["counts"]["tokens_estimate"] == exact and m["counts"]["tokens_estimate_se"] == 0
    assert m["counts"]["token_sample_docs"] == 24 and m["extra"]["tokens"]["tokenizer"] == str(llama_dir.resolve())
    wrong = exact * 1.5
    with pytest.raises(RuntimeError, match=re.escape(f"measures {exact:.4g} tokens (± 0, {llama_dir.resolve()}) but "
                                                     f"corpus.tokens = {wrong:.4g}: off by -33.3%, more than 5%")):
        run(tmp_path, pool_cfg("openwebmath", mirror, tokenizer=str(llama_dir), tokens=wrong), "wrong")
    assert not (tmp_path / "wrong" / "_SUCCESS").exists()
    # the same artifact completes with the check off (a runtime setting: same key), without rereading any file
    import proxlab.refine.prepare as prepare

    monkeypatch.setattr(prepare, "process_input", lambda *a: pytest.fail("an input file was read again"))
    fixed = run(tmp_path, pool_cfg("openwebmath", mirror, tokenizer=str(llama_dir), tokens=wrong,
                                   check_tokens=False), "wrong")
    assert manifest(fixed)["counts"]["tokens_estimate"] == exact and (tmp_path / "wrong" / "_SUCCESS").exists()


def test_no_tokenizer_no_measurement_and_no_check(tmp_path, texts):
    mirror = tmp_path / "fwe"
    make_mirror("fineweb_edu", mirror, ["sample/100BT/000_00000.parquet"], Texts(texts), per_file=4)
    out = run(tmp_path, pool_cfg("fineweb_edu", mirror, tokens=1.0))
    assert "tokens_estimate" not in manifest(out)["counts"]
    assert manifest(out)["extra"]["tokens"]["measured"] is None


def test_sampled_estimate_is_within_its_standard_errors(tmp_path, texts, llama_dir, monkeypatch):
    """With fewer documents tokenized than a file holds, the stratified ratio estimate lands within a few standard
    errors of the exact count, and the error is reported."""
    import proxlab.refine.prepare as prepare

    monkeypatch.setattr(prepare, "TOKEN_SAMPLE_PER_INPUT", 12)
    mirror = tmp_path / "fw"
    found = [f"sample/350BT/000_{i:05d}.parquet" for i in range(7)]
    make_mirror("fineweb", mirror, found, Texts(texts), per_file=40)
    exact = exact_tokens(llama_dir, [t for f in found for t in pq.read_table(mirror / f).column("text").to_pylist()])
    out = run(tmp_path, pool_cfg("fineweb", mirror, dumps=list(range(7)), tokenizer=str(llama_dir)))
    c = manifest(out)["counts"]
    assert c["token_sample_docs"] == 7 * 12
    assert 0 < c["tokens_estimate_se"] < 0.1 * exact
    assert abs(c["tokens_estimate"] - exact) < 4 * c["tokens_estimate_se"]
    assert abs(c["tokens_estimate"] / exact - 1) < 0.1


# ---------------------------------------------------------------------------------------------------------------------
# The graph keys prepare by the same listing


def test_the_graph_keys_prepare_by_the_pools_files(tmp_path, texts):
    from hydra import compose, initialize_config_dir

    from proxlab.runner.graph import plan
    from proxlab.runner.run import CONF_DIR  # noqa: F401  (registers the schemas)

    mirror = tmp_path / "fw"
    found = [f"sample/350BT/{r:03d}_{i:05d}.parquet" for r in range(2) for i in range(7)]
    make_mirror("fineweb", mirror, found, Texts(texts), per_file=2)

    def prepare_stage(*extra):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["exp=smoke", "corpus=fineweb", "corpus.source=local",
                                               f"corpus.path={mirror}", f"paths.artifacts_dir={tmp_path}", *extra])
        return {s.name: s for s in plan(cfg, tmp_path / "artifacts")}["prepare"], cfg

    st, cfg = prepare_stage()
    # `proxlab plan` finds the measured pool under the same key (runner.planning lists the files the same way)
    from proxlab.runner.planning import prepare_artifact
    from proxlab.runner.validate import typed

    assert prepare_artifact(typed(cfg)).name == st.key
    chosen = select(POOLS["fineweb"], found, (0, 1), 7, 1234).expected
    assert [Path(f[0]).relative_to(mirror.resolve()).as_posix() for f in st.sources["corpus"]] == sorted(chosen)
    assert prepare_stage("corpus.dumps=[2]")[0].key != st.key
    assert prepare_stage("corpus.dump_seed=1")[0].key != st.key
    assert prepare_stage("corpus.tokens=1e9", "corpus.check_tokens=false")[0].key == st.key  # runtime: no re-key
    (mirror / chosen[0]).unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 4 files"):
        prepare_stage()
