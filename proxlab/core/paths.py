"""Where things are: the repository, the shared data directory (env-overridable), artifacts and runs."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR_ENV = "PROXLAB_DATA_DIR"
# The variables that keep huggingface_hub, datasets and transformers off the network.
HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def data_dir(configured: str | None = None) -> Path:
    """paths.data_dir if set, else $PROXLAB_DATA_DIR, else <repo>/../shared/data (the workspace's read-only data)."""
    path = Path(configured or os.environ.get(DATA_DIR_ENV) or REPO_ROOT.parent / "shared" / "data")
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} does not exist: set paths.data_dir=... or ${DATA_DIR_ENV}")
    return path.resolve()


def under_data_dir(path: str | None, default: str, configured_data_dir: str | None = None) -> Path:
    """A path as given if absolute or existing, else relative to the data directory; `default` when None."""
    if path is None:
        return data_dir(configured_data_dir) / default
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    return data_dir(configured_data_dir) / p


def tokenizer_candidates(name: str, configured_data_dir: str | None = None) -> tuple[Path | None, list[Path]]:
    """(the directory holding tokenizer.json, or None; the places looked at) for a tokenizer named as an absolute
    directory, or as a name under <data_dir>/tokenizers, else a directory relative to here."""
    p = Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [data_dir(configured_data_dir) / "tokenizers" / name, p]
    return next((c for c in candidates if (c / "tokenizer.json").is_file()), None), candidates


def models_cache_dir() -> Path:
    """Where built or converted local models live: $PROXLAB_CACHE_DIR/models, else <repo>/.cache/models (ignored)."""
    root = os.environ.get("PROXLAB_CACHE_DIR")
    return (Path(root) if root else REPO_ROOT / ".cache") / "models"


def files_identity(paths: list[Path]) -> list[list]:
    """[resolved path, size, mtime in ns] of each file: what a stage reads from outside the artifact store, for its
    content key. Size and mtime rather than a content hash: stat-ing a paper-scale pool's 11,760 files takes seconds
    where hashing its terabytes would take hours; any edit, copy or replacement changes mtime (or size)."""
    out = []
    for p in sorted(Path(p).resolve() for p in paths):
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def tree_files(path: Path) -> list[Path]:
    """Every file under a directory (or the file itself)."""
    path = Path(path)
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


@contextmanager
def file_lock(path: Path):
    """An exclusive flock on `path` (created), so concurrent processes build a cached thing once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
