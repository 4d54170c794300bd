"""Fixtures for the evaluation tests: tiny LitGPT checkpoints (random Llama-style weights + a BPE tokenizer trained here)
in the layout ``litgpt pretrain`` writes, and the offline environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")

from proxlab.evaluate.tasks.data import read_jsonl, resolve_data_dir  # noqa: E402

DATA_DIR = resolve_data_dir()

TINY_CONFIG = dict(name="proxlab-tiny-test", block_size=512, vocab_size=1024, padded_vocab_size=1024, n_layer=2,
                   n_head=4, n_embd=64, n_query_groups=2, head_size=16, rotary_percentage=1.0,
                   parallel_residual=False, bias=False, norm_class_name="RMSNorm", norm_eps=1e-5,
                   mlp_class_name="LLaMAMLP", intermediate_size=128, rope_base=10000)


def _corpus() -> list[str]:
    texts = []
    for name in ("arc_easy_test", "piqa_validation", "sciq_validation", "hellaswag_validation"):
        for row in read_jsonl(DATA_DIR / "eval" / f"{name}.jsonl")[:300]:
            texts.append(json.dumps(row, ensure_ascii=False))
    for row in read_jsonl(DATA_DIR / "math_eval" / "gsm8k_test.jsonl")[:200]:
        texts.append(row["question"] + "\n" + row["answer"])
    return texts


def train_tokenizer(out_dir: Path, vocab_size: int = 1024, add_bos: bool = True) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
         "add_bos_token": add_bos, "model_max_length": TINY_CONFIG["block_size"]}))


def save_checkpoint(ckpt_dir: Path, tok_dir: Path, seed: int, wrapped: bool = True, step: int | None = None,
                    config: dict | None = None) -> None:
    """A random checkpoint of ``config`` (default ``TINY_CONFIG``)."""
    import shutil

    import torch
    import yaml
    from litgpt import GPT, Config

    torch.manual_seed(seed)
    model_config = dict(config or TINY_CONFIG)
    config = Config(**model_config)
    model = GPT(config)
    model.apply(model._init_weights)
    with torch.no_grad():  # larger-than-default weights make the random model's preferences sharp
        for p in model.parameters():
            p.mul_(3.0)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    payload = {"model": state, "optimizer": {}, "iter_num": step or 0, "step_count": step or 0} if wrapped else state
    torch.save(payload, ckpt_dir / "lit_model.pth")
    (ckpt_dir / "model_config.yaml").write_text(yaml.safe_dump(model_config))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tok_dir / f, ckpt_dir / f)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A pretrain artifact dir: ``final/`` (wrapped state, step 20) and ``step-00000010/`` (bare state dict)."""
    root = tmp_path_factory.mktemp("pretrain_artifact")
    tok_dir = root / "_tokenizer"
    train_tokenizer(tok_dir)
    save_checkpoint(root / "step-00000010", tok_dir, seed=1, wrapped=False)
    save_checkpoint(root / "final", tok_dir, seed=2, wrapped=True, step=20)
    return root


@pytest.fixture(scope="session")
def tiny_hf(tiny_artifact, tmp_path_factory) -> Path:
    from proxlab.evaluate.lms.convert import litgpt_to_hf

    return litgpt_to_hf(tiny_artifact / "final", tmp_path_factory.mktemp("hf") / "model")
