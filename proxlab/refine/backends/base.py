"""The one interface every refining-model backend implements, and what they share.

A backend turns token-id prompts into greedy completions::

    backend.generate(prompts: list[list[int]], max_new_tokens: int) -> list[Generation]

Prompts are token ids rendered by ``proxlab.refine.prompts`` with the backend's tokenizer, so every backend sees the
same ids. Backends return generated **token ids**; the text is decoded here, once, with that same tokenizer
(``skip_special_tokens=True``), so hf / vllm / openai outputs are comparable token for token and byte for byte.

Length guard (same for all backends, so they agree on long inputs): a prompt that leaves no room in the model's context
(``len(prompt) >= context_len``) is not sent; it gets an empty output with ``finish_reason="prompt_too_long"`` (vLLM
0.4, which the reference used, ignored such prompts and returned nothing; vLLM 1.x would raise). Otherwise the number of
new tokens is capped so that prompt + output fits the context (``finish_reason="length"`` when the cap is hit), as vLLM
does with ``max_model_len``.

Imports only the standard library at module level; transformers/torch are imported by the functions that need them.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from proxlab.core.config import GenerateConfig

PROMPT_TOO_LONG = "prompt_too_long"
FINISH_REASONS = ("stop", "length", PROMPT_TOO_LONG)


@dataclass
class Generation:
    """One completion: the decoded text, token counts and why it ended (stop | length | prompt_too_long)."""

    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    token_ids: list[int] = field(default_factory=list, repr=False)


@dataclass
class BackendStats:
    """Wall-clock and token counters of one backend instance (what the benchmark and the stage log report)."""

    calls: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    generate_s: float = 0.0  # time spent inside the backend's own generate (model work), summed over calls
    load_s: float = 0.0


class Backend:
    """Base class. Subclasses set ``name``, ``tokenizer``, ``context_len``, ``dtype`` and implement ``_generate``.

    ``cfg`` holds every GenerateConfig setting (``make_backend`` fills the defaults)."""

    name = "base"

    def __init__(self, model_path: str, cfg: GenerateConfig):
        self.model_path = model_path
        self.cfg = cfg
        self.tokenizer = None
        self.context_len: int = int(cfg.max_model_len or 0)
        self.dtype: str | None = None  # what the model runs in (resolved, checked against the engine); None: a server's
        self.stats = BackendStats()

    # -- to implement -------------------------------------------------------------------------------------------------
    def _generate(self, prompts: list[list[int]], max_tokens: list[int]) -> list[tuple[list[int], str]]:
        """Greedy completions: per prompt (generated token ids, finish reason "stop" | "length")."""
        raise NotImplementedError

    def close(self) -> None:  # free the engine / server connections
        pass

    # -- shared -------------------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[Generation]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {max_new_tokens}")
        out: list[Generation | None] = [None] * len(prompts)
        todo, caps = [], []
        for i, ids in enumerate(prompts):
            ids = list(ids)
            room = self.context_len - len(ids) if self.context_len else max_new_tokens
            if not ids or room < 1:
                out[i] = Generation("", len(ids), 0, PROMPT_TOO_LONG)
                continue
            todo.append(i)
            caps.append(min(max_new_tokens, room))
        if todo:
            t0 = time.perf_counter()
            results = self._generate([list(prompts[i]) for i in todo], caps)
            self.stats.generate_s += time.perf_counter() - t0
            if len(results) != len(todo):
                raise RuntimeError(f"backend {self.name} returned {len(results)} results for {len(todo)} prompts")
            texts = self.decode([ids for ids, _ in results])
            for i, cap, (ids, reason), text in zip(todo, caps, results, texts):
                if len(ids) > cap:  # never more than asked (a backend may run a batch to its longest cap)
                    ids, reason = ids[:cap], "length"
                out[i] = Generation(text, len(prompts[i]), len(ids), reason, list(ids))
        self.stats.calls += 1
        self.stats.prompts += len(prompts)
        self.stats.prompt_tokens += sum(g.prompt_tokens for g in out if g.finish_reason != PROMPT_TOO_LONG)
        self.stats.output_tokens += sum(g.output_tokens for g in out)
        return out  # type: ignore[return-value]

    def decode(self, batch: list[list[int]]) -> list[str]:
        """Text of generated ids: special tokens (EOS) skipped, surrounding spaces stripped like the reference
        (``item.outputs[0].text.strip(" ")``). No ``clean_up_tokenization_spaces``: vLLM's detokenizer (the
        reference's) never applies it, transformers 5.x ignores it for BPE while 4.x would apply it (" ," -> ","),
        and it would rewrite the strings a ``normalize(...)`` call has to find."""
        if not batch:
            return []
        texts = self.tokenizer.batch_decode(batch, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [t.strip(" ") for t in texts]


# ---------------------------------------------------------------------------------------------------------------------
# Model helpers shared by the backends


def load_tokenizer(path: str):
    """The refiner's tokenizer, identical in both environments: ``tokenizer.json`` as saved, when there is one.

    ``AutoTokenizer`` picks the class named in tokenizer_config.json, and transformers 5.x (the vLLM environment)
    rebuilds a ``LlamaTokenizer`` from its vocabulary with its own pre-tokenizer instead of using tokenizer.json:
    SmolLM2's byte-level BPE then loses every space and newline, and the Llama-2 tokenizer encodes ``<s>[INST]``
    differently from transformers 4.x (main environment, and the reference's 4.39). ``PreTrainedTokenizerFast``
    (``TokenizersBackend`` in 5.x) loads tokenizer.json unchanged, with the special tokens and chat template of
    tokenizer_config.json, so both environments (and the released refiners' training setup) tokenize alike.
    Checkpoints without a tokenizer.json fall back to ``AutoTokenizer``.
    """
    import logging

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if Path(path).is_dir() and not (Path(path) / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(path)
    log = logging.getLogger("transformers.tokenization_utils_base")
    level = log.level
    log.setLevel(logging.ERROR)  # "The tokenizer class you load from this checkpoint is 'LlamaTokenizer'": intended
    try:
        return PreTrainedTokenizerFast.from_pretrained(path)
    except (OSError, ValueError, TypeError):
        return AutoTokenizer.from_pretrained(path)
    finally:
        log.setLevel(level)


def eos_token_ids(model_path: str, tokenizer) -> list[int]:
    """End-of-sequence ids: generation_config.json's (int or list), else config.json's, else the tokenizer's."""
    ids: list[int] = []
    p = Path(model_path)
    for name in ("generation_config.json", "config.json"):
        f = p / name
        if f.exists():
            value = json.loads(f.read_text()).get("eos_token_id")
            if value is not None:
                ids = [value] if isinstance(value, int) else list(value)
                break
    if not ids and getattr(tokenizer, "eos_token_id", None) is not None:
        ids = [tokenizer.eos_token_id]
    return ids


def model_context_len(model_path: str, configured: int | None = None) -> int:
    """The context length: the configured ``max_model_len``, else config.json's ``max_position_embeddings``."""
    if configured:
        return int(configured)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_path)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if value:
            return int(value)
    return 2048


_EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def _safetensors_counts(model_dir: Path) -> tuple[int, int] | None:
    """(total, non-embedding) from the safetensors headers alone (milliseconds; no torch, no modeling code)."""
    import struct

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, list[int]] = {}
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").exists() else {}
    if config.get("tie_word_embeddings", True) and any(k.endswith(_EMBEDDING_SUFFIXES) for k in shapes):
        shapes.pop("lm_head.weight", None)  # a tied head saved anyway is the embedding again
    embedding = [k for k in shapes if k.endswith(_EMBEDDING_SUFFIXES)]
    if len(embedding) != 1:
        return None
    numel = {k: int(math.prod(s)) for k, s in shapes.items()}
    total = sum(numel.values())
    return total, total - numel[embedding[0]]


def param_counts(model_path: str) -> tuple[int, int]:
    """(total, non-embedding) parameters of the model.

    Non-embedding = total minus the input embedding matrix (paper §4.2; flops.py): an untied output head stays in N,
    a tied one is counted once in the total and leaves with the embedding. Read from the safetensors headers of a
    local checkpoint, else counted on the meta device from the config (no weights loaded).
    """
    if Path(model_path).is_dir():
        counts = _safetensors_counts(Path(model_path))
        if counts is not None:
            return counts
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    total = sum(p.numel() for p in model.parameters())
    return int(total), int(total - model.get_input_embeddings().weight.numel())


def torch_dtype(name: str):
    """The torch dtype of a resolved refine dtype name (``resolve_refine_dtype``'s result, never ``auto``)."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def checked_dtype(requested: str, engine_dtype: Any) -> str:
    """The dtype the loaded engine reports, by name; a stage whose engine runs another dtype than its key says fails
    here instead of writing programs under the wrong key."""
    name = str(engine_dtype).removeprefix("torch.")
    if name != requested:
        raise RuntimeError(f"refine dtype {requested!r} was asked for, but the engine loaded the model in {name!r}")
    return name


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
