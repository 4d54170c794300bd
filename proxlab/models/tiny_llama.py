"""``proxlab:tiny-llama``: a random-weight Llama for tests and CPU smoke runs, built locally and cached.

A 2-layer Llama with one head of dim 64 (which vLLM-CPU needs; 0.39M non-embedding parameters) and a 4,096-token
byte-level BPE trained on the shared web documents (a 32k vocabulary would make the output head 90% of the compute),
fp32. Its weights are a pure function of the seed and the shapes (drawn with torch's CPU generator, parameter by
parameter), so every environment builds the same model; it is built once into ``<cache>/models/tiny-llama-v1`` and
both environments load that directory. It writes nonsense, but it exercises every path (prompts, chunking, batching,
vLLM, resume, accounting) in seconds on a CPU.

The cache is ``proxlab.core.paths.models_cache_dir()``. Standard library only at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from proxlab.core.paths import data_dir as shared_data_dir
from proxlab.models.cache import build_once
from proxlab.models import TINY_LLAMA

TINY_VERSION = "v1"
TINY_DIR = f"{TINY_LLAMA}-{TINY_VERSION}"

# The tiny Llama: vLLM's CPU attention needs head_dim 64 (16 is rejected); one head of 64 gives hidden 64.
TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 4096,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "initializer_range": 0.02,
    "torch_dtype": "float32",
}
# Init scales: a unit-variance embedding stream with small residual updates, and a wide output head so that the
# greedy choice is far from ties (random logits of std ~2.4): fp32 backends then agree token for token.
_EMBED_STD, _LINEAR_STD, _HEAD_STD = 1.0, 0.05, 0.3


def tiny_llama_state(seed: int = 0, config: dict | None = None) -> dict:
    """The tiny model's weights (HF LlamaForCausalLM names), drawn deterministically from `seed`."""
    import torch

    c = config or TINY_CONFIG
    d, f, v, hd = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    shapes: list[tuple[str, tuple[int, ...], float]] = [("model.embed_tokens.weight", (v, d), _EMBED_STD)]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [
            (p + "self_attn.q_proj.weight", (nh * hd, d), _LINEAR_STD),
            (p + "self_attn.k_proj.weight", (nkv * hd, d), _LINEAR_STD),
            (p + "self_attn.v_proj.weight", (nkv * hd, d), _LINEAR_STD),
            (p + "self_attn.o_proj.weight", (d, nh * hd), _LINEAR_STD),
            (p + "mlp.gate_proj.weight", (f, d), _LINEAR_STD),
            (p + "mlp.up_proj.weight", (f, d), _LINEAR_STD),
            (p + "mlp.down_proj.weight", (d, f), _LINEAR_STD),
            (p + "input_layernorm.weight", (d,), 0.0),
            (p + "post_attention_layernorm.weight", (d,), 0.0),
        ]
    shapes += [("model.norm.weight", (d,), 0.0), ("lm_head.weight", (v, d), _HEAD_STD)]
    gen = torch.Generator(device="cpu")
    state = {}
    for k, (name, shape, std) in enumerate(shapes):
        if std == 0.0:
            state[name] = torch.ones(shape, dtype=torch.float32)
            continue
        gen.manual_seed(seed * 1_000_003 + k)
        state[name] = (torch.randn(shape, generator=gen, dtype=torch.float32) * std).contiguous()
    return state


def _tokenizer_texts(data_dir: str | os.PathLike | None, max_chars: int = 4_000_000) -> list[str]:
    """Training text for the tiny BPE: the shared web documents (sorted files; not the DCLM evaluation set)."""
    web = shared_data_dir(str(data_dir) if data_dir else None) / "web"
    files = sorted(p for p in web.glob("*.jsonl") if "dclm" not in p.name)
    texts, total = [], 0
    for path in files:
        with open(path) as f:
            for line in f:
                text = json.loads(line).get("text") or ""
                texts.append(text)
                total += len(text)
                if total >= max_chars:
                    return texts
    if not texts:
        raise FileNotFoundError(f"no web documents under {web} to train the tiny model's tokenizer: set "
                                f"paths.data_dir / $PROXLAB_DATA_DIR to the shared data folder")
    return texts


def build_tiny_tokenizer(out_dir: Path, texts: list[str], vocab_size: int = 4096):
    """A byte-level BPE with Llama-style specials (<unk> 0, <s> 1, </s> 2) that adds <s> like the Llama tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_llama(out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, seed: int = 0,
                     texts: list[str] | None = None) -> Path:
    """Write the tiny random Llama (config, safetensors, generation config, its BPE tokenizer) into `out_dir`."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_tiny_tokenizer(out, texts if texts is not None else _tokenizer_texts(data_dir), TINY_CONFIG["vocab_size"])
    (out / "config.json").write_text(json.dumps(TINY_CONFIG, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}, indent=2))
    save_file(tiny_llama_state(seed), str(out / "model.safetensors"), metadata={"format": "pt"})
    for f in out.iterdir():
        os.chmod(f, 0o644)
    return out


def ensure_tiny_llama(data_dir: str | os.PathLike | None = None) -> Path:
    """The cached tiny Llama directory, built on first use (file-locked: concurrent ranks build it once)."""
    return build_once(TINY_DIR, lambda scratch: build_tiny_llama(scratch / "m", data_dir), TINY_VERSION + "\n")
