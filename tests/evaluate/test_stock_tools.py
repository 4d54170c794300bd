"""Stock tools on proxlab's checkpoints, for real: a tiny model pretrained here by the tokenizer, tokenize and pretrain
stages, then `litgpt generate`, `litgpt convert_from_litgpt`, `litgpt evaluate`'s conversion and HF loading,
`proxlab export` + transformers `generate(**tokenizer(...))`, vLLM (its own environment), stock `lm_eval --model hf`
on the export and `proxlab lm-eval --model litgpt` on the checkpoint, and `slurm/eval_checkpoints.sh --list` on the
run directory. CPU, one thread, a few minutes in all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from proxlab.evaluate.tasks.data import resolve_data_dir
from proxlab.evaluate.tasks.suites import TASKS_DIR

from tiny_pretrain import pretrain_tiny_run  # tests/tiny_pretrain.py

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(sys.executable).parent
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
DATA_DIR = resolve_data_dir()
PROMPT = "The history of the city"
TASK = "general_arc_easy"


def env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "PROXLAB_DATA_DIR": str(DATA_DIR)}


def run(cmd: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          env=kw.pop("env", env()), **kw)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """tokenizer -> tokenize -> pretrain (24 steps) in the layout `proxlab run` writes: artifacts/<stage>/<key>/ and a
    run directory whose plan.json names them."""
    return pretrain_tiny_run(tmp_path_factory.mktemp("stock"))


@pytest.fixture(scope="module")
def lit(trained):
    """(LitGPT model, litgpt Tokenizer) of final/."""
    from litgpt import Tokenizer

    from proxlab.evaluate.lms.litgpt import load_litgpt

    model, config, _ = load_litgpt(trained["final"])
    return model, Tokenizer(trained["final"])


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    """`proxlab export final/ OUT` (the command line)."""
    out = tmp_path_factory.mktemp("export") / "hf"
    run([BIN / "proxlab", "export", trained["artifact"], out])  # the artifact: its final/
    return out


def lit_greedy(model, ids: list[int], n: int, eos: int | None) -> list[int]:
    out = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            nxt = int(model(torch.tensor([out]))[0, -1].argmax())
            out.append(nxt)
            if nxt == eos:
                break
    return out[len(ids):]


# -- what a checkpoint holds ---------------------------------------------------------------------------------------

def test_every_checkpoint_holds_hf_config_and_generation_config(trained):
    from litgpt import Config, Tokenizer
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    ckpts = sorted(trained["artifact"].glob("step-*")) + [trained["final"]]
    assert [p.name for p in ckpts] == ["step-00000012", "step-00000024", "final"]
    for ckpt in ckpts:
        for name in ("lit_model.pth", "model_config.yaml", "tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "config.json", "generation_config.json", "COMPLETE"):
            assert (ckpt / name).is_file(), f"{ckpt}/{name}"
        lit_cfg, lit_tok = Config.from_file(ckpt / "model_config.yaml"), Tokenizer(ckpt)
        hf = AutoConfig.from_pretrained(ckpt)
        assert hf.model_type == "llama" and hf.architectures == ["LlamaForCausalLM"]
        assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim,
                hf.intermediate_size, hf.vocab_size, hf.max_position_embeddings) == (
            lit_cfg.n_embd, lit_cfg.n_layer, lit_cfg.n_head, lit_cfg.n_query_groups, lit_cfg.head_size,
            lit_cfg.intermediate_size, lit_cfg.padded_vocab_size, lit_cfg.block_size)
        assert hf.dtype == torch.float32 or str(hf.dtype) in ("float32", "torch.float32")
        gen = GenerationConfig.from_pretrained(ckpt)
        assert (gen.bos_token_id, gen.eos_token_id) == (hf.bos_token_id, hf.eos_token_id) == (lit_tok.bos_id,
                                                                                                lit_tok.eos_id)
        tok = AutoTokenizer.from_pretrained(ckpt)
        enc = tok(PROMPT)
        assert "token_type_ids" not in enc and enc["input_ids"] == lit_tok.encode(PROMPT).tolist()


# -- litgpt's own commands on the checkpoint ---------------------------------------------------------------------------

def test_litgpt_generate_cli(trained, lit):
    model, tok = lit
    ckpt = trained["final"]
    proc = run([PY, "-m", "litgpt", "generate", ckpt, "--prompt", PROMPT, "--max_new_tokens", "6",
                "--temperature", "0", "--precision", "32-true"], timeout=240)
    ids = tok.encode(PROMPT).tolist()
    expected = tok.decode(torch.tensor(ids + lit_greedy(model, ids, 6, tok.eos_id)))
    assert expected.strip() and expected.strip() in proc.stdout, (expected, proc.stdout[-2000:])


def test_litgpt_convert_from_litgpt_cli_loads_in_transformers(trained, lit, tmp_path):
    """What `litgpt evaluate` does: convert_from_litgpt + the checkpoint's config.json and tokenizer files."""
    from litgpt.utils import copy_config_files
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = lit
    out = tmp_path / "converted"
    run([PY, "-m", "litgpt", "convert_from_litgpt", trained["final"], out], timeout=240)
    copy_config_files(trained["final"], out)  # config.json, generation_config.json, tokenizer files
    torch.save(torch.load(out / "model.pth", weights_only=False), out / "pytorch_model.bin")  # as litgpt evaluate
    (out / "model.pth").unlink()
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(out)(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        diff = (hf(ids).logits - model(ids)).abs().max().item()
    assert diff < 1e-4, diff


def test_litgpt_evaluate_converts_and_scores(trained, tmp_path, monkeypatch):
    """`litgpt evaluate`'s own code (convert_and_evaluate: convert, copy config.json/tokenizer, lm-eval HFLM) on the
    checkpoint. Its lm-eval call gets no include path, so proxlab's task is passed in through a TaskManager."""
    import functools

    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager
    from litgpt.eval.evaluate import convert_and_evaluate

    tm = TaskManager(include_path=str(TASKS_DIR / "general"), include_defaults=False,
                     metadata={"data_dir": str(DATA_DIR)})
    monkeypatch.setattr(lm_eval.evaluator, "simple_evaluate",
                        functools.partial(lm_eval.evaluator.simple_evaluate, task_manager=tm))
    out = tmp_path / "litgpt_eval"
    convert_and_evaluate(trained["final"], tasks=TASK, out_dir=out, batch_size=4, device="cpu", dtype="float32",
                         limit=4)
    results = json.loads((out / "results.json").read_text())
    assert results["results"][TASK]["acc,none"] is not None and (out / "config.json").is_file()


# -- the export: transformers, vLLM, lm_eval ---------------------------------------------------------------------------

def test_export_generate_with_transformers(exported, lit):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, lit_tok = lit
    assert (exported / "model.safetensors").is_file() and not list(exported.glob("*.bin"))
    tokenizer = AutoTokenizer.from_pretrained(exported)
    hf = AutoModelForCausalLM.from_pretrained(exported).eval()
    inputs = tokenizer(PROMPT, return_tensors="pt")
    assert set(inputs) == {"input_ids", "attention_mask"}
    ids = inputs["input_ids"]
    assert ids[0].tolist() == lit_tok.encode(PROMPT).tolist()  # BOS included, as LitGPT
    with torch.inference_mode():
        diff = (hf(**inputs).logits - model(ids)).abs().max().item()
        assert diff < 1e-4, diff
        out = hf.generate(**tokenizer(PROMPT, return_tensors="pt"), max_new_tokens=6, do_sample=False)
    assert out[0, ids.shape[1]:].tolist() == lit_greedy(model, ids[0].tolist(), 6, lit_tok.eos_id)


_VLLM = r"""
import json, sys
from vllm import LLM, SamplingParams
llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=128, enforce_eager=True, seed=0)
out = llm.generate([sys.argv[2]], SamplingParams(temperature=0.0, max_tokens=6, logprobs=1))[0]
print("RESULT " + json.dumps({"prompt": list(out.prompt_token_ids), "ids": list(out.outputs[0].token_ids),
      "logprobs": [lp[t].logprob for lp, t in zip(out.outputs[0].logprobs, out.outputs[0].token_ids)]}))
"""


@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=f"the vLLM environment {VLLM_PYTHON} is absent")
def test_export_loads_in_vllm(exported, lit):
    model, lit_tok = lit
    vllm_env = {**env(), "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                "VLLM_LOGGING_LEVEL": "WARNING",
                "VLLM_CPU_OMP_THREADS_BIND": str(sorted(os.sched_getaffinity(0))[0])}
    proc = run([VLLM_PYTHON, "-c", _VLLM, exported, PROMPT], timeout=600, env=vllm_env)
    got = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    ids = lit_tok.encode(PROMPT).tolist()
    assert got["prompt"] == ids
    assert got["ids"] == lit_greedy(model, ids, 6, lit_tok.eos_id)[: len(got["ids"])] and got["ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([ids + got["ids"]]))[0].float(), -1)
    expected = [logp[len(ids) - 1 + i, t].item() for i, t in enumerate(got["ids"])]
    assert max(abs(a - b) for a, b in zip(got["logprobs"], expected)) < 1e-3, (got["logprobs"], expected)


def _samples(out_dir: Path) -> dict[int, list[float]]:
    """doc_id -> per-choice log-likelihoods from lm-eval's --log_samples output."""
    (path,) = out_dir.rglob(f"samples_{TASK}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["doc_id"]: [float(resp[0][0]) for resp in r["resps"]] for r in rows}


def test_lm_eval_hf_on_export_and_proxlab_lm_eval_litgpt_on_checkpoint(exported, trained, tmp_path):
    """Stock `lm_eval --model hf` (task data through --metadata data_dir) and `proxlab lm-eval --model litgpt` score
    the same documents alike."""
    common = ["--tasks", TASK, "--limit", "4", "--batch_size", "4", "--device", "cpu", "--log_samples"]
    run([BIN / "lm_eval", "--model", "hf", "--model_args", f"pretrained={exported},dtype=float32",
         "--include_path", TASKS_DIR / "general", "--metadata", json.dumps({"data_dir": str(DATA_DIR)}),
         "--output_path", tmp_path / "hf", *common])
    run([BIN / "proxlab", "lm-eval", "--model", "litgpt", "--model_args", f"checkpoint_dir={trained['final']}",
         "--output_path", tmp_path / "litgpt", *common])  # proxlab's tasks included by default
    hf, lit = _samples(tmp_path / "hf"), _samples(tmp_path / "litgpt")
    assert sorted(hf) == sorted(lit) and len(hf) == 4
    for doc in hf:
        assert len(hf[doc]) == len(lit[doc]) and max(abs(a - b) for a, b in zip(hf[doc], lit[doc])) < 1e-3


def test_proxlab_lm_eval_keeps_lm_eval_models():
    """Registering `litgpt` must not hide lm-eval's own models (its registry loads them only while empty)."""
    import proxlab.evaluate.lms.litgpt  # noqa: F401
    from lm_eval.api.registry import get_model

    assert get_model("hf").__name__ == "HFLM" and get_model("litgpt").__name__ == "LitGPTLM"


# -- the same HF config code for GPT-NeoX (Pythia) ---------------------------------------------------------------------

def test_gpt_neox_checkpoint_converts_with_equal_logits(trained, tmp_path):
    from litgpt import GPT, Config
    from litgpt.utils import save_config
    from transformers import AutoModelForCausalLM

    from proxlab.evaluate.lms.convert import litgpt_to_hf
    from proxlab.pretrain.checkpoint import write_hf_side

    config = Config.from_name("pythia-14m", n_layer=2, n_embd=64, n_head=4, block_size=64, vocab_size=512,
                              padded_vocab_size=512)
    torch.manual_seed(0)
    model = GPT(config).eval()
    ckpt = tmp_path / "neox"
    ckpt.mkdir()
    torch.save({"model": model.state_dict()}, ckpt / "lit_model.pth")
    save_config(config, ckpt)
    write_hf_side(config, trained["tokenizer"], ckpt)
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "gpt_neox"
    hf = AutoModelForCausalLM.from_pretrained(litgpt_to_hf(ckpt, tmp_path / "neox_hf")).eval()
    ids = torch.randint(0, 512, (1, 20))
    with torch.inference_mode():
        diff = (hf(ids).logits - model(ids)).abs().max().item()
    assert diff < 1e-4, diff


# -- Slurm: a run directory resolves to its pretrain artifact ----------------------------------------------------------

def test_eval_checkpoints_lists_the_runs_pretrain_artifact(trained):
    art = trained["artifact"]
    expected = [str(art / n) for n in ("final", "step-00000012", "step-00000024")]
    for src in (trained["run_dir"], trained["run_dir"].parent, art):
        proc = run(["bash", REPO / "slurm" / "eval_checkpoints.sh", "--list", src], cwd=REPO)
        assert proc.stdout.split() == expected, (src, proc.stdout, proc.stderr)
