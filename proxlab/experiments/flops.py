"""The FLOPs accounting of the paper (§4.2, App. E.3; Kaplan et al.), in one place.

    C_train     = 6 · N · D_train
    C_inference = 2 · N · (D_prefill + D_decode)

N is the number of **non-embedding** parameters: all parameters minus one embedding matrix (vocab × n_embd). With
untied embeddings the output head stays in N, as in the paper's Table 8 (TLM-XS: 354,284,800 total, 313,324,800
non-embedding). `cfg` is a LitGPT `Config`; an `int` is taken as N itself, so stages that only know an HF model's
parameter count (the vLLM environment has no LitGPT) use the same formulas.
"""

from __future__ import annotations

from typing import Any, Union

ParamSource = Union[int, Any]  # an int N, or a litgpt.Config


def total_params(cfg: Any) -> int:
    """Parameters of the LitGPT model `cfg` describes, counted on the meta device (no memory, no init)."""
    return _param_counts(_config_key(cfg), cfg)[0]


def non_embedding_params(cfg: ParamSource) -> int:
    if isinstance(cfg, int):
        return cfg
    return _param_counts(_config_key(cfg), cfg)[1]


def training_flops(cfg: ParamSource, tokens: int | float) -> float:
    return 6.0 * non_embedding_params(cfg) * float(tokens)


def inference_flops(cfg: ParamSource, prompt_tokens: int | float, generated_tokens: int | float) -> float:
    return 2.0 * non_embedding_params(cfg) * (float(prompt_tokens) + float(generated_tokens))


def _config_key(cfg: Any) -> str:
    import json
    from dataclasses import asdict

    return json.dumps(asdict(cfg), sort_keys=True, default=str)


_COUNTS: dict[str, tuple[int, int]] = {}


def _param_counts(key: str, cfg: Any) -> tuple[int, int]:
    """(total, non-embedding), cached by the config's JSON because litgpt.Config is not hashable."""
    if key not in _COUNTS:
        import torch
        from litgpt.model import GPT

        with torch.device("meta"):
            model = GPT(cfg)
        total = sum(p.numel() for p in model.parameters())
        _COUNTS[key] = (total, total - model.transformer.wte.weight.numel())
    return _COUNTS[key]
