"""Config errors fail fast and name what is wrong (issue: a typo fails within seconds, naming the key)."""

import subprocess
import sys
import time

from proxlab.core.paths import REPO_ROOT
from proxlab.runner.run import CONF_DIR  # noqa: F401  (registers the schemas)


def proxlab(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "proxlab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def test_typo_in_override_fails_fast_naming_the_key():
    t0 = time.perf_counter()
    r = proxlab("run", "exp=smoke", "model.n_layr=2")
    assert r.returncode != 0
    assert "n_layr" in r.stderr + r.stdout
    assert time.perf_counter() - t0 < 30


def test_unknown_experiment_lists_known_ones():
    r = proxlab("run", "exp=no_such_experiment")
    assert r.returncode != 0
    out = r.stderr + r.stdout
    assert "exp/no_such_experiment" in out and "smoke" in out


def test_wrong_type_fails():
    r = proxlab("run", "exp=smoke", "train.max_steps=many")
    assert r.returncode != 0 and "max_steps" in r.stderr + r.stdout


def test_every_named_experiment_composes_and_plans():
    from proxlab.runner.compose import compose_config
    from proxlab.runner.graph import plan

    names = sorted(p.stem for p in (REPO_ROOT / "conf" / "exp").glob("*.yaml"))
    assert {"smoke", "table2", "fig5", "fig6", "table3", "table5_mistral", "prox_1b"} <= set(names)
    for name in names:
        cfg = compose_config([f"exp={name}"])
        assert cfg.name and "${" not in cfg.name, name
        last = "refiner.select_chunk" if name == "refiners" else "evaluate"  # exp=refiners: stop_after=refiner
        assert plan(cfg, REPO_ROOT / "artifacts")[-1].name == last, name


def test_typo_in_a_refine_setting_fails_naming_the_key():
    """Settings the refine code reads are schema fields: a misspelt one fails at compose time, before any work."""
    r = proxlab("run", "exp=smoke_prox", "refine=doc", "refine.doc.thredas=2")
    assert r.returncode != 0
    assert "thredas" in r.stderr + r.stdout


def test_refine_settings_read_by_the_code_are_typed_fields():
    from proxlab.runner.compose import compose_config

    cfg = compose_config(["exp=smoke_prox", "refine=prox", "refine.doc.threads=2", "refine.chunk.chat_format=llama2",
                          "refine.doc.truncation=content", "refine.doc.max_model_len=1024",
                          "refine.doc.kv_cache_gib=4", "refine.doc.request_timeout_s=30",
                          "refine.doc.max_num_seqs=8", "refine.doc.vllm_multiprocessing=true",
                          "refine.apply.count_tokens=false"])
    assert cfg.refine.doc.threads == 2 and cfg.refine.doc.max_model_len == 1024
    assert cfg.refine.chunk.threads is None and cfg.refine.chunk.chat_format == "llama2"
    assert cfg.refine.apply.count_tokens is False


def test_stage_settings_fill_defaults_and_reject_unknown_keys():
    """Hand-built stage configs (tests, benchmarks, refine eval) get the schema's defaults; a typo fails naming it."""
    import pytest

    from proxlab.core.config import ApplyConfig, GenerateConfig, ModelConfig, load

    cfg = load(GenerateConfig, {"model": "m"}, runtime={"threads": 3})
    assert cfg.threads == 3 and cfg.chat_format == "auto" and cfg.kv_cache_gib == 2
    assert load(GenerateConfig, {"threads": 1}, runtime={"threads": 3}).threads == 1  # the config wins
    assert load(ApplyConfig, {"mode": "strict"}).drop_ratio == 0.05
    assert load(ModelConfig, {"preset": "tiny", "tokenizer": {"vocab_size": 512}}).tokenizer.vocab_size == 512
    with pytest.raises(KeyError, match="thredas"):
        load(GenerateConfig, {"thredas": 2})
    with pytest.raises(KeyError, match="drop_ration"):
        load(ApplyConfig, {"drop_ration": 0.1})
    with pytest.raises(KeyError, match="vocab_sise"):
        load(ModelConfig, {"tokenizer": {"vocab_sise": 1}})


def test_bad_values_fail_at_compose_time_before_any_stage(tmp_path):
    """`run` with a bad value exits in seconds naming the key, and no stage has run (no artifact exists)."""
    cases = [
        (["train.max_steps=-5"], "train.max_steps=-5: must be > 0"),
        (["train.early_stop_step=100"], "train.early_stop_step=100: must lie in (0, max_steps=60]"),
        (["train.global_batch_size=12"], "train.global_batch_size=12: not divisible by micro_batch_size × world size"),
        (["cluster.devices=3"], "train.global_batch_size=8: not divisible by micro_batch_size × world size = 8 × 3"),
        (["eval.tasks=[arc_easy,arc_medium]"], "eval.tasks=['arc_easy', 'arc_medium']: suite 'tiny_mc' has no task(s)"),
        (["eval.suite=generall"], "eval.suite='generall': expected one of"),
        (["exp=smoke_prox", "refine=doc", f"refine.doc.model={tmp_path}/no_refiner"],
         f"refine.doc.model='{tmp_path}/no_refiner': no such directory"),
        (["exp=smoke_prox", "refine=doc", "refine.doc.model=proxlab:tiny-lama"], "refine.doc.model='proxlab:tiny-lama'"),
        (["refine=rules", "refine.rules.filters=[gopher,c5]"], "refine.rules.filters=['gopher', 'c5']: unknown"),
        (["train.schedule=linear"], "train.schedule='linear': expected one of ['cosine', 'wsd', 'constant']"),
        (["corpus.on_bad_line=ignore"], "corpus.on_bad_line='ignore': expected one of ['error', 'skip']"),
    ]
    for overrides, message in cases:
        args = ["run", "exp=smoke", *overrides, f"paths.artifacts_dir={tmp_path}/artifacts",
                f"paths.runs_dir={tmp_path}/runs"]
        r = proxlab(*args)
        out = r.stdout + r.stderr
        assert r.returncode == 2, (overrides, out[-2000:])
        assert message in out, (overrides, out[-2000:])
        assert "Traceback" not in out, out[-2000:]
        assert not (tmp_path / "artifacts").exists(), overrides  # nothing ran
    assert proxlab("plan", "exp=smoke").returncode == 0  # the same command with valid values passes validation


def test_plan_refuses_an_impossible_batch_split():
    r = proxlab("plan", "exp=smoke", "cluster.devices=3")
    assert r.returncode == 2 and "not divisible" in r.stdout + r.stderr


def test_stages_run_offline_unless_the_hub_is_allowed(monkeypatch):
    from proxlab.core.paths import HUB_OFFLINE
    from proxlab.runner.launcher import stage_env
    from proxlab.runner.compose import compose_config
    from proxlab.runner.validate import typed

    for k in HUB_OFFLINE:
        monkeypatch.delenv(k, raising=False)
    assert stage_env(allow_hub=False) == HUB_OFFLINE and stage_env(allow_hub=True) == {}
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a value the user exported wins
    assert stage_env(allow_hub=False)["HF_HUB_OFFLINE"] == "0"
    assert compose_config(["exp=smoke"]).cluster.allow_hub is False
    assert compose_config(["exp=smoke", "cluster=slurm"]).cluster.allow_hub is True
    assert typed(compose_config(["exp=table2"])).corpus.source == "hf"


def test_a_hub_corpus_needs_the_hub_allowed(tmp_path):
    paths = [f"paths.artifacts_dir={tmp_path}/a", f"paths.runs_dir={tmp_path}/r"]
    r = proxlab("run", "exp=smoke", "corpus=redpajama_v2", *paths)
    assert r.returncode == 2 and "corpus.source='hf': streams from the hub" in r.stdout + r.stderr
    assert "cluster.allow_hub=true" in r.stdout + r.stderr
    assert proxlab("plan", "exp=smoke", "corpus=redpajama_v2", *paths).returncode == 0  # planning needs no hub
