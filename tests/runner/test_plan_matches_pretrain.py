"""`proxlab plan` and the pretrain stage derive steps, tokens, gradient accumulation and parameter counts the same way,
for every model preset × train recipe in conf/: both call `core.config.training_plan` and
`models.presets.resolved_model_config`. The pretrain side here goes through the stage's own code: the spec the graph
writes, `pretrain.train.stage_configs`, and `pretrain.model.build_config` on the tokenizer the tokenizer stage makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxlab.core.config import training_plan
from proxlab.core.paths import REPO_ROOT, data_dir
from proxlab.core.stage import StageSpec
from proxlab.models.params import param_counts
from proxlab.runner.compose import compose_config
from proxlab.runner.graph import plan
from proxlab.runner.planning import planned_model, planned_training
from proxlab.runner.validate import typed

MODELS = sorted(p.stem for p in (REPO_ROOT / "conf" / "model").glob("*.yaml"))
RECIPES = sorted(p.stem for p in (REPO_ROOT / "conf" / "train").glob("*.yaml"))
CLUSTERS = [(1, 1), (8, 1), (8, 4)]  # devices per node × nodes


def exact_size_bpe(directory: Path, vocab_size: int) -> Path:
    """A tokenizer of exactly `vocab_size` tokens, as the tokenizer stage writes a BPE trained to that size."""
    from tokenizers import Tokenizer, models

    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "t1"}))
    return directory


def stage_tokenizer(cfg, tmp: Path) -> Path:
    """The tokenizer stage's output for this config: a pretrained tokenizer copied from the data dir, or a BPE."""
    if cfg.model.tokenizer.kind == "train_bpe":
        return exact_size_bpe(tmp / f"bpe{cfg.model.tokenizer.vocab_size}", cfg.model.tokenizer.vocab_size)
    from proxlab.pretrain.tokenizer import main as tokenizer_main

    if cfg.model.tokenizer.path == "gpt-neox-20b" and not (data_dir() / "tokenizers" / "gpt-neox-20b").is_dir():
        return exact_size_bpe(tmp / "neox-size", 50_277)  # not stored here: a tokenizer of GPT-NeoX's size
    out = tmp / f"pretrained-{cfg.model.tokenizer.path}"
    if not (out / "tokenizer.json").exists():
        tokenizer_main(StageSpec(stage="tokenizer", key="t", out_dir=str(out),
                                 config={"kind": "pretrained", "path": cfg.model.tokenizer.path},
                                 runtime={"data_dir": str(data_dir())}))
    return out


@pytest.mark.parametrize("model", MODELS)
def test_plan_and_pretrain_agree_for_every_preset_and_recipe(model, tmp_path_factory):
    from proxlab.pretrain.distributed import world_size
    from proxlab.pretrain.model import build_config
    from proxlab.pretrain.train import stage_configs

    tmp = tmp_path_factory.mktemp("tok")
    checked = 0
    for recipe in RECIPES:
        for devices, nodes in CLUSTERS:
            cfg = compose_config([f"model={model}", f"train={recipe}", f"cluster.devices={devices}",
                                  f"cluster.num_nodes={nodes}"])
            exp = typed(cfg)
            if exp.train.global_batch_size % (exp.train.micro_batch_size * devices * nodes):
                continue  # an invalid split: validation refuses it (test_config), for both sides alike
            pretrain = {s.name: s for s in plan(cfg, tmp / "artifacts")}["pretrain"]
            spec = StageSpec(stage="pretrain", key=pretrain.key, out_dir=str(tmp / "out"), config=pretrain.config,
                             runtime={"devices": devices, "num_nodes": nodes, "settings": pretrain.runtime})
            train, model_cfg = stage_configs(spec)
            assert training_plan(train, world_size(spec.runtime)) == planned_training(exp), (recipe, devices, nodes)
            stage_model = build_config(model_cfg, stage_tokenizer(exp, tmp))
            assert param_counts(stage_model) == param_counts(planned_model(exp)), (recipe, model)
            checked += 1
    assert checked >= len(RECIPES)
