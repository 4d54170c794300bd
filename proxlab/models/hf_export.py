"""The Hugging Face side of a LitGPT model directory: `config.json`, `generation_config.json` and tokenizer files.

One implementation for both users:

* ``proxlab.pretrain.checkpoint`` writes them into every ``step-*`` / ``final`` checkpoint (``write_hf_files``), so
  stock tools read the checkpoint as it is: ``litgpt generate`` (LitGPT files), ``litgpt evaluate`` (it copies
  ``config.json`` / ``generation_config.json`` / tokenizer files next to its converted ``pytorch_model.bin`` and loads
  that directory with transformers), ``litgpt convert_from_litgpt`` + ``config.json`` = an HF directory;
* ``litgpt_to_hf`` below (``proxlab export``, HF-side evaluation, ``refiner.select``'s per-epoch conversion and its
  exported refiner) writes the same files next to safetensors weights. It is the one LitGPT -> HF conversion:
  ``proxlab.evaluate.lms.convert`` re-exports it, and the refine package (which may import ``models`` but not
  ``evaluate``) calls it from here. It needs torch, litgpt, transformers and safetensors: the main environment.

What is written:

* ``config.json``: a ``LlamaConfig`` for Llama-style LitGPT configs (TLM, TinyLlama, Llama-2, CodeLlama, Mistral at
  a full-length window), a ``GPTNeoXConfig`` for Pythia; its dtype is the weights' dtype, its bos/eos/pad ids the
  tokenizer's. Another architecture raises ``NotImplementedError``.
* ``generation_config.json``: the tokenizer directory's own (if any) with the tokenizer's bos/eos/pad ids.
* ``tokenizer.json``: unchanged, except that when LitGPT prepends BOS (``add_bos_token``; ``Tokenizer.encode``) and
  the tokenizer's post-processor does not, a BOS template is added, so transformers and LitGPT see the same ids.
* ``tokenizer_config.json``: plus ``tokenizer_class`` (when missing) and ``model_input_names: [input_ids,
  attention_mask]``: a ``PreTrainedTokenizerFast`` otherwise also returns ``token_type_ids``, which
  ``AutoModelForCausalLM.generate(**tokenizer(text))`` rejects. LitGPT ignores both keys.

Weights (``litgpt_to_hf``): ``model.safetensors`` in float32 with litgpt's own ``copy_weights_llama`` /
``copy_weights_gpt_neox`` mapping (``litgpt convert_from_litgpt`` alone writes only ``model.pth`` with HF key names,
``litgpt/scripts/convert_lit_checkpoint.py``), checked against the HF model's own parameter names and shapes.

No torch, litgpt or transformers at import time (``proxlab.models`` rule): they are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]


def _check(problems: list[str], kind: str) -> None:
    if problems:
        raise NotImplementedError(f"this LitGPT config does not convert to an HF {kind} config: {', '.join(problems)}")


def _common_problems(config) -> list[str]:
    problems = []
    if getattr(config, "rope_adjustments", None):
        problems.append("rope_adjustments")
    if getattr(config, "norm_qk", False):
        problems.append("norm_qk=True")
    window = getattr(config, "sliding_window_size", None)
    if window is not None and window < config.block_size:
        problems.append(f"sliding_window_size={window} < block_size={config.block_size}")
    return problems


def architecture(config) -> str:
    """``"llama"`` or ``"gpt_neox"``: the HF architecture a LitGPT config converts to (NotImplementedError if none)."""
    if config.mlp_class_name == "LLaMAMLP":
        return "llama"
    if config.mlp_class_name == "GptNeoxMLP":
        return "gpt_neox"
    raise NotImplementedError(f"mlp_class_name={config.mlp_class_name}: only Llama-style (LLaMAMLP) and GPT-NeoX "
                              "(GptNeoxMLP) LitGPT configs convert to HF here")


def llama_config_from_litgpt(config, dtype: str = "float32", **token_ids: int):
    """A ``transformers.LlamaConfig`` equal to a Llama-style ``litgpt.Config``."""
    from transformers import LlamaConfig

    problems = _common_problems(config)
    if config.mlp_class_name != "LLaMAMLP":
        problems.append(f"mlp_class_name={config.mlp_class_name}")
    if config.norm_class_name != "RMSNorm":
        problems.append(f"norm_class_name={config.norm_class_name}")
    if config.rotary_percentage != 1.0:
        problems.append(f"rotary_percentage={config.rotary_percentage}")
    if config.parallel_residual:
        problems.append("parallel_residual=True")
    _check(problems, "Llama")
    return LlamaConfig(
        vocab_size=config.padded_vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.n_query_groups,
        head_dim=config.head_size,
        max_position_embeddings=config.block_size,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_base,
        attention_bias=bool(config.bias or getattr(config, "attn_bias", False)),
        mlp_bias=bool(config.bias),
        tie_word_embeddings=False,
        hidden_act="silu",
        torch_dtype=dtype,
        **token_ids,
    )


def gpt_neox_config_from_litgpt(config, dtype: str = "float32", **token_ids: int):
    """A ``transformers.GPTNeoXConfig`` equal to a GPT-NeoX (Pythia) ``litgpt.Config``."""
    from transformers import GPTNeoXConfig

    problems = _common_problems(config)
    if config.norm_class_name != "LayerNorm":
        problems.append(f"norm_class_name={config.norm_class_name}")
    if config.n_query_groups != config.n_head:
        problems.append(f"n_query_groups={config.n_query_groups} != n_head={config.n_head}")
    if config.head_size * config.n_head != config.n_embd:
        problems.append(f"head_size*n_head={config.head_size * config.n_head} != n_embd={config.n_embd}")
    if not config.bias:
        problems.append("bias=False")
    if getattr(config, "shared_attention_norm", False):
        problems.append("shared_attention_norm=True")
    if getattr(config, "gelu_approximate", "none") not in ("none", None):
        problems.append(f"gelu_approximate={config.gelu_approximate}")
    _check(problems, "GPT-NeoX")
    return GPTNeoXConfig(
        vocab_size=config.padded_vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        rotary_pct=config.rotary_percentage,
        rotary_emb_base=config.rope_base,
        max_position_embeddings=config.block_size,
        layer_norm_eps=config.norm_eps,
        use_parallel_residual=bool(config.parallel_residual),
        attention_bias=True,
        hidden_act="gelu",
        tie_word_embeddings=False,
        torch_dtype=dtype,
        **token_ids,
    )


def hf_config_from_litgpt(config, dtype: str = "float32", **token_ids: int):
    """The HF config (Llama or GPT-NeoX) of a ``litgpt.Config``; ``token_ids``: bos/eos/pad_token_id."""
    build = {"llama": llama_config_from_litgpt, "gpt_neox": gpt_neox_config_from_litgpt}[architecture(config)]
    return build(config, dtype=dtype, **token_ids)


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` / ``"bfloat16"`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def _token(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def token_ids(model_dir: str | Path) -> dict[str, int]:
    """bos/eos(/pad)_token_id of the tokenizer in ``model_dir``, as LitGPT resolves them (``litgpt.Tokenizer``)."""
    from litgpt import Tokenizer

    model_dir = Path(model_dir)
    tok = Tokenizer(model_dir)
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}
    cfg_path = model_dir / "tokenizer_config.json"
    pad = _token(json.loads(cfg_path.read_text()).get("pad_token")) if cfg_path.is_file() else None
    if pad is not None and tok.backend == "huggingface" and tok.processor.token_to_id(pad) is not None:
        ids["pad_token_id"] = tok.processor.token_to_id(pad)
    return {k: int(v) for k, v in ids.items() if v is not None}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_hf_tokenizer(src: str | Path, out: str | Path) -> None:
    """Copy the tokenizer files of ``src`` into ``out`` with the HF fixes above (BOS template, model_input_names)."""
    from litgpt import Tokenizer

    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (src / "tokenizer.json").is_file() and not (src / "tokenizer.model").is_file():
        raise FileNotFoundError(f"{src}: no tokenizer.json or tokenizer.model")
    for name in TOKENIZER_FILES:
        if (src / name).is_file() and (src / name).resolve() != (out / name).resolve():
            shutil.copyfile(src / name, out / name)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    cfg["model_input_names"] = list(MODEL_INPUT_NAMES)
    lit = Tokenizer(src)
    if (out / "tokenizer.json").is_file() and lit.use_bos and lit.bos_id is not None:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import processors

        tok = HFTokenizer.from_file(str(out / "tokenizer.json"))
        if tok.encode("a").ids[:1] != [lit.bos_id]:  # LitGPT prepends BOS, the HF tokenizer does not: teach it
            bos = tok.id_to_token(lit.bos_id)
            template = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                     special_tokens=[(bos, lit.bos_id)])
            tok.post_processor = template if tok.post_processor is None else processors.Sequence(
                [tok.post_processor, template])
            _write_text(out / "tokenizer.json", tok.to_str(pretty=True))
        cfg["add_bos_token"] = True
    _write_text(cfg_path, json.dumps(cfg, indent=2))


def write_hf_config(config, out: str | Path, dtype: Any = "float32") -> dict[str, Any]:
    """``config.json`` and ``generation_config.json`` for ``config`` (a ``litgpt.Config``) in ``out``, whose tokenizer
    files must already be there (the ids come from them); returns config.json's content."""
    out = Path(out)
    ids = token_ids(out)
    # an id the tokenizer lacks is null, not the HF class's default (Llama: 1/2, GPT-NeoX: 0/2)
    hf = hf_config_from_litgpt(config, dtype=dtype_name(dtype),
                               **{k: ids.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
    hf.architectures = [{"llama": "LlamaForCausalLM", "gpt_neox": "GPTNeoXForCausalLM"}[hf.model_type]]
    content = hf.to_diff_dict()  # what save_pretrained writes: the values that differ from the defaults
    _write_text(out / CONFIG, json.dumps(content, indent=2, sort_keys=True) + "\n")
    gen_path = out / GENERATION_CONFIG
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    gen.update(ids)
    gen.setdefault("transformers_version", content.get("transformers_version"))
    _write_text(gen_path, json.dumps(gen, indent=2, sort_keys=True) + "\n")
    return content


def write_hf_files(config, tokenizer_dir: str | Path, out: str | Path, dtype: Any = "float32") -> None:
    """Tokenizer files from ``tokenizer_dir`` plus ``config.json`` / ``generation_config.json`` into ``out``.

    The tokenizer files are always written; ``NotImplementedError`` (after them) for an architecture HF configs are
    not written for."""
    tokenizer_dir, out = Path(tokenizer_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src_gen = tokenizer_dir / GENERATION_CONFIG
    if src_gen.is_file() and src_gen.resolve() != (out / GENERATION_CONFIG).resolve():
        shutil.copyfile(src_gen, out / GENERATION_CONFIG)
    write_hf_tokenizer(tokenizer_dir, out)
    write_hf_config(config, out, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Weights: a LitGPT checkpoint -> an HF model directory


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A LitGPT checkpoint dir, or a pretrain artifact dir containing ``final/`` (which is then used)."""
    p = Path(path)
    if (p / "lit_model.pth").is_file():
        return p
    if (p / "final" / "lit_model.pth").is_file():
        return p / "final"
    raise FileNotFoundError(f"{p}: neither a LitGPT checkpoint (lit_model.pth) nor a pretrain output with final/")


def load_lit_state_dict(checkpoint_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model weights of ``lit_model.pth`` and the other top-level entries (iter_num, step_count, ...);
    ``_orig_mod.``/``module.`` prefixes from ``torch.compile``/DDP are stripped."""
    import torch

    obj = torch.load(Path(checkpoint_dir) / "lit_model.pth", map_location="cpu", weights_only=False, mmap=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        state, meta = obj["model"], {k: v for k, v in obj.items() if k != "model" and not isinstance(v, dict)}
    else:
        state, meta = obj, {}
    cleaned = {}
    for k, v in state.items():
        for prefix in ("_orig_mod.", "module."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        cleaned[k.replace("._orig_mod.", ".")] = v
    return cleaned, meta


def hf_state_dict(config, lit_state: dict[str, Any]) -> dict[str, Any]:
    """LitGPT weights under HF names (float32, contiguous), with litgpt's own mapping for the architecture."""
    from litgpt.scripts.convert_lit_checkpoint import copy_weights_gpt_neox, copy_weights_llama

    hf_state: dict[str, Any] = {}
    if architecture(config) == "llama":
        copy_weights_llama(config, hf_state, lit_state)
    else:
        copy_weights_gpt_neox(config, hf_state, lit_state)
    return {k: v.detach().clone().float().contiguous() for k, v in hf_state.items()}


def _check_keys(hf_config, hf_state: dict[str, Any]) -> None:
    """The converted weights are exactly the HF model's persistent parameters and buffers, with their shapes."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if "rotary_emb" not in k}
    got = {k: tuple(v.shape) for k, v in hf_state.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    shapes = [k for k in set(expected) & set(got) if expected[k] != got[k]]
    if missing or unexpected or shapes:
        raise RuntimeError(f"LitGPT -> HF: missing={missing[:8]} unexpected={unexpected[:8]} "
                           f"shape mismatch={shapes[:8]}")


def litgpt_to_hf(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face model directory (``LlamaForCausalLM`` / ``GPTNeoXForCausalLM``, float32 safetensors,
    tokenizer) equivalent to a LitGPT checkpoint (or a pretrain artifact's ``final/``); returns ``out_dir``."""
    import torch
    from litgpt import Config
    from safetensors.torch import save_file
    from transformers import AutoConfig

    ckpt = resolve_checkpoint_dir(checkpoint_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = Config.from_file(ckpt / "model_config.yaml")
    with torch.inference_mode():
        lit_state, _ = load_lit_state_dict(ckpt)
        hf_state = hf_state_dict(config, lit_state)
    write_hf_tokenizer(ckpt, out)
    if (ckpt / GENERATION_CONFIG).is_file():  # its other fields kept; the token ids are rewritten below
        (out / GENERATION_CONFIG).write_bytes((ckpt / GENERATION_CONFIG).read_bytes())
    content = write_hf_config(config, out, dtype="float32")
    _check_keys(AutoConfig.from_pretrained(str(out)), hf_state)
    tmp = out / ".model.safetensors.tmp"
    save_file(hf_state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")
    print(f"[proxlab] export: {ckpt} -> {out} ({content['architectures'][0]}, "
          f"{sum(v.numel() for v in hf_state.values()):,} parameters)", flush=True)
    return out
