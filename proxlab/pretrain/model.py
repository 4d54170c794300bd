"""Building the LitGPT model of a pretrain spec: its Config (from the typed ModelConfig), GPT-NeoX initialisation,
optional initial weights."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from proxlab.core.config import ModelConfig


def build_config(model: ModelConfig, tokenizer_dir: Path):
    """The `litgpt.Config` of `model` (`resolved_model_config`, the one `proxlab plan` counts), with the tokenizer's
    vocabulary unless the config pins one; the tokenizer must fit in the padded vocabulary."""
    from proxlab.models.presets import resolved_model_config
    from proxlab.pretrain.tokenizer import vocab_size_of

    tok_vocab = vocab_size_of(Path(tokenizer_dir))
    cfg = resolved_model_config(model, tok_vocab)
    if tok_vocab > cfg.padded_vocab_size:
        raise ValueError(f"model.vocab_size: the tokenizer in {tokenizer_dir} has {tok_vocab} tokens but the model "
                         f"{model.preset!r} embeds only {cfg.padded_vocab_size}")
    return cfg


def init_weights(model, n_layer: int, n_embd: int, materialize: bool) -> None:
    """GPT-NeoX init as in the reference code (GAIR-NLP/ProX `train/`; paper §B.1): embeddings and linears
    N(0, sqrt(2/(5d))), output projections N(0, 1/sqrt(d)/n_layer). With FSDP (meta init) FSDP calls the patched
    `reset_parameters`."""
    import torch.nn as nn
    from litgpt.model import CausalSelfAttention, LLaMAMLP
    from litgpt.utils import reset_parameters

    def normal(module, std):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)

    for mod in model.modules():
        if isinstance(mod, (nn.Embedding, nn.Linear)):
            mod.reset_parameters = partial(normal, mod, std=math.sqrt(2.0 / 5 / n_embd))
    for mod in model.modules():
        if isinstance(mod, (LLaMAMLP, CausalSelfAttention)) or type(mod).__name__ == "GptNeoxMLP":
            mod.proj.reset_parameters = partial(normal, mod.proj, std=1 / math.sqrt(n_embd) / n_layer)
    if materialize:
        reset_parameters(model)


def load_initial_weights(path: str | Path):
    """A state dict from a LitGPT checkpoint dir or file (`{"model": sd}` or a bare state dict, e.g. from
    `litgpt convert_to_litgpt`)."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / "lit_model.pth"
    if not path.is_file():
        raise FileNotFoundError(f"model.init_checkpoint: {path} does not exist")
    sd = torch.load(path, mmap=True, map_location="cpu", weights_only=True)
    return sd.get("model", sd)
