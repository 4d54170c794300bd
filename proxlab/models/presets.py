"""Model presets: a name -> a LitGPT `Config`, with the paper's architectures spelled out field by field.

`model_config(name, **overrides)` builds the `litgpt.Config`; `None` overrides are ignored, so a `ModelConfig` dict
(preset + optional fields) can be passed straight through. Sources (docs/pretrain.md has the table):

- TLM-XS/S/M: paper Table 8 and reference code `train/lit_gpt/config.py` (`tiny_LLaMA_0_3b`, `_0_7b`, `_1_7b`).
  Total (non-embedding) parameters: 354,284,800 (313,324,800); 758,982,144 (709,830,144);
  1,741,785,088 (1,676,249,088) -- checked by tests/pretrain/test_presets.py.
- Pythia-410M / 1B: paper Table 3 (the MATES setup), context 1024, vocab 50,304. 405,334,016 (353,822,720);
  1,011,781,632 (908,759,040).
- The math continual-pretraining bases (paper §3.4, Table 9): TinyLlama-1.1B, Llama-2-7B, CodeLlama-7B at RoPE base
  10,000 and block 4096 (reference code `CodeLlama-7b-hf-4k-10k`), Mistral-7B. Their architecture is litgpt's own
  config of the same model, so converted HF weights load into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A Llama-style block: pre-norm RMSNorm, SwiGLU (LLaMAMLP), full RoPE, no biases, untied embeddings.
_LLAMA = dict(
    rotary_percentage=1.0,
    parallel_residual=False,
    bias=False,
    norm_class_name="RMSNorm",
    norm_eps=1e-5,
    mlp_class_name="LLaMAMLP",
    rope_base=10000,
)


def _tlm(name: str, n_embd: int, n_head: int, n_query_groups: int, intermediate_size: int) -> dict[str, Any]:
    """The paper's TLM family (Table 8): 24 layers, seq 2048, Llama-2 vocabulary (32,000)."""
    return dict(_LLAMA, name=name, block_size=2048, vocab_size=32000, padding_multiple=64, n_layer=24,
                n_embd=n_embd, n_head=n_head, n_query_groups=n_query_groups, intermediate_size=intermediate_size)


# name -> (litgpt config name to start from or None, field values). Field values win over the litgpt config.
PRESETS: dict[str, tuple[str | None, dict[str, Any]]] = {
    # Fast on a 2-core CPU: ~2.9M parameters at vocab 4096. vocab_size is normally taken from the tokenizer.
    "tiny": (None, dict(_LLAMA, name="proxlab-tiny", block_size=256, vocab_size=4096, padding_multiple=64,
                        n_layer=4, n_embd=128, n_head=4, n_query_groups=4, intermediate_size=512)),
    "tlm_xs": (None, _tlm("tiny_LLaMA_0_3b", n_embd=1280, n_head=16, n_query_groups=1, intermediate_size=2048)),
    "tlm_s": (None, _tlm("tiny_LLaMA_0_7b", n_embd=1536, n_head=24, n_query_groups=2, intermediate_size=4864)),
    "tlm_m": (None, _tlm("tiny_LLaMA_1_7b", n_embd=2048, n_head=32, n_query_groups=32, intermediate_size=8192)),
    # Pythia (GPT-NeoX: parallel residual, LayerNorm, biases, 25% rotary) at the paper's context of 1024.
    "pythia_410m": ("pythia-410m", dict(block_size=1024)),
    "pythia_1b": ("pythia-1b", dict(block_size=1024)),
    # Math CPT bases (paper Table 9).
    "tinyllama_1b": ("tiny-llama-1.1b", dict(block_size=2048)),
    "llama2_7b": ("Llama-2-7b-hf", dict(block_size=4096)),
    "codellama_7b": ("CodeLlama-7b-hf", dict(name="CodeLlama-7b-hf-4k-10k", block_size=4096, rope_base=10000)),
    "mistral_7b": ("Mistral-7B-v0.1", dict(block_size=4096)),
}


def preset_fields(name: str) -> dict[str, Any]:
    """The full field dict of a preset (litgpt base config merged with proxlab's values)."""
    if name not in PRESETS:
        raise KeyError(f"model.preset={name!r} is not a proxlab preset; choose one of {sorted(PRESETS)}")
    base, fields = PRESETS[name]
    out: dict[str, Any] = {}
    if base is not None:
        from litgpt.config import name_to_config

        out.update(name_to_config[base])
    out.update(fields)
    return out


def model_config(name: str, **overrides: Any):
    """A `litgpt.Config` for preset `name`; overrides that are None keep the preset's value.

    Overriding `vocab_size` with another size recomputes the padded vocabulary from the preset's `padding_multiple` (a
    preset that pins `padded_vocab_size`, like Mistral, keeps its pin while the vocabulary is its own).
    """
    from litgpt import Config

    fields = preset_fields(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - set(Config.__dataclass_fields__))
    if unknown:
        raise KeyError(f"model overrides {unknown} are not litgpt.Config fields (preset {name!r})")
    # A tokenizer of the preset's own size keeps a pinned padding (Mistral's 32,000 rows, which its converted
    # weights have); only another vocabulary recomputes it.
    if "vocab_size" in overrides and "padded_vocab_size" not in overrides \
            and overrides["vocab_size"] != Config(**fields).vocab_size:
        fields.pop("padded_vocab_size", None)
    if "n_embd" in overrides or "n_head" in overrides:
        fields.pop("head_size", None)  # recomputed as n_embd // n_head unless given
    if "n_head" in overrides and "n_query_groups" not in overrides and fields.get("n_query_groups") == fields.get(
            "n_head"):
        fields["n_query_groups"] = overrides["n_head"]  # keep MHA presets MHA
    fields.update(overrides)
    return Config(**fields)


# ModelConfig settings that are not litgpt.Config fields.
NOT_LITGPT_FIELDS = ("preset", "init_checkpoint", "tokenizer")


def resolved_model_config(model: Any, vocab_size: int | None = None):
    """THE `litgpt.Config` of a `ModelConfig`: its preset, its non-None field overrides, and `vocab_size` (the
    tokenizer's) unless the config pins one. `proxlab plan` and the pretrain stage both build the model here, so they
    agree on every parameter count."""
    from dataclasses import fields as dc_fields

    overrides = {f.name: getattr(model, f.name) for f in dc_fields(model)
                 if f.name not in NOT_LITGPT_FIELDS and getattr(model, f.name) is not None}
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    return model_config(model.preset, **overrides)


def planned_vocab_size(model: Any) -> int | None:
    """The vocabulary the tokenizer stage will produce, known from the config alone for a trained BPE (its
    `vocab_size`); None for a pretrained tokenizer, whose size the preset already states."""
    return model.tokenizer.vocab_size if model.tokenizer.kind == "train_bpe" else None


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers: the pretrained ones the configs name, and the paper's tokenizer of a preset


HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class KnownTokenizer:
    """A pretrained tokenizer proxlab's configs name (`model.tokenizer.path`, a directory under
    `<data_dir>/tokenizers/`): what the report calls it and the hub repository its files come from."""

    title: str
    hub_id: str
    files: tuple[str, ...] = HF_TOKENIZER_FILES


TOKENIZERS: dict[str, KnownTokenizer] = {
    "gpt-neox-20b": KnownTokenizer("GPT-NeoX", "EleutherAI/gpt-neox-20b"),  # 50,277 tokens (Pythia's)
    "llama_hf": KnownTokenizer("Llama-2", "meta-llama/Llama-2-7b-hf", (*HF_TOKENIZER_FILES, "tokenizer.model")),
    "mistral_hf": KnownTokenizer("Mistral", "mistralai/Mistral-7B-v0.1", (*HF_TOKENIZER_FILES, "tokenizer.model")),
}

# The tokenizer the paper trained a preset with, where proxlab can run it on another: paper Table 3's Pythia models
# used GPT-NeoX's (50,277 tokens in 50,304 padded rows). Any other `model.tokenizer` on these presets is a stand-in:
# `proxlab plan` says so and the report marks the run's rows.
PAPER_TOKENIZERS: dict[str, str] = {"pythia_410m": "gpt-neox-20b", "pythia_1b": "gpt-neox-20b"}


def tokenizer_name(path: str | None) -> str | None:
    """A `model.tokenizer.path`'s name in `TOKENIZERS` terms: its last component (`llama_hf`, `/data/tok/llama_hf`
    and the hub id `EleutherAI/gpt-neox-20b` name `llama_hf`, `llama_hf`, `gpt-neox-20b`)."""
    return path.rstrip("/").rsplit("/", 1)[-1] if path else None


def fetch_hint(path: str, target: str) -> str:
    """How to get the tokenizer `path` names into the directory `target` (where the tokenizer stage looks first)."""
    known = TOKENIZERS.get(tokenizer_name(path) or "")
    hub_id = known.hub_id if known else (path if path.count("/") == 1 and not path.startswith((".", "~")) else None)
    if hub_id is None:
        return f"put a tokenizer directory (tokenizer.json, tokenizer_config.json with bos/eos tokens) at {target}"
    files = " ".join(known.files if known else HF_TOKENIZER_FILES)
    return (f"get it with `hf download {hub_id} {files} --local-dir {target}` (older huggingface_hub: "
            f"`huggingface-cli download`, same arguments; offline, download it elsewhere and copy the directory)")


def tokenizer_standin(preset: str, kind: str, path: str | None) -> str | None:
    """The report's mark for a model run on another tokenizer than the paper's for its preset (PAPER_TOKENIZERS),
    e.g. "tokenizer: Llama-2 (llama_hf) stand-in, not the paper's GPT-NeoX"; None when it is the paper's, or the
    paper's is not recorded for the preset. A copy of the paper's tokenizer counts as it by its directory name."""
    paper = PAPER_TOKENIZERS.get(preset)
    name = tokenizer_name(path) if kind == "pretrained" else None
    if paper is None or name == paper:
        return None
    if kind != "pretrained":
        ours = "a BPE trained on the corpus" if kind == "train_bpe" else f"a {kind} tokenizer"
    elif name in TOKENIZERS:
        ours = f"{TOKENIZERS[name].title} ({path})"
    else:
        ours = str(path)
    return f"tokenizer: {ours} stand-in, not the paper's {TOKENIZERS[paper].title}"
