"""Model presets: the paper's parameter counts (Tables 3, 8), counted on the meta device, and override semantics."""

from __future__ import annotations

import pytest

from proxlab.models.params import non_embedding_params, total_params
from proxlab.models.presets import PRESETS, model_config

# paper Table 8 (TLM) and Table 3's setting (Pythia): total (non-embedding) parameters
PAPER_COUNTS = {
    "tlm_xs": (354_284_800, 313_324_800),
    "tlm_s": (758_982_144, 709_830_144),
    "tlm_m": (1_741_785_088, 1_676_249_088),
    "pythia_410m": (405_334_016, 353_822_720),
    "pythia_1b": (1_011_781_632, 908_759_040),
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_parameter_counts(name):
    cfg = model_config(name)
    assert (total_params(cfg), non_embedding_params(cfg)) == PAPER_COUNTS[name]


def test_tlm_architecture_table8():
    for name, (hidden, heads, groups, ffn) in {"tlm_xs": (1280, 16, 1, 2048), "tlm_s": (1536, 24, 2, 4864),
                                                "tlm_m": (2048, 32, 32, 8192)}.items():
        c = model_config(name)
        assert (c.n_layer, c.n_embd, c.n_head, c.n_query_groups, c.intermediate_size) == (24, hidden, heads, groups,
                                                                                         ffn)
        assert (c.norm_class_name, c.norm_eps, c.mlp_class_name, c.rope_base, c.bias) == ("RMSNorm", 1e-5,
                                                                                         "LLaMAMLP", 10000, False)
        assert (c.rotary_percentage, c.parallel_residual, c.padded_vocab_size, c.block_size) == (1.0, False, 32000,
                                                                                                2048)


def test_math_cpt_bases():
    code = model_config("codellama_7b")
    assert (code.rope_base, code.block_size, code.padded_vocab_size) == (10000, 4096, 32016)  # "4k-10k" variant
    assert model_config("llama2_7b").block_size == 4096
    assert model_config("mistral_7b").n_query_groups == 8
    assert model_config("tinyllama_1b").n_layer == 22
    assert model_config("pythia_1b").block_size == 1024


def test_every_preset_builds():
    for name in PRESETS:
        assert total_params(model_config(name)) > 0


def test_overrides():
    tiny = model_config("tiny", vocab_size=2000, n_layer=1, block_size=None)
    assert (tiny.vocab_size, tiny.padded_vocab_size, tiny.n_layer, tiny.block_size) == (2000, 2048, 1, 256)
    narrow = model_config("tiny", n_embd=64, n_head=2)
    assert (narrow.head_size, narrow.n_query_groups) == (32, 2)
    assert model_config("mistral_7b", vocab_size=4096).padded_vocab_size == 4096  # the pin yields to an override
    with pytest.raises(KeyError, match="not a proxlab preset"):
        model_config("gpt5")
    with pytest.raises(KeyError, match="not litgpt.Config fields"):
        model_config("tiny", n_layers=3)
