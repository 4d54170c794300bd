"""Refiners built inside the experiment graph (refine.<level>.model=built, conf/refiner/): stages, keys, sharing with the
raw run, validation errors, the plan's build FLOPs, and the ledger keeping them apart."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from proxlab.core.config import ConfigError, refiner_label
from proxlab.core.paths import REPO_ROOT
from proxlab.runner.graph import plan
from proxlab.runner.run import CONF_DIR  # noqa: F401  (registers the schemas)
from proxlab.runner.validate import validate

BUILT = ("refiner=tiny", "refine.doc.model=built", "refine.chunk.model=built")


def composed(*overrides):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        exp = [] if any(o.startswith("exp=") for o in overrides) else ["exp=smoke_prox"]
        return compose("config", overrides=[*exp, *overrides])


def stages(*overrides):
    cfg = composed(*overrides)
    validate(cfg)
    return {s.name: s for s in plan(cfg, Path("/tmp/artifacts"))}


def test_built_refiners_enter_the_graph_before_refining():
    prox, raw = stages("refine=prox", *BUILT), stages("refine=raw")
    names = list(prox)
    for level in ("doc", "chunk"):
        select = prox[f"refiner.select_{level}"]
        assert prox[f"refine.generate_{level}"].inputs["refiner"] is select
        assert names.index(f"refiner.select_{level}") < names.index(f"refine.generate_{level}")
        assert select.inputs["finetune"].config["finetune"]["level"] == level
        assert select.inputs["finetune"].inputs["base"] is prox["refiner.pretrain"]
    # the base is the raw run's pretraining: one artifact, trained once in a sweep
    assert prox["refiner.pretrain"].key == raw["pretrain"].key
    assert prox["refiner.pretrain"].out_dir == raw["pretrain"].out_dir
    assert prox["refiner.tokenize"].out_dir == raw["tokenize"].out_dir
    # the experiment's tokenizer is the base's: one stage, under its own name
    assert prox["tokenizer"] is prox["refiner.annotate"].inputs["tokenizer"] and "refiner.tokenizer" not in prox
    # sft_data renders what the refine stage sends, within the base's context
    sft = prox["refiner.sft_data"].config
    assert sft["max_seq_len"] == 256 and sft["doc"]["max_prompt_tokens"] == 512 and sft["chunk"]["chunk_tokens"] == 512
    assert prox["refiner.annotate"].config["chunk_tokens"] == 512


def test_refiner_settings_rekey_the_refined_corpus_not_the_base():
    base, other = stages("refine=prox", *BUILT), stages("refine=prox", *BUILT, "refiner.finetune.epochs=2")
    assert other["refiner.pretrain"].key == base["refiner.pretrain"].key
    assert other["refiner.annotate"].key == base["refiner.annotate"].key
    for name in ("refiner.finetune_doc", "refiner.select_doc", "refine.generate_doc", "refine.apply_chunk", "pretrain"):
        assert other[name].key != base[name].key, name
    chunk_window = stages("refine=prox", *BUILT, "refine.chunk.chunk_tokens=300")
    assert chunk_window["refiner.annotate"].key != base["refiner.annotate"].key  # annotations are chunked alike
    # sft_data holds both levels, so a chunk setting re-keys it and everything built from it
    assert chunk_window["refiner.sft_data"].key != base["refiner.sft_data"].key
    assert chunk_window["refiner.finetune_doc"].key != base["refiner.finetune_doc"].key


def test_doc_only_builds_one_level():
    doc = stages("refine=doc", "refiner=tiny", "refine.doc.model=built")
    assert "refiner.finetune_doc" in doc and "refiner.finetune_chunk" not in doc


def test_a_given_base_checkpoint_is_an_external_input(tmp_path):
    ckpt = tmp_path / "base"
    ckpt.mkdir()
    (ckpt / "model_config.yaml").write_text("block_size: 512\n")
    (ckpt / "lit_model.pth").write_bytes(b"x")
    prox = stages("refine=prox", *BUILT, f"refiner.base.checkpoint={ckpt}")
    assert "refiner.pretrain" not in prox
    ft = prox["refiner.finetune_doc"]
    assert ft.external_inputs == {"base": str(ckpt.resolve())} and "base" not in ft.inputs
    assert prox["refiner.sft_data"].config["max_seq_len"] == 512
    assert prox["refiner.annotate"].external_inputs == {"tokenizer": str(ckpt.resolve())}
    (ckpt / "lit_model.pth").write_bytes(b"changed")
    assert stages("refine=prox", *BUILT, f"refiner.base.checkpoint={ckpt}")["refiner.finetune_doc"].key != ft.key


@pytest.mark.parametrize("overrides, key, says", [
    (("refine=prox", "refine.doc.model=built"), "refine.doc.model", "refiner=tiny|xs|s|m"),
    (("refine=prox", "refiner=tiny", "refine.doc.model=built:xs"), "refine.doc.model", "not 'xs'"),
    (("refine=prox", *BUILT, "refiner.sft_data.keep_chunk_per_edit=-1"), "refiner.sft_data.keep_chunk_per_edit",
     ">= 0"),
    (("refine=prox", *BUILT, "refine.shard_rank=0", "refine.num_shards=2"), "refine.shard_rank", "stop_after=refiner"),
])
def test_bad_built_refiner_settings_name_the_key(overrides, key, says):
    with pytest.raises(ConfigError) as e:
        validate(composed(*overrides))
    assert e.value.key == key and says in str(e.value)


def test_report_label_names_the_refiner():
    def label(overrides):
        from omegaconf import OmegaConf
        return refiner_label(OmegaConf.to_container(composed(*overrides), resolve=False))

    assert label(("refine=prox", *BUILT)) == "ProX-tiny (built)"
    assert label(("refine=doc",)) == "custom: proxlab:tiny-llama"
    assert label(("refine=raw",)) is None
    assert label(("exp=table2", "refine=prox")) == "ProX-s (built)"  # the paper's TLM-S refiners, built
    assert label(("exp=table2", "refine=prox", "refine.doc.model=gair-prox/web-doc-refining-lm",
                  "refine.chunk.model=gair-prox/web-chunk-refining-lm")) == "ProX-xs (released)"


def test_plan_shows_the_build_apart_and_a_sweep_counts_it_once():
    from proxlab.runner.planning import cost_estimate, describe_costs, describe_sweep_costs
    from proxlab.runner.validate import typed

    cfgs = {v: composed(f"refine={v}", *(BUILT if v != "raw" else ())) for v in ("raw", "doc", "prox")}
    exps = {v: typed(c) for v, c in cfgs.items()}
    lines = "\n".join(describe_costs(exps["prox"]))
    assert "refiner base: tiny" in lines and "SFT (doc, chunk)" in lines and "teacher: rules" in lines
    estimates = [cost_estimate(exps[v], {s.name: s.key for s in plan(cfgs[v], Path("/tmp/a"))}) for v in exps]
    assert estimates[2].base_trainings and not estimates[0].base_trainings
    sweep = "\n".join(describe_sweep_costs(estimates))
    # the base is the raw run's own training: no extra base pretraining; doc and prox share one sft_data build
    assert "0 base pretrainings" in sweep and "sweep of 3 experiments: 3 trainings" in sweep
    assert len({k for e in estimates for k in e.builds}) == 1


def test_plan_counts_an_llm_teacher():
    from proxlab.runner.planning import refiner_build_flops
    from proxlab.runner.validate import typed

    exp = typed(composed("refine=prox", *BUILT, "refiner.annotate.teacher=llm",
                         "refiner.annotate.teacher_params=6.845e10", "refiner.annotate.num_docs=100"))
    lines, flops = refiner_build_flops(exp)
    assert flops["teacher"] > 2 * 6.845e10 * 100 * 2 * 100  # two scoring prompts of > 100 tokens per seed
    assert any("teacher proxlab:smollm2-135m-instruct" in ln for ln in lines)


def test_an_llm_teacher_runs_as_engines_of_its_tensor_parallel_size():
    from proxlab.runner.run import engine_size

    cfg = composed("exp=refiners", "refiner=s")
    validate(cfg)
    annotate = {s.name: s for s in plan(cfg, Path("/tmp/artifacts"))}["refiner.annotate"]
    assert engine_size(annotate) == (8, "refiner.annotate.llm.tensor_parallel_size") and annotate.env == "vllm"
