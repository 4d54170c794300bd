"""Stage "tokenizer": a deterministic byte-level BPE, or a copied pretrained tokenizer; both load in LitGPT and HF."""

from __future__ import annotations

import json

import pytest
from conftest import DATA_DIR, stage_spec

from proxlab.core.stage import run_stage
from proxlab.pretrain import tokenizer


def _check_loadable(d, text="Hello world, this is a test.\nSecond line."):
    from litgpt import Tokenizer
    from transformers import AutoTokenizer

    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert {"tokenizer_class", "bos_token", "eos_token", "add_bos_token"} <= set(cfg)
    lit, hf = Tokenizer(d), AutoTokenizer.from_pretrained(str(d))
    ids = lit.encode(text).tolist()
    assert ids[0] == lit.bos_id and hf(text)["input_ids"] == ids  # the same ids, BOS included, in both libraries
    assert hf.decode(ids, skip_special_tokens=True) == text
    assert lit.eos_id is not None


def test_train_bpe_is_deterministic_and_loadable(tmp_path, corpus, bpe_dir):
    cfg = {"kind": "train_bpe", "vocab_size": 2048, "train_docs": 300}
    result = run_stage(tokenizer.main, stage_spec("tokenizer", tmp_path / "again", cfg, {"docs": corpus}))
    assert result.counts == {"vocab_size": 2048}
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (bpe_dir / "tokenizer.json").read_text()
    cfg = json.loads((bpe_dir / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["bos_token"] == "<s>"
    _check_loadable(bpe_dir)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    assert [tok.token_to_id(t) for t in ("<s>", "</s>", "<unk>", "<pad>")] == [0, 1, 2, 3]


def test_train_docs_changes_the_vocabulary(tmp_path, corpus, bpe_dir):
    run_stage(tokenizer.main, stage_spec("tokenizer", tmp_path / "few", {"kind": "train_bpe", "vocab_size": 2048,
                                                                         "train_docs": 20}, {"docs": corpus}))
    assert (tmp_path / "few" / "tokenizer.json").read_text() != (bpe_dir / "tokenizer.json").read_text()


def test_pretrained_by_name_under_data_dir(tmp_path, corpus):
    if not (DATA_DIR / "tokenizers" / "llama_hf" / "tokenizer.json").exists():
        pytest.skip("no llama_hf tokenizer under the data dir")
    spec = stage_spec("tokenizer", tmp_path / "llama", {"kind": "pretrained", "path": "llama_hf"}, {"docs": corpus},
                      runtime={"data_dir": str(DATA_DIR)})
    assert run_stage(tokenizer.main, spec).counts == {"vocab_size": 32000}
    _check_loadable(tmp_path / "llama")


def test_errors_name_the_problem(tmp_path, corpus):
    spec = stage_spec("tokenizer", tmp_path / "x", {"kind": "pretrained", "path": "no_such_tok"}, {"docs": corpus},
                      runtime={"data_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="no_such_tok"):
        tokenizer.main(spec)
    spec = stage_spec("tokenizer", tmp_path / "y", {"kind": "train_bpe"}, {"docs": tmp_path / "missing"})
    with pytest.raises(FileNotFoundError, match="input 'docs'"):
        tokenizer.main(spec)
    with pytest.raises(ValueError, match="kind"):
        tokenizer.main(stage_spec("tokenizer", tmp_path / "z", {"kind": "sentencepiece"}, {"docs": corpus}))
