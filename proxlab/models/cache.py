"""Build a model directory once into the models cache, safely under concurrent ranks and interrupted builds.

A build goes to a temporary directory next to its target and is renamed into place with a completion marker, under a
file lock, so parallel processes build it once and a killed build leaves nothing that looks finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from proxlab.core.paths import file_lock, models_cache_dir

COMPLETE = ".proxlab_complete"


def build_once(name: str, build: Callable[[Path], Path], marker: str, cache_dir: Path | str | None = None) -> Path:
    """`<cache_dir>/<name>`, made by `build(scratch_dir) -> built_dir` the first time; `marker` records what was built
    (a version or a source checksum) in the completion file."""
    root = Path(cache_dir) if cache_dir is not None else models_cache_dir()
    target = root / name
    if (target / COMPLETE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{name}.lock"):
        if (target / COMPLETE).exists():
            return target
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-build-") as tmp:
            built = build(Path(tmp))
            (built / COMPLETE).write_text(marker)
            if target.exists():
                shutil.rmtree(target)
            os.replace(built, target)
    return target
