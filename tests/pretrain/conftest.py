"""Fixtures for the pretrain tests: a small real-text corpus as `docs-*.parquet`, a BPE tokenizer trained on it, and
the corpus tokenized into LitData windows -- built once per session in a temporary directory."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")

from proxlab.core.stage import StageSpec, run_stage  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("PROXLAB_DATA_DIR", REPO.parent / "shared" / "data"))
WEB = DATA_DIR / "web" / "openwebtext_1000.jsonl"
PYTHON = sys.executable


def texts(n: int) -> list[str]:
    """`n` real web documents when the shared data is there, else seeded pseudo-English."""
    out: list[str] = []
    if WEB.exists():
        with open(WEB) as f:
            for line in f:
                t = json.loads(line).get("text", "")
                if t.strip():
                    out.append(t)
                if len(out) == n:
                    return out
    rng = random.Random(len(out))
    words = "the of and to in is was for on that with as by at from his her are be this an which or".split()
    words += [f"w{i}" for i in range(300)]
    while len(out) < n:
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(50, 800))) + ".")
    return out


def write_docs(directory: Path, n_docs: int, docs_per_shard: int = 100) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    all_texts = texts(n_docs)
    for s in range(0, n_docs, docs_per_shard):
        chunk = all_texts[s: s + docs_per_shard]
        table = pa.table({"id": [f"doc-{s + i}" for i in range(len(chunk))], "text": chunk,
                          "source": ["test"] * len(chunk)})
        pq.write_table(table, directory / f"docs-{s // docs_per_shard:05d}.parquet")
    return directory


def stage_spec(stage: str, out: Path, config: dict, inputs: dict, **kw) -> StageSpec:
    out.mkdir(parents=True, exist_ok=True)
    spec = StageSpec(stage=stage, key=out.name, out_dir=str(out), config=config,
                     inputs={k: str(v) for k, v in inputs.items()}, **kw)
    spec.save(out / "spec.json")
    return spec


def start_stage(module: str, out: Path, log_name: str = "log.txt") -> subprocess.Popen:
    """`python -m <module> --spec <out>/spec.json` in its own process group (so a test can kill every rank)."""
    log = open(out / log_name, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([PYTHON, "-m", module, "--spec", str(out / "spec.json")], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=str(out))


def wait(proc: subprocess.Popen, timeout: float = 180) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def run_cli(module: str, out: Path, timeout: float = 180) -> int:
    return wait(start_stage(module, out), timeout)


def kill_when(proc: subprocess.Popen, ready, sig=signal.SIGKILL, group: bool = True, timeout: float = 180) -> bool:
    """Send `sig` (to the whole group) once `ready()` is true; False if the process ended first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ready():
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError("condition not reached")


def log_tail(out: Path, n: int = 3000) -> str:
    p = out / "log.txt"
    return p.read_text(errors="replace")[-n:] if p.exists() else ""


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """400 documents in 4 shards."""
    return write_docs(tmp_path_factory.mktemp("corpus") / "docs", 400)


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory, corpus) -> Path:
    from proxlab.pretrain import tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    run_stage(tokenizer.main, stage_spec("tokenizer", out, {"kind": "train_bpe", "vocab_size": 2048,
                                                            "train_docs": 300}, {"docs": corpus}))
    return out


@pytest.fixture(scope="session")
def tokenized(tmp_path_factory, corpus, bpe_dir) -> Path:
    """The corpus in 64+1-token windows (seq_len 64)."""
    from proxlab.pretrain import tokenize

    out = tmp_path_factory.mktemp("tokenized")
    run_stage(tokenize.main, stage_spec("tokenize", out, {"seq_len": 64}, {"docs": corpus, "tokenizer": bpe_dir},
                                        runtime={"settings": {"workers": 1}}))
    return out
