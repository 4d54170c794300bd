"""Throughput of proxlab's pretrain stage vs a bare `litgpt pretrain` on the same tiny model, data and batch (CPU).

    .venv/bin/python benchmarks/bench_pretrain.py [--steps 40] [--repeats 2] [--work DIR]

Both read the same LitData windows (made by proxlab's tokenize stage) with the same model config, batch, optimizer,
precision (32-true), seed and thread count, each in its own process. `litgpt pretrain` always wraps the model in
torch.compile, so proxlab runs twice: eager (its CPU default) and with `compile` on (the like-for-like loop).

Throughput is tokens over wall time per log interval (every LOG_EVERY steps), from each run's own log (proxlab's
metrics.jsonl; LitGPT's CSV `time`/`tokens` columns), leaving out the first interval (start-up, compilation). On a
shared machine co-tenants make single intervals swing several-fold, so runs are interleaved and two statistics over
all intervals of all repeats are printed: the median, and the best interval (the least disturbed one, the usual
estimate of undisturbed speed). Target: proxlab / litgpt >= 0.95.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEQ, MICRO, LOG_EVERY = 256, 8, 2
OPT = dict(lr=3e-3, weight_decay=0.1, betas=[0.9, 0.95], eps=1e-8)


def corpus_texts(n: int) -> list[str]:
    web = Path(os.environ.get("PROXLAB_DATA_DIR", REPO.parent / "shared" / "data")) / "web" / "openwebtext_1000.jsonl"
    if not web.exists():
        sys.exit(f"benchmark corpus not found: {web} (set PROXLAB_DATA_DIR)")
    texts = [json.loads(line)["text"] for line in web.read_text().splitlines() if line.strip()]
    return texts[:n]


def prepare(work: Path) -> tuple[Path, Path]:
    """docs parquet -> BPE tokenizer -> LitData windows, with proxlab's own stages."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from proxlab.core.stage import StageSpec, run_stage
    from proxlab.pretrain import tokenize, tokenizer

    docs = work / "docs"
    if not docs.exists():
        docs.mkdir(parents=True)
        texts = corpus_texts(600)
        pq.write_table(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts,
                                 "source": ["owt"] * len(texts)}), docs / "docs-00000.parquet")
    tok, data = work / "tokenizer", work / "data"
    run_stage(tokenizer.main, StageSpec("tokenizer", "bench", str(tok), {"kind": "train_bpe", "vocab_size": 4096,
                                                                         "train_docs": 600}, {"docs": str(docs)}))
    run_stage(tokenize.main, StageSpec("tokenize", "bench", str(data), {"seq_len": SEQ},
                                       {"docs": str(docs), "tokenizer": str(tok)},
                                       runtime={"settings": {"workers": 1}}))
    return tok, data


def run_proxlab(work: Path, tok: Path, data: Path, steps: int, compile_: bool, tag: str,
                deterministic: bool = True) -> dict:
    from proxlab.core.stage import StageSpec

    out = work / f"proxlab-{tag}"
    train = {"recipe": "bench", "seq_len": SEQ, "global_batch_size": MICRO, "micro_batch_size": MICRO,
             "max_steps": steps, "lr": OPT["lr"], "min_lr": 3e-4, "warmup_steps": 5, "schedule": "cosine",
             "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0,
             "precision": "32-true", "seed": 1234, "save_interval": 10 ** 9}
    # As the orchestrator writes it: hashed TrainConfig fields in config, runtime ones in runtime["settings"].
    settings = {"log_interval": LOG_EVERY, "compile": compile_, "deterministic": deterministic}
    spec = StageSpec("pretrain", tag, str(out), {"model": {"preset": "tiny"}, "train": train},
                     {"data": str(data), "tokenizer": str(tok)},
                     runtime={"devices": 1, "num_nodes": 1, "accelerator": "cpu", "settings": settings})
    out.mkdir(parents=True)
    spec.save(out / "spec.json")
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "proxlab.pretrain.train", "--spec", str(out / "spec.json")], out / "log.txt")
    wall = time.perf_counter() - t0
    rows = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "step_time_s" in r and not r.get("summary")]
    return {"intervals": [r["tokens_per_s"] for r in rows[1:]], "wall_s": wall,
            "final_loss": json.loads((out / "train_summary.json").read_text())["final_loss"]}


def run_litgpt(work: Path, tok: Path, data: Path, steps: int, tag: str) -> dict:
    import yaml

    from proxlab.core.config import ModelConfig
    from proxlab.pretrain.model import build_config

    out = work / f"litgpt-{tag}"
    cfg = build_config(ModelConfig(preset="tiny"), tok)  # the model the proxlab runs build
    config = {
        "model_name": cfg.name, "model_config": asdict(cfg), "out_dir": str(out), "precision": "32-true",
        "data": {"class_path": "litgpt.data.LitData",
                 "init_args": {"data_path": str(data), "split_names": ["train", "val"], "num_workers": 0,
                               "seed": 1234}},
        "train": {"save_interval": 10 ** 9, "log_interval": LOG_EVERY, "global_batch_size": MICRO,
                  "micro_batch_size": MICRO, "max_tokens": steps * MICRO * SEQ, "max_seq_length": SEQ,
                  "lr_warmup_steps": 5, "min_lr": 3e-4, "max_norm": 1.0, "tie_embeddings": False},
        "eval": {"interval": 10 ** 9, "max_iters": 1, "initial_validation": False, "final_validation": False},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": OPT},
        "devices": 1, "num_nodes": 1, "tokenizer_dir": str(tok), "logger_name": "csv", "seed": 1234,
    }
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    litgpt = Path(sys.executable).with_name("litgpt")
    t0 = time.perf_counter()
    _run([str(litgpt), "pretrain", "--config", str(out / "config.yaml")], out / "log.txt")
    wall = time.perf_counter() - t0
    (metrics,) = out.glob("logs/csv/version_*/metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("time") and r.get("tokens")]
    intervals = [(float(b["tokens"]) - float(a["tokens"])) / (float(b["time"]) - float(a["time"]))
                 for a, b in zip(rows, rows[1:])]
    return {"intervals": intervals, "wall_s": wall, "final_loss": float(rows[-1]["loss"])}


def _run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LITDATA_DISABLE_VERSION_CHECK": "1"}
    with open(log, "w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent, env=env).returncode
    if code != 0:
        sys.exit(f"{cmd[0]} failed ({code}); see {log}:\n{log.read_text()[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a new temp dir)")
    ap.add_argument("--no-deterministic", action="store_true",
                    help="run proxlab without torch.use_deterministic_algorithms (its CPU default; litgpt has none)")
    ap.add_argument("--skip-eager", action="store_true", help="only the like-for-like compiled comparison")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    work.mkdir(parents=True, exist_ok=True)
    tok, data = prepare(work)
    results: dict[str, list[dict]] = {"proxlab eager": [], "proxlab compiled": [], "litgpt pretrain": []}
    if args.skip_eager:
        del results["proxlab eager"]
    det = not args.no_deterministic
    stamp = time.strftime("%H%M%S")
    for i in range(args.repeats):
        results["litgpt pretrain"].append(run_litgpt(work, tok, data, args.steps, f"{stamp}-{i}"))
        results["proxlab compiled"].append(run_proxlab(work, tok, data, args.steps, True, f"c{stamp}-{i}", det))
        if "proxlab eager" in results:
            results["proxlab eager"].append(run_proxlab(work, tok, data, args.steps, False, f"e{stamp}-{i}", det))
        for name, runs in results.items():
            r = runs[-1]
            print(f"  run {i + 1}: {name:<17} median {statistics.median(r['intervals']):>7,.0f} tok/s, best "
                  f"{max(r['intervals']):>7,.0f} tok/s (wall {r['wall_s']:.0f} s, final loss {r['final_loss']:.4f})",
                  flush=True)
    stats = {name: {"median": statistics.median(x for r in runs for x in r["intervals"]),
                    "best": max(x for r in runs for x in r["intervals"])} for name, runs in results.items()}
    base = stats["litgpt pretrain"]
    print(f"\ntiny preset (4 layers, hidden 128), seq {SEQ}, batch {MICRO}, {args.steps} steps, 32-true, "
          f"proxlab deterministic={det}, "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}); {args.repeats} interleaved repeats, "
          f"tokens/s per {LOG_EVERY}-step interval")
    for name, st in stats.items():
        print(f"  {name:<17} median {st['median']:>7,.0f} tok/s (ratio {st['median'] / base['median']:.3f})   "
              f"best {st['best']:>7,.0f} tok/s (ratio {st['best'] / base['best']:.3f})")
    summary = {"tokens_per_s": stats, "runs": results, "steps": args.steps, "deterministic": det,
               "ratios": {name: {k: st[k] / base[k] for k in base} for name, st in stats.items()}}
    (work / "bench_pretrain.json").write_text(json.dumps(summary, indent=2))
    print(f"  results: {work / 'bench_pretrain.json'}")


if __name__ == "__main__":
    main()
