"""The paper's FLOPs formulas (§4.2, App. E.3) against hand-computed values."""

import pytest

from proxlab.core.flops import inference_flops, training_flops
from proxlab.models.params import non_embedding_params, total_params


def tiny_config():
    from litgpt import Config

    return Config(name="t", block_size=64, vocab_size=100, padded_vocab_size=100, n_layer=2, n_head=4,
                  n_query_groups=2, n_embd=32, head_size=8, rotary_percentage=1.0, parallel_residual=False,
                  bias=False, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", intermediate_size=48)


def test_non_embedding_params_by_hand():
    cfg = tiny_config()
    d, v, L, ffn = 32, 100, 2, 48
    q, kv = 4 * 8, 2 * 2 * 8  # 4 query heads, 2 KV groups × (k, v), head size 8
    per_layer = d * (q + kv) + q * d + 3 * d * ffn + 2 * d  # qkv, out proj, SwiGLU (3 mats), 2 RMSNorm weights
    total = v * d + L * per_layer + d + d * v  # embedding, layers, final norm, untied head
    assert total_params(cfg) == total
    assert non_embedding_params(cfg) == total - v * d


def test_training_flops_is_6ND():
    cfg = tiny_config()
    n = non_embedding_params(cfg)
    assert training_flops(n, 1_000_000) == pytest.approx(6 * n * 1_000_000)
    assert training_flops(313_324_800, 26.2e9) == pytest.approx(6 * 313_324_800 * 26.2e9)


def test_inference_flops_is_2N_prompt_plus_generated():
    cfg = tiny_config()
    n = non_embedding_params(cfg)
    assert inference_flops(n, 1500, 256) == pytest.approx(2 * n * 1756)
    # paper §4.2 check: refining 62.5B raw + ~19B doc-kept tokens with the 0.3B refiner ≈ 5.1e19 FLOPs
    assert inference_flops(313_324_800, 62.5e9, 19e9) == pytest.approx(5.107e19, rel=1e-3)
