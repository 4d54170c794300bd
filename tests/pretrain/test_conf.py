"""The model and recipe YAMLs: each composes against the schema and carries the paper's numbers (Tables 3, 8-9)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "conf"

# recipe -> (seq_len, global batch, max_steps, early_stop_step, lr, min_lr, warmup, schedule)
RECIPES = {
    "tlm_12k5": (2048, 1024, 12500, None, 5e-4, 5e-5, 500, "cosine"),
    "tlm_s_12k5_paper": (2048, 1024, 12500, None, 5e-4, 5e-6, 500, "cosine"),  # paper Table 9's TLM-S min LR
    "tlm_m_12k5": (2048, 1024, 12500, None, 3e-4, 3e-5, 500, "cosine"),
    "tlm_m_25k": (2048, 1024, 25000, None, 3e-4, 3e-5, 500, "cosine"),
    "pythia_wsd": (1024, 512, 50200, None, 1e-3, 6.25e-5, 2000, "wsd"),
    "math_cpt_tinyllama": (2048, 1024, 7500, None, 8e-5, 8e-6, 0, "cosine"),
    "math_cpt_llama2": (4096, 256, 15000, 10000, 8e-5, 8e-6, 0, "cosine"),
    "math_cpt_codellama": (4096, 1024, 3750, 2500, 3e-4, 3e-5, 0, "cosine"),
    "math_cpt_mistral": (4096, 256, 15000, 10000, 2e-5, 2e-6, 0, "cosine"),
}
# per-size names of a shared recipe, so a sweep can pick `train: ${model}_12k5` (conf/exp/fig5.yaml)
ALIASES = {"tlm_xs_12k5": "tlm_12k5", "tlm_s_12k5": "tlm_12k5"}
MODELS = {"tlm_xs": 354_284_800, "tlm_s": 758_982_144, "tlm_m": 1_741_785_088, "pythia_410m": 405_334_016,
          "pythia_1b": 1_011_781_632, "tinyllama_1b": None, "llama2_7b": None, "codellama_7b": None,
          "mistral_7b": None, "tiny": None}


@pytest.fixture(scope="module")
def compose():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from proxlab.runner.compose import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: hydra_compose("config", overrides=list(overrides))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe(compose, name):
    t = compose(f"train={name}").train
    assert t.recipe == name
    assert (t.seq_len, t.global_batch_size, t.max_steps, t.early_stop_step, t.lr, t.min_lr, t.warmup_steps,
            t.schedule) == RECIPES[name]
    assert (t.weight_decay, t.beta1, t.beta2, t.grad_clip) == (0.1, 0.9, 0.95, 1.0)
    if name == "pythia_wsd":
        assert t.wsd_stable_steps == 50000
    for world in (8, 64):  # one 8-GPU node and the paper's 64 GPUs
        assert t.global_batch_size % (t.micro_batch_size * world) == 0


def test_every_yaml_is_listed():
    assert {p.stem for p in (CONF / "train").glob("*.yaml")} == set(RECIPES) | set(ALIASES) | {"cpu_tiny"}
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} == set(MODELS)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_recipe_alias(compose, alias):
    assert compose(f"train={alias}").train == compose(f"train={ALIASES[alias]}").train


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_yaml(compose, name):
    from omegaconf import OmegaConf

    from proxlab.models.params import total_params
    from proxlab.runner.planning import planned_model

    cfg = compose(f"model={name}")
    assert cfg.model.preset == name
    if name != "tiny":
        assert cfg.model.tokenizer.kind == "pretrained" and cfg.model.tokenizer.path
    if MODELS[name]:  # the model `proxlab plan` counts is the one the pretrain stage builds (resolved_model_config)
        assert total_params(planned_model(OmegaConf.to_object(cfg))) == MODELS[name]
