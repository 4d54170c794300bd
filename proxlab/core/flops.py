"""The FLOPs accounting of the paper (§4.2, App. E.3; Kaplan et al.), in one place.

    C_train     = 6 · N · D_train
    C_inference = 2 · N · (D_prefill + D_decode)

N is the number of **non-embedding** parameters: all parameters minus one embedding matrix (vocab × n_embd). With
untied embeddings the output head stays in N, as in the paper's Table 8 (TLM-XS: 354,284,800 total, 313,324,800
non-embedding). The formulas take N as a number; `proxlab.models.params` counts it for a LitGPT config, and the
refine stages count it from an HF checkpoint (the vLLM environment has no LitGPT).
"""

from __future__ import annotations


def training_flops(n_non_embedding: int, tokens: int | float) -> float:
    return 6.0 * float(n_non_embedding) * float(tokens)


def inference_flops(n_non_embedding: int, prompt_tokens: int | float, generated_tokens: int | float) -> float:
    return 2.0 * float(n_non_embedding) * (float(prompt_tokens) + float(generated_tokens))
