"""A tiny model pretrained for real by the tokenizer, tokenize and pretrain stages, in the layout `proxlab run` writes
(artifacts/<stage>/<key>/ and a run directory whose plan.json names them). Shared by the tests that need real
checkpoints (stock tools, the Slurm checkpoint-evaluation array); tests/ is on sys.path through tests/conftest.py."""

from __future__ import annotations

import json
from pathlib import Path

from proxlab.core.config import TrainConfig, split_settings
from proxlab.core.stage import StageSpec, run_stage
from proxlab.evaluate.tasks.data import resolve_data_dir

# vLLM's CPU attention needs head_dim 64: one head of 64.
MODEL = {"preset": "tiny", "n_layer": 2, "n_embd": 64, "n_head": 1, "n_query_groups": 1, "intermediate_size": 256,
         "block_size": 128}
TRAIN = {"recipe": "test", "seq_len": 64, "global_batch_size": 8, "micro_batch_size": 4, "max_steps": 24, "lr": 1e-2,
         "min_lr": 1e-3, "warmup_steps": 2, "schedule": "cosine", "save_interval": 12, "seed": 1234,
         "precision": "32-true", "log_interval": 6}


def web_texts(n: int, data_dir: Path | None = None) -> list[str]:
    """The first `n` non-empty texts of the shared web sample."""
    out = []
    with open(Path(data_dir or resolve_data_dir()) / "web" / "openwebtext_1000.jsonl") as f:
        for line in f:
            if (t := json.loads(line).get("text", "")).strip():
                out.append(t)
            if len(out) == n:
                break
    return out


def pretrain_tiny_run(root: Path, docs_n: int = 40) -> dict[str, Path]:
    """tokenizer -> tokenize -> pretrain (24 steps, checkpoints at 12 and 24) under `root`; returns the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from proxlab.pretrain import tokenize, tokenizer, train

    art = root / "artifacts"
    docs = art / "prepare" / "d0"
    docs.mkdir(parents=True)
    texts = web_texts(docs_n)
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(len(texts))], "text": texts,
                             "source": ["web"] * len(texts)}), docs / "docs-00000.parquet")

    def spec(stage: str, key: str, config: dict, inputs: dict, runtime: dict | None = None) -> StageSpec:
        out = art / stage / key
        out.mkdir(parents=True, exist_ok=True)
        return StageSpec(stage=stage, key=key, out_dir=str(out), config=config,
                         inputs={k: str(v) for k, v in inputs.items()}, runtime=runtime or {})

    tok = spec("tokenizer", "t0", {"kind": "train_bpe", "vocab_size": 512, "train_docs": docs_n}, {"docs": docs})
    run_stage(tokenizer.main, tok)
    data = spec("tokenize", "k0", {"seq_len": 64}, {"docs": docs, "tokenizer": tok.out},
                runtime={"settings": {"workers": 1}})
    run_stage(tokenize.main, data)
    hashed, settings = split_settings(TrainConfig, TRAIN)
    pre = spec("pretrain", "p0", {"model": MODEL, "train": hashed}, {"data": data.out, "tokenizer": tok.out},
               runtime={"devices": 1, "num_nodes": 1, "accelerator": "cpu", "settings": settings})
    run_stage(train.main, pre)
    run_dir = root / "runs" / "sweep" / "raw-tiny-abc"
    run_dir.mkdir(parents=True)
    plan = [{"stage": s.stage, "key": s.key, "out_dir": str(s.out),
             "inputs": {k: Path(v).name for k, v in s.inputs.items()}} for s in (tok, data, pre)]
    (run_dir / "plan.json").write_text(json.dumps(plan, indent=2))
    return {"root": root, "artifact": pre.out, "final": pre.out / "final", "tokenizer": tok.out, "run_dir": run_dir}
