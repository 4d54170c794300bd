"""The stage graph: content keys let experiments share upstream work, and only that."""

from pathlib import Path

from hydra import compose, initialize_config_dir

import dataclasses

import pytest

from proxlab.core import config as schemas
from proxlab.core.paths import REPO_ROOT
from proxlab.runner.graph import plan
from proxlab.runner.run import CONF_DIR  # noqa: F401  (registers the schemas)


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
    for neutral in ("train.log_interval=1", "train.num_workers=2", "train.compile=true", "train.keep_checkpoints=1",
                    "train.activation_checkpointing=true", "train.deterministic=false", "train.tokenize_workers=2"):
        assert stages(neutral)["pretrain"].key == base["pretrain"].key, neutral
    assert stages("paths.artifacts_dir=/elsewhere")["pretrain"].key == base["pretrain"].key
    assert stages("logger=none")["evaluate"].key == base["evaluate"].key
    assert stages("corpus.num_docs=10")["prepare"].key != base["prepare"].key
    assert stages("train.lr=1e-3")["pretrain"].key != base["pretrain"].key
    assert stages("eval.limit=5")["evaluate"].key != base["evaluate"].key


def test_train_data_seed_enters_the_key_only_when_set():
    """Unset (None: the data order follows train.seed), it is left out of the pretrain key, so runs made before it
    existed keep theirs; set, it re-keys the pretraining and what follows, nothing before."""
    base = stages()
    assert "data_seed" not in base["pretrain"].config["train"] and "seed" in base["pretrain"].config["train"]
    assert {n: s.key for n, s in stages("train.data_seed=null").items()} == {n: s.key for n, s in base.items()}
    other = stages("train.data_seed=7")
    assert other["pretrain"].config["train"]["data_seed"] == 7
    assert other["tokenize"].key == base["tokenize"].key
    assert other["pretrain"].key != base["pretrain"].key and other["evaluate"].key != base["evaluate"].key


def test_stop_after_truncates_the_graph():
    names = list(stages("refine=rules", "stop_after=tokenize"))
    assert names == ["prepare", "refine.rules", "tokenizer", "tokenize"]


def test_generate_runtime_settings_do_not_rekey_but_reach_the_stage():
    """Threads, timeouts, KV cache size, engine multiprocessing, concurrency and retries never change a program."""
    base = stages("refine=prox")
    for level in ("doc", "chunk"):
        for neutral in ("threads=2", "kv_cache_gib=4", "vllm_multiprocessing=true", "request_timeout_s=5.5",
                        "concurrency=2", "max_retries=1"):
            other = stages("refine=prox", f"refine.{level}.{neutral}")
            assert {n: s.key for n, s in other.items()} == {n: s.key for n, s in base.items()}, (level, neutral)
            key, value = neutral.split("=")
            assert str(other[f"refine.generate_{level}"].runtime[key]).lower() == value
            assert key not in other[f"refine.generate_{level}"].config
    assert stages("refine=prox", "refine.doc.max_new_tokens=8")["refine.generate_doc"].key \
        != base["refine.generate_doc"].key
    assert stages("refine=prox", "refine.chunk.chat_format=llama2")["refine.generate_chunk"].key \
        != base["refine.generate_chunk"].key
    # The reference-format switches change the programs: hashed, each into its own level's key only.
    no_double_bos = stages("refine=prox", "refine.chunk.double_bos=false")
    assert no_double_bos["refine.generate_chunk"].key != base["refine.generate_chunk"].key
    assert no_double_bos["refine.generate_doc"].key == base["refine.generate_doc"].key
    assert stages("refine=prox", "refine.doc.chat_format=auto")["refine.generate_doc"].key \
        != base["refine.generate_doc"].key


def test_chunk_apply_settings_rekey_only_the_chunk_apply_stage():
    """A chunk-level threshold reuses the doc level and the chunk-level generation ("tag once, threshold later")."""
    base = stages("refine=prox")
    for override in ("refine.apply.drop_ratio=0.2", "refine.apply.min_ratio=0.1", "refine.apply.min_words=5"):
        other = stages("refine=prox", override)
        for name in ("refine.generate_doc", "refine.apply_doc", "refine.generate_chunk"):
            assert other[name].key == base[name].key, (override, name)
        assert other["refine.apply_chunk"].key != base["refine.apply_chunk"].key, override
        assert other["tokenize"].key != base["tokenize"].key, override
    for shared in ("refine.apply.mode=strict", "refine.apply.max_errors=3"):  # both levels read these
        other = stages("refine=prox", shared)
        assert other["refine.generate_doc"].key == base["refine.generate_doc"].key
        assert other["refine.apply_doc"].key != base["refine.apply_doc"].key, shared
        assert other["refine.apply_chunk"].key != base["refine.apply_chunk"].key, shared


# Every setting a schema marks runtime or plan-only, with a value that differs from the composed one.
NEUTRAL = {
    "corpus.tokens": "1e9", "corpus.tokenizer": "llama_hf", "corpus.check_tokens": "false",
    "refine.expected_doc_kept": "0.5", "refine.expected_chunk_kept": "0.5", "refine.expected_rules_kept": "0.5",
    "refine.shard_rank": "0", "refine.num_shards": "2",
    **{f"refine.{level}.{k}": v for level in ("doc", "chunk") for k, v in
       {"threads": "3", "kv_cache_gib": "5", "vllm_multiprocessing": "true", "request_timeout_s": "7.5",
        "concurrency": "3", "max_retries": "2", "size_preset": "tlm_s"}.items()},
    "train.log_interval": "2", "train.num_workers": "3", "train.compile": "true", "train.keep_checkpoints": "2",
    "train.tokenize_workers": "2", "train.activation_checkpointing": "true", "train.deterministic": "false",
}


def _declared_neutral(schema: type, prefix: str) -> set[str]:
    out = set()
    types = {f.name: f.type for f in dataclasses.fields(schema)}
    for f in dataclasses.fields(schema):
        nested = getattr(schemas, str(types[f.name]), None)
        if dataclasses.is_dataclass(nested):
            out |= _declared_neutral(nested, f"{prefix}{f.name}.")
        elif schemas.role(f) != schemas.HASHED:
            out.add(prefix + f.name)
    return out


def test_the_neutral_table_covers_every_runtime_and_plan_field():
    """A new runtime or plan-only field must be added to NEUTRAL, so the test below checks it."""
    declared = set()
    for section, schema in (("corpus.", schemas.CorpusConfig), ("refine.", schemas.RefineConfig),
                            ("train.", schemas.TrainConfig), ("model.", schemas.ModelConfig),
                            ("eval.", schemas.EvalConfig)):
        declared |= _declared_neutral(schema, section)
    assert declared == set(NEUTRAL)


@pytest.mark.parametrize("setting", sorted(NEUTRAL))
def test_fields_declared_runtime_or_plan_only_never_rekey(setting):
    base = stages("refine=prox")
    other = stages("refine=prox", f"{setting}={NEUTRAL[setting]}")
    assert {n: s.key for n, s in other.items()} == {n: s.key for n, s in base.items()}, setting


def test_runtime_settings_reach_their_stage_unhashed():
    other = stages("refine=prox", "train.tokenize_workers=2", "train.log_interval=2")
    assert other["tokenize"].runtime == {"workers": 2} and "workers" not in other["tokenize"].config
    assert other["pretrain"].runtime["log_interval"] == 2 and "log_interval" not in other["pretrain"].config["train"]
    assert "tokens" not in other["prepare"].config and "size_preset" not in other["refine.generate_doc"].config


def _data_dir_copy(root: Path) -> Path:
    """A data directory with two of the shared web files (copied, so they are other files)."""
    import shutil

    from proxlab.core.paths import data_dir

    (root / "web").mkdir(parents=True)
    for name in ("olmo_c4_sample.jsonl", "datajuicer_redpajama_cc_2023_06_refined_sample.jsonl"):
        shutil.copy2(data_dir() / "web" / name, root / "web" / name)
    return root


def test_other_data_or_an_edited_file_rekeys_prepare_and_everything_after(tmp_path):
    """The key holds what prepare read (resolved paths, sizes, mtimes): a run against other data, or against an edited
    file, never reuses the old corpus or anything built from it."""
    a, b = _data_dir_copy(tmp_path / "a"), _data_dir_copy(tmp_path / "b")
    keys_a = {n: s.key for n, s in stages(f"paths.data_dir={a}").items()}
    assert keys_a == {n: s.key for n, s in stages(f"paths.data_dir={a}").items()}  # stable while nothing changes
    keys_b = {n: s.key for n, s in stages(f"paths.data_dir={b}").items()}
    assert all(keys_a[n] != keys_b[n] for n in keys_a), (keys_a, keys_b)
    prepared = stages(f"paths.data_dir={b}")["prepare"]
    assert sorted(Path(f[0]).name for f in prepared.sources["corpus"]) == sorted(p.name for p in (b / "web").iterdir())

    with open(b / "web" / "olmo_c4_sample.jsonl", "a") as f:  # one more document in one file
        f.write('{"id": "new", "text": "An added document."}\n')
    keys_edited = {n: s.key for n, s in stages(f"paths.data_dir={b}").items()}
    assert all(keys_edited[n] != keys_b[n] for n in keys_b)


def test_hub_corpora_are_keyed_by_their_revision():
    base = stages("corpus=redpajama_v2")["prepare"]
    assert base.sources["corpus"]["revision"] == "main"
    assert stages("corpus=redpajama_v2", "corpus.hf_revision=abc123")["prepare"].key != base.key


def test_a_local_refiner_is_keyed_by_its_files(tmp_path):
    model = tmp_path / "refiner"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights v1")
    first = stages("refine=doc", f"refine.doc.model={model}")
    assert first["refine.generate_doc"].sources["model"][0][0].endswith("config.json")
    (model / "model.safetensors").write_bytes(b"weights v2, retrained")
    second = stages("refine=doc", f"refine.doc.model={model}")
    assert second["refine.generate_doc"].key != first["refine.generate_doc"].key
    assert second["prepare"].key == first["prepare"].key


def test_an_edited_eval_file_rekeys_only_the_evaluation(tmp_path):
    import shutil

    from proxlab.core.paths import data_dir

    shutil.copytree(data_dir() / "eval", tmp_path / "eval")
    shutil.copytree(data_dir() / "web", tmp_path / "web")
    before = stages(f"paths.data_dir={tmp_path}")
    assert any(f[0].endswith("sciq_validation.jsonl") for f in before["evaluate"].sources["eval_data"])
    with open(tmp_path / "eval" / "sciq_validation.jsonl", "a") as f:
        f.write("\n")
    after = stages(f"paths.data_dir={tmp_path}")
    assert after["evaluate"].key != before["evaluate"].key
    assert after["pretrain"].key == before["pretrain"].key
