"""LitGPT checkpoint -> Hugging Face model directory (Llama-style architectures), for HF-side evaluation and parity.

``litgpt convert_from_litgpt`` writes only ``model.pth`` with HF key names (reference ``libraries.md`` §2.8). This
builds the whole HF directory: a ``LlamaConfig`` from ``model_config.yaml``, the weights (litgpt's own
``copy_weights_llama`` mapping), and the tokenizer. The tokenizer gets a BOS post-processor when the LitGPT tokenizer
prepends BOS (litgpt does it in ``Tokenizer.encode``; an HF ``PreTrainedTokenizerFast`` built from a bare
``tokenizer.json`` would not), so both sides see the same token ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from proxlab.evaluate.lms.litgpt import load_lit_state_dict, resolve_checkpoint_dir


def llama_config_from_litgpt(config) -> "transformers.LlamaConfig":  # noqa: F821
    from transformers import LlamaConfig

    problems = []
    if config.mlp_class_name != "LLaMAMLP":
        problems.append(f"mlp_class_name={config.mlp_class_name}")
    if config.norm_class_name != "RMSNorm":
        problems.append(f"norm_class_name={config.norm_class_name}")
    if config.rotary_percentage != 1.0:
        problems.append(f"rotary_percentage={config.rotary_percentage}")
    if config.parallel_residual:
        problems.append("parallel_residual=True")
    if getattr(config, "rope_adjustments", None):
        problems.append("rope_adjustments")
    if getattr(config, "norm_qk", False):
        problems.append("norm_qk=True")
    if problems:
        raise NotImplementedError(f"only Llama-style LitGPT configs convert to HF here; got {', '.join(problems)}")
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
        torch_dtype="float32",
    )


def _hf_tokenizer_files(ckpt: Path, out_dir: Path) -> None:
    from litgpt import Tokenizer
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.processors import TemplateProcessing

    lit_tok = Tokenizer(ckpt)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "tokenizer.model"):
        if (ckpt / name).is_file():
            shutil.copy2(ckpt / name, out_dir / name)
    tok = HFTokenizer.from_file(str(ckpt / "tokenizer.json"))
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    if lit_tok.use_bos and lit_tok.bos_id is not None:
        bos = tok.id_to_token(lit_tok.bos_id)
        tok.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                special_tokens=[(bos, lit_tok.bos_id)])
        cfg["add_bos_token"] = True
    tok.save(str(out_dir / "tokenizer.json"))
    cfg_path.write_text(json.dumps(cfg, indent=2))


@torch.inference_mode()
def litgpt_to_hf(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face ``LlamaForCausalLM`` directory equivalent to a LitGPT checkpoint; returns ``out_dir``."""
    from litgpt import Config
    from litgpt.scripts.convert_lit_checkpoint import copy_weights_llama
    from transformers import LlamaForCausalLM

    ckpt = resolve_checkpoint_dir(checkpoint_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = Config.from_file(ckpt / "model_config.yaml")
    hf_config = llama_config_from_litgpt(config)
    lit_state, _ = load_lit_state_dict(ckpt)
    hf_state: dict[str, torch.Tensor] = {}
    copy_weights_llama(config, hf_state, lit_state)
    hf_state = {k: v.detach().clone().float().contiguous() for k, v in hf_state.items()}
    model = LlamaForCausalLM(hf_config)
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        raise RuntimeError(f"LitGPT -> HF: missing={missing[:8]} unexpected={unexpected[:8]}")
    model.save_pretrained(str(out))
    _hf_tokenizer_files(ckpt, out)
    return out
