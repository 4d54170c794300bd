"""Pythia (paper Table 3) runs on GPT-NeoX's tokenizer: the model YAMLs name it, its 50,277 tokens fit the preset's
50,304 padded rows, the tokenizer stage finds it by name or hub id, and without a local copy it fails naming the key
and the download command -- never a fallback to another tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import stage_spec

from proxlab.core.stage import run_stage
from proxlab.pretrain import tokenizer

CONF = Path(__file__).resolve().parents[2] / "conf"
NEOX_TOKENS = 50_277  # EleutherAI/gpt-neox-20b (Pythia's): 50,254 BPE tokens + 23 added ones


def neox_like_tokenizer(directory: Path, n_tokens: int = NEOX_TOKENS) -> Path:
    """A stand-in for GPT-NeoX's tokenizer files with its size and special tokens (`<|endoftext|>` as bos, eos and
    unk, id 0), as `hf download EleutherAI/gpt-neox-20b tokenizer.json tokenizer_config.json special_tokens_map.json`
    lays them out."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<|padding|>": 1, **{f"t{i}": i for i in range(2, n_tokens)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>", "<|padding|>"])
    directory.mkdir(parents=True)
    tok.save(str(directory / "tokenizer.json"))
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {**special, "add_bos_token": False, "add_prefix_space": False, "tokenizer_class": "GPTNeoXTokenizer"}))
    (directory / "special_tokens_map.json").write_text(json.dumps(special))
    return directory


@pytest.fixture(scope="module")
def pythia_models():
    """conf/model/pythia_*.yaml, typed as the pretrain stage types them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from proxlab.core.config import ModelConfig, load
    from proxlab.runner.compose import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return {name: load(ModelConfig, OmegaConf.to_container(compose("config", [f"model={name}"]).model))
                for name in ("pythia_410m", "pythia_1b")}


def test_pythia_yamls_name_gpt_neox(pythia_models):
    from proxlab.models.presets import PAPER_TOKENIZERS, tokenizer_standin

    for name, model in pythia_models.items():
        assert (model.tokenizer.kind, model.tokenizer.path) == ("pretrained", "gpt-neox-20b")
        assert PAPER_TOKENIZERS[name] == "gpt-neox-20b"
        assert tokenizer_standin(name, "pretrained", model.tokenizer.path) is None
        assert tokenizer_standin(name, "pretrained", "EleutherAI/gpt-neox-20b") is None  # the hub id names it too
        assert tokenizer_standin(name, "pretrained", "llama_hf") == \
            "tokenizer: Llama-2 (llama_hf) stand-in, not the paper's GPT-NeoX"
        assert "stand-in" in tokenizer_standin(name, "train_bpe", None)
    assert tokenizer_standin("tlm_s", "pretrained", "llama_hf") is None  # no stand-in recorded for other presets


@pytest.mark.parametrize("tokens", [NEOX_TOKENS, 50_280])  # gpt-neox-20b's size; a variant with 3 more specials
def test_gpt_neox_vocabulary_pads_to_50304(pythia_models, tokens):
    """The preset's own padding (litgpt's pythia configs: a multiple of 128) gives the paper's 50,304 rows, the
    YAMLs' pin agrees, and `proxlab plan` counts the same rows."""
    from omegaconf import OmegaConf

    from proxlab.models.presets import model_config, resolved_model_config

    for name, model in pythia_models.items():
        assert model_config(name, vocab_size=tokens).padded_vocab_size == 50_304
        unpinned = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(model), {"vocab_size": None}))
        assert resolved_model_config(unpinned, tokens).padded_vocab_size == 50_304
        assert resolved_model_config(model, tokens).padded_vocab_size == 50_304
        assert resolved_model_config(model, 32_000).padded_vocab_size == 50_304  # the stand-in keeps the paper's rows


def test_stage_copies_gpt_neox_by_name_and_hub_id(tmp_path, corpus, pythia_models):
    from proxlab.pretrain.model import build_config

    data = tmp_path / "data"
    neox_like_tokenizer(data / "tokenizers" / "gpt-neox-20b")
    neox_like_tokenizer(data / "tokenizers" / "EleutherAI" / "gpt-neox-20b")
    for path in ("gpt-neox-20b", "EleutherAI/gpt-neox-20b"):
        out = tmp_path / path.replace("/", "_")
        spec = stage_spec("tokenizer", out, {"kind": "pretrained", "path": path}, {"docs": corpus},
                          runtime={"data_dir": str(data)})
        assert run_stage(tokenizer.main, spec).counts == {"vocab_size": NEOX_TOKENS}
        cfg = json.loads((out / "tokenizer_config.json").read_text())
        assert (cfg["bos_token"], cfg["eos_token"], cfg["add_bos_token"]) == ("<|endoftext|>", "<|endoftext|>", False)
        # the pretrain stage's model of the copied tokenizer: the paper's 50,304 rows
        assert build_config(pythia_models["pythia_410m"], out).padded_vocab_size == 50_304


def test_missing_gpt_neox_fails_naming_key_and_download(tmp_path, corpus):
    data = tmp_path / "data"
    neox_like_tokenizer(data / "tokenizers" / "llama_hf", 300)  # another tokenizer is there: never taken instead
    out = tmp_path / "out"
    spec = stage_spec("tokenizer", out, {"kind": "pretrained", "path": "gpt-neox-20b"}, {"docs": corpus},
                      runtime={"data_dir": str(data)})
    with pytest.raises(FileNotFoundError) as err:
        run_stage(tokenizer.main, spec)
    target = data / "tokenizers" / "gpt-neox-20b"
    message = str(err.value)
    assert message.startswith(f"model.tokenizer.path='gpt-neox-20b': no tokenizer.json in {target} ")
    assert (f"`hf download EleutherAI/gpt-neox-20b tokenizer.json tokenizer_config.json special_tokens_map.json "
            f"--local-dir {target}`") in message
    assert Path(err.traceback[-1].path).name == "tokenizer.py"  # proxlab's error, not a library's
    assert not (out / "tokenizer.json").exists() and not (out / "_SUCCESS").exists()
    # prepare measures the pool with the same tokenizer (corpus.tokenizer: ${model.tokenizer.path}): the same advice
    from proxlab.refine.prepare import load_tokenizer

    with pytest.raises(FileNotFoundError, match=r"^corpus\.tokenizer='gpt-neox-20b'.*`hf download EleutherAI/gpt-neox"):
        load_tokenizer("gpt-neox-20b", str(data))
    # The refiner's base tokenizer (refiner.tokenizer stage) names its own key.
    spec = stage_spec("refiner.tokenizer", tmp_path / "ref", {"kind": "pretrained", "path": "/no/such/tok"},
                      {"docs": corpus}, runtime={"data_dir": str(data)})
    with pytest.raises(FileNotFoundError, match=r"^refiner\.base\.model\.tokenizer\.path='/no/such/tok': no "
                                                r"tokenizer\.json in /no/such/tok; put a tokenizer directory"):
        run_stage(tokenizer.main, spec)
