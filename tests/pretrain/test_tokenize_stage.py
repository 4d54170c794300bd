"""Stage "tokenize": per document no BOS + EOS, packed into seq_len+1 LitData windows; a SIGKILL mid-stage and a
rerun give the same bytes, tokens and windows as an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import kill_when, log_tail, run_cli, stage_spec, start_stage, wait, write_docs

from proxlab.core.stage import is_complete


def _bins(split: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(split.glob("chunk-*.bin")))


def _digests(out: Path) -> dict[str, str]:
    """sha256 of every file of both splits, by path relative to the stage dir; index.json without litdata's
    `updated_at` (a timestamp, different in every run)."""
    def content(p: Path) -> bytes:
        if p.name != "index.json":
            return p.read_bytes()
        return json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "updated_at"}).encode()

    return {str(p.relative_to(out)): hashlib.sha256(content(p)).hexdigest()
            for split in ("train", "val") for p in sorted((out / split).rglob("*")) if p.is_file()}


def test_same_bytes_for_any_worker_count(tmp_path, bpe_dir):
    """5-document row groups give ~80 small pieces, many per worker: with per-worker chunks, each worker's last partial
    chunk and file names would differ; a single writer in corpus order makes every worker count equal workers=1."""
    from proxlab.core.stage import run_stage
    from proxlab.pretrain import tokenize

    docs = write_docs(tmp_path / "docs", 400, docs_per_shard=5)
    outs = {}
    for workers in (1, 2, 3):
        outs[workers] = out = tmp_path / f"w{workers}"
        run_stage(tokenize.main, stage_spec("tokenize", out, {"seq_len": 32}, {"docs": docs, "tokenizer": bpe_dir},
                                            runtime={"settings": {"workers": workers}}))
    ref = _digests(outs[1])
    assert len([k for k in ref if k.startswith("train/chunk-")]) > 3  # several chunks, so boundaries can move
    for workers in (2, 3):
        assert _digests(outs[workers]) == ref, f"workers={workers}"
        assert (outs[workers] / "tokens.json").read_bytes() == (outs[1] / "tokens.json").read_bytes()


def test_counts_and_format(corpus, bpe_dir, tokenized):
    from litdata import StreamingDataset
    from litdata.streaming.item_loader import TokensLoader
    from tokenizers import Tokenizer

    from proxlab.core.formats import corpus_shards, iter_texts

    info = json.loads((tokenized / "tokens.json").read_text())
    assert info["docs"] == 400 and (info["train_docs"], info["val_docs"]) == (392, 8)  # last 2% is val
    tok = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    texts = [t for b in iter_texts(corpus_shards(corpus)) for t in b]
    expected = [len(e.ids) + 1 for e in tok.encode_batch(texts, add_special_tokens=False)]  # + EOS, no BOS
    assert info["train_tokens"] == sum(expected[:392]) and info["val_tokens"] == sum(expected[392:])
    assert info["tokens"] == info["train_tokens"] + info["val_tokens"]

    ds = StreamingDataset(str(tokenized / "train"), item_loader=TokensLoader(block_size=65))
    assert len(ds) == info["windows"] > 0
    first = ds[0].tolist()
    eos = tok.token_to_id("</s>")
    doc0 = tok.encode(texts[0], add_special_tokens=False).ids
    assert first[: min(65, len(doc0))] == doc0[:65] and tok.token_to_id("<s>") not in first
    assert (first[len(doc0)] == eos) if len(doc0) < 65 else True


def test_sigkill_midway_then_rerun_equals_uninterrupted(tmp_path):
    docs = write_docs(tmp_path / "docs", 1000, docs_per_shard=50)
    from proxlab.core.stage import run_stage
    from proxlab.pretrain import tokenizer

    tok = tmp_path / "tok"
    run_stage(tokenizer.main, stage_spec("tokenizer", tok, {"kind": "train_bpe", "vocab_size": 1024,
                                                            "train_docs": 200}, {"docs": docs}))
    cfg, inputs, runtime = {"seq_len": 128}, {"docs": docs, "tokenizer": tok}, {"settings": {"workers": 2}}

    ref = tmp_path / "ref"
    stage_spec("tokenize", ref, cfg, inputs, runtime=runtime)
    assert run_cli("proxlab.pretrain.tokenize", ref) == 0, log_tail(ref)

    for where in ("train", "val"):  # kill while writing the train split, then while writing val
        out = tmp_path / f"killed-{where}"
        stage_spec("tokenize", out, cfg, inputs, runtime=runtime)
        proc = start_stage("proxlab.pretrain.tokenize", out)
        if where == "train":
            def ready():  # chunks written but the split not finished (on a fast machine: already mid-val)
                return (any((out / ".tmp-train").glob("chunk-*")) or any(out.glob(".cache-train/chunks/*.bin"))
                        or (out / "train" / "index.json").exists())
        else:
            def ready():
                return (out / "train" / "index.json").exists()
        if not kill_when(proc, ready):
            pytest.fail(f"the tokenize run ended before the kill point:\n{log_tail(out)}")
        wait(proc)
        assert not is_complete(out) and not (out / "tokens.json").exists()
        assert run_cli("proxlab.pretrain.tokenize", out) == 0, log_tail(out)
        assert json.loads((out / "tokens.json").read_text()) == json.loads((ref / "tokens.json").read_text())
        for split in ("train", "val"):
            assert _bins(out / split) == _bins(ref / split)
        assert not list(out.glob(".tmp-*")) and not list(out.glob(".cache-*"))


def test_errors_name_the_input(tmp_path, bpe_dir):
    from proxlab.pretrain import tokenize

    docs = write_docs(tmp_path / "one", 1)
    spec = stage_spec("tokenize", tmp_path / "o1", {"seq_len": 64}, {"docs": docs, "tokenizer": bpe_dir})
    with pytest.raises(ValueError, match="too few"):
        tokenize.main(spec)
    spec = stage_spec("tokenize", tmp_path / "o2", {"seq_len": 64}, {"docs": tmp_path / "one", "tokenizer": tmp_path})
    with pytest.raises(FileNotFoundError, match="input 'tokenizer'"):
        tokenize.main(spec)
    with pytest.raises(KeyError, match="seq_len"):
        tokenize.main(stage_spec("tokenize", tmp_path / "o3", {}, {"docs": docs, "tokenizer": bpe_dir}))
    with pytest.raises(KeyError, match=r"settings'\]\['workers"):  # unhashed: the worker count is a runtime setting
        tokenize.main(stage_spec("tokenize", tmp_path / "o4", {"seq_len": 64, "workers": 2},
                                 {"docs": docs, "tokenizer": bpe_dir}))


def test_val_fraction_zero_trains_on_every_document(tmp_path, bpe_dir):
    """Paper recipes hold nothing out (train.val_fraction=0): every document's tokens are in train, none in val."""
    from proxlab.core.stage import run_stage
    from proxlab.pretrain import tokenize

    docs = write_docs(tmp_path / "docs", 200, docs_per_shard=50)
    held, whole = tmp_path / "held", tmp_path / "whole"
    run_stage(tokenize.main, stage_spec("tokenize", held, {"seq_len": 32, "val_fraction": 0.02},
                                        {"docs": docs, "tokenizer": bpe_dir}))
    run_stage(tokenize.main, stage_spec("tokenize", whole, {"seq_len": 32, "val_fraction": 0.0},
                                        {"docs": docs, "tokenizer": bpe_dir}))
    a, b = json.loads((held / "tokens.json").read_text()), json.loads((whole / "tokens.json").read_text())
    assert (a["train_docs"], a["val_docs"]) == (196, 4) and (b["train_docs"], b["val_docs"]) == (200, 0)
    assert b["train_tokens"] == a["train_tokens"] + a["val_tokens"] and not (whole / "val").exists()


def test_paper_recipes_hold_nothing_out():
    from proxlab.runner.compose import compose_config

    for recipe in ("tlm_12k5", "tlm_s_12k5", "tlm_m_25k", "pythia_wsd", "math_cpt_mistral"):
        assert compose_config([f"train={recipe}"]).train.val_fraction == 0.0, recipe
    assert compose_config(["exp=smoke"]).train.val_fraction == 0.02  # the CPU demo keeps a validation loss
