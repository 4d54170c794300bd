"""Refining-model backends with a real (tiny, random-weight) Llama: hf batching, token accounting, context guard, model
resolution; with the vLLM environment, hf vs vllm agreement and the openai backend against a real `vllm serve`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from proxlab.models import resolve_model
from proxlab.refine.backends import make_backend
from proxlab.refine.backends.base import PROMPT_TOO_LONG, param_counts
from proxlab.refine.prompts import render_doc_prompt
from tiny_model import (VLLM_PYTHON, backend_config, generate_config, make_spec, needs_vllm, read_programs, run_stage_subprocess,
                        stage_env, tiny_model_path, web_texts, write_doc_shards)


@pytest.fixture(scope="module")
def hf_backend():
    model = str(tiny_model_path())
    return make_backend(backend_config(model, batch_size=4), device="cpu")


def prompts_of(backend, n=10, max_tokens=200):
    texts = [t[: 80 + 70 * i] for i, t in enumerate(web_texts(n, max_chars=3000))]  # lengths vary: padding
    return [render_doc_prompt(t, backend.tokenizer, max_tokens) for t in texts]


def test_batched_equals_unbatched_and_counts_tokens(hf_backend):
    prompts = prompts_of(hf_backend)
    assert len({len(p) for p in prompts}) > 3  # different lengths: padding is exercised
    batched = hf_backend.generate(prompts, 12)
    hf_backend.batch_size = 1
    try:
        single = hf_backend.generate(prompts, 12)
    finally:
        hf_backend.batch_size = 4
    same = sum(a.token_ids == b.token_ids for a, b in zip(batched, single))
    assert same >= 0.9 * len(prompts), [(a.text, b.text) for a, b in zip(batched, single) if a.text != b.text]
    for p, g in zip(prompts, batched):
        assert g.prompt_tokens == len(p)
        assert g.output_tokens == len(g.token_ids) == 12 and g.finish_reason == "length"
        assert g.text == hf_backend.tokenizer.decode(g.token_ids, skip_special_tokens=True,
                                                     clean_up_tokenization_spaces=False).strip(" ")
    assert hf_backend.stats.output_tokens >= 24 * len(prompts)


def test_context_guard_skips_and_caps(hf_backend):
    ctx = hf_backend.context_len
    assert ctx == 4096
    hf_backend.context_len = 64
    try:
        gens = hf_backend.generate([[1] + [100] * 63, [1] + [100] * 59, [1, 100, 200]], 12)
    finally:
        hf_backend.context_len = ctx
    assert (gens[0].finish_reason, gens[0].output_tokens, gens[0].text) == (PROMPT_TOO_LONG, 0, "")
    assert gens[1].output_tokens == 4 and gens[1].finish_reason == "length"  # capped at the context
    assert gens[2].output_tokens == 12


def test_eos_stops_generation(tmp_path, hf_backend):
    prompt = prompts_of(hf_backend, 1)[0]
    first = hf_backend.generate([prompt], 8)[0].token_ids
    model = tmp_path / "m"
    shutil.copytree(tiny_model_path(), model)
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, first[2]], "bos_token_id": 1}))
    b = make_backend(backend_config(str(model)), device="cpu")
    g = b.generate([prompt], 8)[0]
    assert g.finish_reason == "stop" and g.token_ids == first[:3] and g.output_tokens == 3


def test_resolve_model_and_param_counts(tmp_path):
    path = tiny_model_path()
    assert resolve_model(str(path)) == str(path.resolve())
    assert resolve_model("gair-prox/web-doc-refining-lm") == "gair-prox/web-doc-refining-lm"  # an HF id
    with pytest.raises(ValueError, match="unknown local model"):
        resolve_model("proxlab:nope")
    with pytest.raises(FileNotFoundError):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="backend"):
        make_backend(backend_config(str(path), backend="tgi"))
    total, non_embedding = param_counts(str(path))
    cfg = json.loads((path / "config.json").read_text())
    assert total - non_embedding == cfg["vocab_size"] * cfg["hidden_size"]  # one (input) embedding matrix
    assert non_embedding > cfg["vocab_size"] * cfg["hidden_size"]  # the untied head stays in N
    meta = tmp_path / "config-only"  # no safetensors: counted on the meta device from the config
    meta.mkdir()
    shutil.copy(path / "config.json", meta / "config.json")
    assert param_counts(str(meta)) == (total, non_embedding)


def test_tiny_weights_are_deterministic():
    from proxlab.models.tiny_llama import tiny_llama_state

    a, b = tiny_llama_state(0), tiny_llama_state(0)
    assert all((a[k] == b[k]).all() for k in a)
    assert not (tiny_llama_state(1)["lm_head.weight"] == a["lm_head.weight"]).all()


# ---------------------------------------------------------------------------------------------------------------------
# vLLM environment: offline engine vs hf, and the openai backend against `vllm serve`

N_AGREE = 40


@pytest.fixture(scope="module")
def agreement_corpus(tmp_path_factory):
    return write_doc_shards(tmp_path_factory.mktemp("agree") / "docs", web_texts(N_AGREE, max_chars=4000), 20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """`vllm serve` of the tiny model on loopback, started early so it boots while the offline engine runs."""
    if not VLLM_PYTHON.exists():
        pytest.skip("the vLLM environment is absent")
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model_path()),
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--max-model-len", "4096", "--seed", "0", "--disable-log-stats"]
    env = {**stage_env(), "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc, f"http://127.0.0.1:{port}/v1", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def vllm_server(server_process):
    proc, url, log = server_process
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/models", timeout=5) as r:
                if json.loads(r.read())["data"]:
                    return url
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"vllm serve not ready after 600 s:\n{log.read_text()[-4000:]}")
        time.sleep(2)


@pytest.fixture(scope="module")
def vllm_programs(tmp_path_factory, agreement_corpus, server_process):
    out = tmp_path_factory.mktemp("vllm") / "gen"
    spec = make_spec("refine.generate_doc", out, generate_config("doc", str(tiny_model_path()), backend="vllm"),
                     docs=agreement_corpus)
    run_stage_subprocess("proxlab.refine.generate", spec, python=VLLM_PYTHON)
    return read_programs(out)


@pytest.mark.vllm
@needs_vllm
def test_vllm_offline_agrees_with_hf(tmp_path, agreement_corpus, vllm_programs):
    from proxlab.core.stage import run_stage
    from proxlab.refine import generate

    spec = make_spec("refine.generate_doc", tmp_path / "hf", generate_config("doc", str(tiny_model_path())),
                     docs=agreement_corpus)
    run_stage(generate.main, spec)
    hf = read_programs(spec.out)
    assert [r["id"] for r in hf] == [r["id"] for r in vllm_programs]
    assert [r["prompt_tokens"] for r in hf] == [r["prompt_tokens"] for r in vllm_programs]  # same prompts
    same = sum(a["output"] == b["output"] and a["output_tokens"] == b["output_tokens"]
               for a, b in zip(hf, vllm_programs))
    assert same / len(hf) >= 0.95, f"hf and vllm agree on {same}/{len(hf)} documents"


@pytest.mark.vllm
@needs_vllm
def test_openai_backend_matches_vllm_offline(tmp_path, agreement_corpus, vllm_programs, vllm_server):
    from proxlab.core.stage import run_stage
    from proxlab.refine import generate

    cfg = generate_config("doc", str(tiny_model_path()), backend="openai", endpoint=vllm_server, concurrency=4)
    spec = make_spec("refine.generate_doc", tmp_path / "oa", cfg, docs=agreement_corpus)
    run_stage(generate.main, spec)
    served = read_programs(spec.out)
    assert served == vllm_programs  # every field: ids, prompt tokens, outputs, output tokens, finish reasons


_TOKENIZE = """
import hashlib, json, sys
from proxlab.refine.backends.base import load_tokenizer
from proxlab.refine.prompts import encode_prompt, render_chat
texts = json.loads(sys.argv[1])
for path in sys.argv[2:]:
    t = load_tokenizer(path)
    ids = [encode_prompt(render_chat(x, t), t) for x in texts]
    lines = [t(["[%03d]" % i + l for i, l in enumerate(x.split(chr(10)))])["input_ids"] for x in texts]
    dec = t.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    print(path, hashlib.sha256(json.dumps([ids, lines, dec]).encode()).hexdigest())
"""


@pytest.mark.vllm
@needs_vllm
def test_tokenizers_identical_across_environments():
    """transformers 4.x (main) and 5.x (vLLM env) must render, count and decode the same ids, or hf and vllm
    diverge: prompts, chunk line counts, decoded outputs."""
    import sys

    from tiny_model import REPO

    texts = json.dumps(web_texts(20, max_chars=1500))
    paths = [str(tiny_model_path()), str(REPO.parent / "shared" / "data" / "tokenizers" / "llama_hf")]
    smollm2 = REPO / ".cache" / "models" / "smollm2-135m-instruct"
    if (smollm2 / "tokenizer.json").exists():
        paths.append(str(smollm2))  # chat template + byte-level BPE: the case AutoTokenizer 5.x breaks
    main, vllm_env = (subprocess.run([str(py), "-c", _TOKENIZE, texts, *paths], capture_output=True, text=True,
                                     check=True, env=stage_env()).stdout.splitlines()
                      for py in (sys.executable, VLLM_PYTHON))
    assert len(main) == len(paths) and main == vllm_env


@pytest.mark.vllm
@needs_vllm
def test_generate_in_the_vllm_environment_logs_to_wandb(tmp_path):
    """The vLLM environment has W&B too: a generate stage run there writes its offline W&B run beside metrics.jsonl."""
    docs = write_doc_shards(tmp_path / "docs", web_texts(4, max_chars=400), 4)
    spec = make_spec("refine.generate_doc", tmp_path / "gen", generate_config("doc", str(tiny_model_path()),
                                                                               backend="vllm", max_new_tokens=4),
                     docs=docs)
    spec.run_dir = str(tmp_path / "run")
    spec.logger = {"backend": "wandb", "mode": "offline", "project": "proxlab-test"}
    run_stage_subprocess("proxlab.refine.generate", spec, python=VLLM_PYTHON)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), runs
    assert list(runs[0].glob("run-*.wandb"))[0].stat().st_size > 0
    records = [json.loads(line) for line in (spec.out / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("summary") and r["generate/prompts"] == 4 for r in records)  # one run: progress and summary
    assert any("generate/docs_done" in r for r in records)
