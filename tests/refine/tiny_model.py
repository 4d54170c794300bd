"""Helpers for the refine tests: a tiny random Llama built in a temp dir, small doc shards of real web text, stage
specs, and the vLLM environment's interpreter (tests that need it are marked ``vllm`` and skipped without it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxlab.core.stage import StageSpec
from proxlab.core.formats import DOC_SCHEMA, shard_name, write_parquet

REPO = Path(__file__).resolve().parents[2]
WEB = REPO.parent / "shared" / "data" / "web"
DCLM = WEB / "dclm_human_quality_annotated.jsonl"
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

needs_vllm = pytest.mark.skipif(not VLLM_PYTHON.exists(),
                                reason=f"the vLLM environment {VLLM_PYTHON} is absent (run `make venv-vllm`)")


def web_texts(n: int, max_chars: int | None = None) -> list[str]:
    """`n` real web documents (openwebtext sample + dolma CC), deterministic."""
    out: list[str] = []
    for name in ("dolma_cc_2019_30_html_extracted_sample.jsonl", "openwebtext_1000.jsonl"):
        with open(WEB / name) as f:
            for line in f:
                text = json.loads(line)["text"]
                if text.strip():
                    out.append(text[:max_chars] if max_chars else text)
                if len(out) == n:
                    return out
    return out


def build_tiny(directory: Path) -> Path:
    """The tiny random Llama of `proxlab:tiny-llama`, with a BPE trained on ~1 MB of web text (fast)."""
    from proxlab.models.tiny_llama import build_tiny_llama

    texts, total = [], 0
    for t in web_texts(400):
        texts.append(t)
        total += len(t)
        if total > 1_000_000:
            break
    return build_tiny_llama(directory, texts=texts)


def write_doc_shards(directory: Path, texts: list[str], per_shard: int, prefix: str = "doc") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(texts), per_shard):
        rows = [{"id": f"{prefix}-{s + i:04d}", "text": t, "source": "test", "meta": "{}"}
                for i, t in enumerate(texts[s: s + per_shard])]
        write_parquet(directory / shard_name("docs", s // per_shard), rows, DOC_SCHEMA)
    return directory


def generate_config(level: str, model: str, backend: str = "hf", **kw: Any) -> dict[str, Any]:
    """A GenerateConfig-shaped dict (as graph.py passes it), small sizes for CPU tests."""
    cfg = {"level": level, "backend": backend, "model": model, "tokenizer": None,
           "max_new_tokens": 16, "max_prompt_tokens": 256, "chunk_tokens": 256, "overlong_line": "own_chunk",
           "batch_size": 8, "dtype": "float32", "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9,
           "enforce_eager": True, "endpoint": None, "concurrency": 4, "max_retries": 3, "docs_per_call": 256,
           "env": "vllm" if backend == "vllm" else "main", "threads": 1}
    cfg.update(kw)
    return cfg


def backend_config(model: str, backend: str = "hf", **kw: Any) -> dict[str, Any]:
    """The GenerateConfig settings of `generate_config`, for building a backend directly (no stage level)."""
    return {k: v for k, v in generate_config("doc", model, backend, **kw).items() if k != "level"}


def apply_config(level: str, **kw: Any) -> dict[str, Any]:
    cfg = {"level": level, "mode": "compat", "drop_ratio": 0.05, "min_ratio": 0.0, "max_errors": 2, "min_words": 10}
    cfg.update(kw)
    return cfg


def make_spec(stage: str, out: Path, config: dict[str, Any], rank: int = 0, world: int = 1,
              **inputs: Path) -> StageSpec:
    return StageSpec(stage=stage, key="test", out_dir=str(out), config=config,
                     inputs={k: str(v) for k, v in inputs.items()}, logger={"backend": "none", "mode": "disabled"},
                     runtime={"rank": rank, "world_size": world, "accelerator": "cpu"})


def stage_env(threads: int = 1) -> dict[str, str]:
    """Environment for stage subprocesses: offline, one compute thread (2 contended cores), quiet vLLM."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:threads]))
    return env


def run_stage_subprocess(module: str, spec: StageSpec, python: str | Path = sys.executable, name: str = "spec.json",
                         timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    spec.out.mkdir(parents=True, exist_ok=True)
    path = spec.out / name
    spec.save(path)
    proc = subprocess.run([str(python), "-m", module, "--spec", str(path)], env=stage_env(), capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO))
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def read_programs(directory: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return [r for p in sorted(Path(directory).glob("programs-*.parquet")) for r in pq.read_table(p).to_pylist()]


_TINY: dict[str, Path] = {}


def tiny_model_path() -> Path:
    """The tiny model, built once per test process into a temporary directory."""
    if "path" not in _TINY:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="proxlab-tiny-"))
        atexit.register(shutil.rmtree, root, True)
        _TINY["path"] = build_tiny(root / "tiny-llama")
    return _TINY["path"]
