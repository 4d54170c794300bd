"""The refiner's dtype: `auto` is resolved per accelerator when the experiment is planned (float16 on GPU, the
reference's numerics; bfloat16 on CPU), so a stage's key and manifest hold the dtype that ran, another accelerator is
another artifact, and the engine is checked to have loaded that dtype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxlab.core.config import ConfigError, GenerateConfig, check_generate, resolve_refine_dtype
from tiny_model import (VLLM_PYTHON, generate_config, make_spec, needs_vllm, read_programs, run_stage_subprocess,
                        tiny_model_path, web_texts, write_doc_shards)

GENERATE = ("refine.generate_doc", "refine.generate_chunk")


def planned(*overrides: str) -> dict:
    """The experiment's planned stages by name (exp=smoke, the paper's refine=prox settings unless overridden)."""
    from hydra import compose, initialize_config_dir

    from proxlab.core.paths import REPO_ROOT
    from proxlab.runner.graph import plan
    from proxlab.runner.run import CONF_DIR  # noqa: F401  (registers the schemas)

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["exp=smoke", "refine=prox", *overrides])
    return {s.name: s for s in plan(cfg, Path("/tmp/artifacts"))}


def test_auto_is_resolved_per_accelerator_into_the_key():
    cpu, gpu = planned("cluster.accelerator=cpu"), planned("cluster.accelerator=gpu")
    for name in GENERATE:
        assert cpu[name].config["dtype"] == "bfloat16" and gpu[name].config["dtype"] == "float16", name
        assert cpu[name].key != gpu[name].key, name  # another effective dtype is another artifact
    assert cpu["prepare"].key == gpu["prepare"].key  # nothing before the refiner changes
    # `auto` and the dtype it resolves to are one computation, hence one artifact; an alias is its dtype
    for override in ("refine.doc.dtype=bfloat16", "refine.doc.dtype=bf16"):
        assert planned("cluster.accelerator=cpu", override)["refine.generate_doc"].key == cpu["refine.generate_doc"].key
    fp32 = planned("cluster.accelerator=gpu", "refine.doc.dtype=float32", "refine.chunk.dtype=fp32")
    assert {fp32[n].config["dtype"] for n in GENERATE} == {"float32"}
    assert fp32["refine.generate_doc"].key != gpu["refine.generate_doc"].key


def test_auto_needs_a_known_accelerator_and_bad_names_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"refine\.doc\.dtype='auto'.*cluster\.accelerator='auto'"):
        planned("cluster.accelerator=auto")
    pinned = planned("cluster.accelerator=auto", "refine.doc.dtype=float32", "refine.chunk.dtype=float16")
    assert [pinned[n].config["dtype"] for n in GENERATE] == ["float32", "float16"]
    with pytest.raises(ConfigError, match=r"refine\.chunk\.dtype='fp64': expected auto or one of"):
        check_generate(GenerateConfig(dtype="fp64"), "chunk")
    with pytest.raises(ConfigError, match="refine dtype='int8'"):
        resolve_refine_dtype("int8", "cpu")


def _run_hf(tmp_path: Path, docs: Path, dtype: str) -> tuple[dict, list[dict]]:
    from proxlab.core.stage import run_stage
    from proxlab.refine import generate

    spec = make_spec("refine.generate_doc", tmp_path / dtype, generate_config("doc", str(tiny_model_path()),
                                                                              dtype=dtype, max_new_tokens=4), docs=docs)
    run_stage(generate.main, spec)
    return json.loads((spec.out / "manifest.json").read_text()), read_programs(spec.out)


def test_the_manifest_records_the_dtype_the_engine_ran(tmp_path):
    """A hand-built spec (a benchmark's) may still say `auto`: the backend resolves it for the device it found."""
    docs = write_doc_shards(tmp_path / "docs", web_texts(4, max_chars=600), 4)
    auto, auto_rows = _run_hf(tmp_path, docs, "auto")
    fp32, fp32_rows = _run_hf(tmp_path, docs, "float32")
    assert auto["extra"]["dtype"] == "bfloat16" and fp32["extra"]["dtype"] == "float32"
    assert fp32["config"]["dtype"] == "float32"
    assert [r["id"] for r in auto_rows] == [r["id"] for r in fp32_rows]
    assert [r["prompt_tokens"] for r in auto_rows] == [r["prompt_tokens"] for r in fp32_rows]


def test_an_engine_in_another_dtype_fails():
    import torch

    from proxlab.refine.backends.base import checked_dtype

    assert checked_dtype("bfloat16", torch.bfloat16) == "bfloat16"
    with pytest.raises(RuntimeError, match="'float16' was asked for, but the engine loaded the model in 'bfloat16'"):
        checked_dtype("float16", torch.bfloat16)


@pytest.mark.vllm
@needs_vllm
def test_vllm_runs_auto_in_bfloat16_on_cpu(tmp_path):
    """vLLM gets the resolved name, never `auto`, and reports the dtype it loaded (checked, then in the manifest)."""
    docs = write_doc_shards(tmp_path / "docs", web_texts(4, max_chars=400), 4)
    spec = make_spec("refine.generate_doc", tmp_path / "gen", generate_config(
        "doc", str(tiny_model_path()), backend="vllm", dtype="auto", max_new_tokens=4), docs=docs)
    proc = run_stage_subprocess("proxlab.refine.generate", spec, python=VLLM_PYTHON)
    assert json.loads((spec.out / "manifest.json").read_text())["extra"]["dtype"] == "bfloat16"
    assert "in bfloat16, loaded in" in proc.stdout
    assert len(read_programs(spec.out)) == 4
