"""The stage graph: content keys let experiments share upstream work, and only that."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from proxlab.experiments.graph import plan
from proxlab.experiments.paths import REPO_ROOT
from proxlab.experiments.run import CONF_DIR  # noqa: F401  (registers the schemas)


def stages(*overrides):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["exp=smoke", *overrides])
    return {s.name: s for s in plan(cfg, Path("/tmp/artifacts"))}


def test_variants_share_prepare_and_tokenizer_but_not_tokenize():
    raw, rules = stages("refine=raw"), stages("refine=rules")
    assert "refine.rules" not in raw and "refine.rules" in rules
    assert raw["prepare"].key == rules["prepare"].key
    assert raw["tokenizer"].key == rules["tokenizer"].key  # one vocabulary for the whole sweep
    assert raw["tokenize"].key != rules["tokenize"].key
    assert rules["tokenize"].inputs["docs"] is rules["refine.rules"]


def test_two_model_sizes_share_the_tokenized_variant():
    small, big = stages("refine=rules"), stages("refine=rules", "model.n_layer=6")
    assert small["tokenize"].key == big["tokenize"].key
    assert small["pretrain"].key != big["pretrain"].key
    assert small["evaluate"].key != big["evaluate"].key


def test_keys_ignore_logging_and_paths_but_not_what_changes_outputs():
    base = stages()
    assert stages("train.log_interval=1")["pretrain"].key == base["pretrain"].key
    assert stages("paths.artifacts_dir=/elsewhere")["pretrain"].key == base["pretrain"].key
    assert stages("logger=none")["evaluate"].key == base["evaluate"].key
    assert stages("corpus.num_docs=10")["prepare"].key != base["prepare"].key
    assert stages("train.lr=1e-3")["pretrain"].key != base["pretrain"].key
    assert stages("eval.limit=5")["evaluate"].key != base["evaluate"].key


def test_stop_after_truncates_the_graph():
    names = list(stages("refine=rules", "stop_after=tokenize"))
    assert names == ["prepare", "refine.rules", "tokenizer", "tokenize"]
