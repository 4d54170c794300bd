"""Where the evaluation data lives, and a generic lm-eval ``custom_dataset`` loader for local JSONL files.

Every task YAML shipped under ``proxlab/evaluate/tasks/<suite>/`` names its files relative to the data directory and
a *builder* (a function that turns one raw row into an lm-eval doc). The data directory itself is filled in at run
time: ``TaskManager(metadata={"data_dir": ...})`` passes it to every task, and lm-eval hands task metadata plus
``dataset_kwargs`` to the ``custom_dataset`` function (metadata ``task_files``, from ``eval.task_files``, points a
task's scored split at another file). Without it (e.g. the plain ``lm_eval --include_path`` CLI) the
directory is ``$PROXLAB_DATA_DIR``, else ``<repo>/../shared/data``. Data is read in place, never copied.
"""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping

from proxlab.core.paths import DATA_DIR_ENV, REPO_ROOT


class MissingTaskData(FileNotFoundError):
    """A task's dataset file is not in the data directory."""


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: the argument, else ``$PROXLAB_DATA_DIR``, else ``<repo>/../shared/data``."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


@functools.lru_cache(maxsize=64)
def _read_jsonl_cached(path: str, mtime: float) -> tuple[dict[str, Any], ...]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from e
    return tuple(rows)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (parsed once per process and cached; callers get fresh shallow copies)."""
    path = Path(path)
    if not path.is_file():
        raise MissingTaskData(f"evaluation data file not found: {path}")
    return [dict(r) for r in _read_jsonl_cached(str(path), path.stat().st_mtime)]


def lighteval_subset(docs: list[Any], max_samples: int | None, seed: int = 42) -> list[Any]:
    """lighteval's ``max_samples``: shuffle all docs with ``random.Random`` seeded ``seed``, keep the first N."""
    docs = list(docs)
    rnd = random.Random()
    rnd.seed(seed)
    rnd.shuffle(docs)
    return docs if max_samples is None else docs[:max_samples]


def build_dataset(builders: dict[str, Callable[..., dict[str, Any] | None]], *, builder: str,
                  files: dict[str, str], data_dir: str | None = None, max_samples: int | None = None,
                  shuffle_seed: int | None = None, subject: str | None = None, shuffle_splits: list[str] | None = None,
                  task: str | None = None, task_files: Mapping[str, str] | None = None, **_: Any):
    """Build a ``datasets.DatasetDict`` from local JSONL files (the body of every task's ``custom_dataset``).

    ``builders[builder](row, index)`` returns the doc for one row (or None to drop it); ``subject`` keeps only rows
    whose ``subject`` field matches (MMLU); ``shuffle_seed`` + ``max_samples`` apply lighteval's subset rule to the
    splits in ``shuffle_splits`` (default: ``test``). ``task_files`` (``eval.task_files``, passed as task metadata)
    replaces the ``test`` file of the task named ``task`` (the YAML's ``dataset_kwargs.task``).
    """
    import datasets

    if builder not in builders:
        raise KeyError(f"unknown doc builder {builder!r}; have {sorted(builders)}")
    fn = builders[builder]
    root = resolve_data_dir(data_dir)
    if task is not None and task_files and task in task_files and "test" in files:
        files = {**files, "test": str(task_files[task])}
    out = {}
    for split, rel in files.items():
        rows = read_jsonl(root / rel)
        docs = []
        for i, row in enumerate(rows):
            if subject is not None and row.get("subject", row.get("type")) != subject:
                continue
            doc = fn(row, i)
            if doc is not None:
                docs.append(doc)
        if shuffle_seed is not None and split in (shuffle_splits or ["test"]):
            docs = lighteval_subset(docs, max_samples, shuffle_seed)
        elif max_samples is not None and split in (shuffle_splits or ["test"]):
            docs = docs[:max_samples]
        if not docs:
            raise MissingTaskData(f"{root / rel}: no documents for builder={builder!r} subject={subject!r}")
        out[split] = datasets.Dataset.from_list(docs)
    return datasets.DatasetDict(out)


def raw_json(row: dict[str, Any]) -> str:
    """The raw row as a JSON string (kept in every doc for inspection without Arrow schema trouble)."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True)
