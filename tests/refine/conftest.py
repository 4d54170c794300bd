"""Fixtures for the refine tests: shared data location, tokenizers, web documents."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """$PROXLAB_DATA_DIR, else the shared data next to the checkout (never copied into the repo)."""
    return Path(os.environ.get("PROXLAB_DATA_DIR", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: large fuzz runs of the program executor (PROXLAB_FUZZ_N programs)")


@pytest.fixture(scope="session")
def llama_dir() -> Path:
    path = data_dir() / "tokenizers" / "llama_hf"
    if not (path / "tokenizer.json").exists():
        pytest.skip(f"Llama-2 tokenizer not found under {path}")
    return path


@pytest.fixture(scope="session")
def llama_tokenizer(llama_dir):
    """The paper's Llama-2 tokenizer as a transformers tokenizer (fast)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(llama_dir))


@pytest.fixture(scope="session")
def llama_raw_tokenizer(llama_dir):
    """The same tokenizer as a bare ``tokenizers.Tokenizer``."""
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_file(str(llama_dir / "tokenizer.json"))


def load_web_texts(per_file: int | None = None) -> list[str]:
    """Non-empty ``text`` fields of the shared web corpus, at most ``per_file`` from each file."""
    texts: list[str] = []
    for path in sorted((data_dir() / "web").glob("*.jsonl")):
        taken = 0
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line).get("text") or ""
                if text.strip():
                    texts.append(text)
                    taken += 1
                    if per_file and taken >= per_file:
                        break
    return texts


@pytest.fixture(scope="session")
def shared_web_texts() -> list[str]:
    texts = load_web_texts(per_file=40)
    if not texts:
        pytest.skip("no web documents under the shared data directory")
    return texts
