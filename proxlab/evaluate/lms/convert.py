"""LitGPT checkpoint -> Hugging Face model directory (Llama-style and GPT-NeoX architectures): ``proxlab export``,
HF-side evaluation (vLLM, ``lm_eval --model hf``) and parity checks.

``litgpt convert_from_litgpt`` writes only ``model.pth`` with HF key names (reference ``libraries.md`` §2.8). This
builds the whole HF directory: the weights as ``model.safetensors`` (float32; litgpt's own ``copy_weights_llama`` /
``copy_weights_gpt_neox`` mapping), and -- through ``proxlab.models.hf_export``, the same code that writes them into
every pretrain checkpoint -- ``config.json``, ``generation_config.json`` and the tokenizer: a BOS post-processor when
the LitGPT tokenizer prepends BOS (litgpt does it in ``Tokenizer.encode``; an HF ``PreTrainedTokenizerFast`` built
from a bare ``tokenizer.json`` would not), so both sides see the same token ids, and ``model_input_names`` without
``token_type_ids``, so ``model.generate(**tokenizer(text, return_tensors="pt"))`` works.
"""

from __future__ import annotations

from pathlib import Path

import torch

from proxlab.evaluate.lms.litgpt import load_lit_state_dict, resolve_checkpoint_dir
from proxlab.models.hf_export import architecture, hf_config_from_litgpt, llama_config_from_litgpt, write_hf_config, \
    write_hf_tokenizer

__all__ = ["hf_state_dict", "litgpt_to_hf", "llama_config_from_litgpt", "hf_config_from_litgpt"]


def hf_state_dict(config, lit_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LitGPT weights under HF names (float32, contiguous), with litgpt's own mapping for the architecture."""
    from litgpt.scripts.convert_lit_checkpoint import copy_weights_gpt_neox, copy_weights_llama

    hf_state: dict[str, torch.Tensor] = {}
    if architecture(config) == "llama":
        copy_weights_llama(config, hf_state, lit_state)
    else:
        copy_weights_gpt_neox(config, hf_state, lit_state)
    return {k: v.detach().clone().float().contiguous() for k, v in hf_state.items()}


def _check_keys(hf_config, hf_state: dict[str, torch.Tensor]) -> None:
    """The converted weights are exactly the HF model's persistent parameters and buffers, with their shapes."""
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


@torch.inference_mode()
def litgpt_to_hf(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a Hugging Face model directory (``LlamaForCausalLM`` / ``GPTNeoXForCausalLM``, float32 safetensors,
    tokenizer) equivalent to a LitGPT checkpoint (or a pretrain artifact's ``final/``); returns ``out_dir``."""
    from litgpt import Config
    from safetensors.torch import save_file

    ckpt = resolve_checkpoint_dir(checkpoint_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = Config.from_file(ckpt / "model_config.yaml")
    lit_state, _ = load_lit_state_dict(ckpt)
    hf_state = hf_state_dict(config, lit_state)
    write_hf_tokenizer(ckpt, out)
    if (ckpt / "generation_config.json").is_file():  # its other fields kept; the token ids are rewritten below
        (out / "generation_config.json").write_bytes((ckpt / "generation_config.json").read_bytes())
    content = write_hf_config(config, out, dtype="float32")
    from transformers import AutoConfig

    _check_keys(AutoConfig.from_pretrained(str(out)), hf_state)
    tmp = out / ".model.safetensors.tmp"
    save_file(hf_state, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")
    print(f"[proxlab] export: {ckpt} -> {out} ({content['architectures'][0]}, "
          f"{sum(v.numel() for v in hf_state.values()):,} parameters)", flush=True)
    return out
