"""Parameter counts of a LitGPT model config, counted on the meta device (no memory, no init)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

_COUNTS: dict[str, tuple[int, int]] = {}


def param_counts(cfg: Any) -> tuple[int, int]:
    """(total, non-embedding) parameters of the model a `litgpt.Config` describes; non-embedding = total minus one
    embedding matrix. Cached by the config's JSON because litgpt.Config is not hashable."""
    key = json.dumps(asdict(cfg), sort_keys=True, default=str)
    if key not in _COUNTS:
        import torch
        from litgpt.model import GPT

        with torch.device("meta"):
            model = GPT(cfg)
        total = sum(p.numel() for p in model.parameters())
        _COUNTS[key] = (total, total - model.transformer.wte.weight.numel())
    return _COUNTS[key]


def total_params(cfg: Any) -> int:
    return param_counts(cfg)[0]


def non_embedding_params(cfg: Any) -> int:
    return param_counts(cfg)[1]
