"""The two seeds of a pretraining, through the pretrain stage's own setup (no mocks): `train.seed` draws the initial
weights (and the data order while `train.data_seed` is unset); `train.data_seed` draws the order of the batches
alone."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import stage_spec

from proxlab.core.config import ModelConfig, TrainConfig, load, split_settings
from proxlab.pretrain import train as pretrain
from proxlab.pretrain.data import data_info

MODEL = {"preset": "tiny", "n_layer": 1, "n_embd": 32, "n_head": 2, "intermediate_size": 64}
TRAIN = {"recipe": "test", "seq_len": 64, "global_batch_size": 4, "micro_batch_size": 4, "max_steps": 2,
         "warmup_steps": 1, "save_interval": 2, "precision": "32-true"}


def _set_up(out: Path, data: Path, tok: Path, **seeds) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The initial weights and first three batches the stage's `setup` builds for these seeds."""
    hashed, settings = split_settings(TrainConfig, {**TRAIN, **seeds})
    spec = stage_spec("pretrain", out, {"model": MODEL, "train": hashed}, {"data": data, "tokenizer": tok},
                      runtime={"devices": 1, "num_nodes": 1, "accelerator": "cpu", "settings": settings})
    train, model = load(TrainConfig, hashed, settings), load(ModelConfig, MODEL)
    run = pretrain.setup(spec, train, model, data_info(data))
    try:
        weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        return weights, [run.data.next() for _ in range(3)]
    finally:
        run.logger.close()


def test_seed_draws_the_init_and_data_seed_the_batch_order(tmp_path, tokenized, bpe_dir):
    base_w, base_b = _set_up(tmp_path / "a", tokenized, bpe_dir, seed=1)
    order_w, order_b = _set_up(tmp_path / "b", tokenized, bpe_dir, seed=1, data_seed=2)
    same_w, same_b = _set_up(tmp_path / "c", tokenized, bpe_dir, seed=1, data_seed=1)
    init_w, init_b = _set_up(tmp_path / "d", tokenized, bpe_dir, seed=2, data_seed=1)

    def same_weights(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    def same_batches(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    assert same_weights(base_w, order_w) and not same_batches(base_b, order_b)  # data_seed: the order alone
    assert same_weights(base_w, same_w) and same_batches(base_b, same_b)  # unset: train.seed orders the data
    assert not same_weights(base_w, init_w) and same_batches(base_b, init_b)  # seed: the init alone
