"""Checkpoints: LitGPT's layout for the weights, plus a separate resume state, published atomically.

A checkpoint directory (`<out>/step-00000020/`, `<out>/final/`) holds

    lit_model.pth        {"model": state_dict}       -- LitGPT's format: `litgpt.GPT(Config.from_file(...))` loads it
    model_config.yaml    litgpt.Config                -- litgpt.utils.save_config
    tokenizer files      from the tokenizer stage (tokenizer.json, tokenizer_config.json, special_tokens_map.json),
                         made HF-safe by proxlab.models.hf_export (BOS template, no token_type_ids)
    config.json          the HF config of the same model (Llama / GPT-NeoX), dtype of the weights, the tokenizer's ids
    generation_config.json  bos/eos/pad token ids        -- with config.json, what `litgpt evaluate` needs
    trainer_state.json   {step, tokens, epoch, loss, ...}
    resume.pth           {"model", "optimizer"}: full states (step-* only: the resume state; FSDP needs the model
                         beside the optimizer to gather its state, so the weights are stored twice)
    rank-<r>.pth         {"data": loader state, "rng": python/numpy/torch RNG states} per rank   (step-* only)
    COMPLETE             written last, before the rename

Every rank writes into `<out>/.tmp-<name>/`; after a barrier rank 0 writes COMPLETE and renames the directory into
place, so a checkpoint directory without `.tmp-` is always whole. Resume picks the highest complete `step-*`.

So stock tools read every checkpoint as it is: `litgpt generate` / `litgpt chat` (LitGPT files), `litgpt evaluate`
(converts to HF next to the copied config.json), `litgpt convert_from_litgpt` (+ config.json: an HF directory),
`proxlab lm-eval --model litgpt`; `proxlab export CKPT OUT` writes a safetensors HF directory (vLLM, transformers).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

from proxlab.core.logs import get_logger
from proxlab.core.stage import atomic_write_text, read_jsonl

log = get_logger("pretrain")

COMPLETE = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def latest_checkpoint(out: Path) -> Path | None:
    """The complete `step-*` directory with the highest step, or None."""
    best: tuple[int, Path] | None = None
    for p in Path(out).glob("step-*"):
        m = _STEP_DIR.match(p.name)
        if m and (p / COMPLETE).is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None


def clean_partial(out: Path) -> None:
    """Remove `.tmp-*` directories that a killed run left (rank 0, before training)."""
    for p in Path(out).glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def save(fabric, out: Path, name: str, model, config, tokenizer_dir: Path, trainer_state: dict[str, Any],
         optimizer=None, data_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint `name` (all ranks call this); with `optimizer` it also holds the resume state."""
    from litgpt.utils import save_config

    final, tmp = out / name, out / f".tmp-{name}"
    if fabric.global_rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    fabric.barrier()
    fabric.save(tmp / "lit_model.pth", {"model": model})
    if optimizer is not None:
        fabric.save(tmp / "resume.pth", {"model": model, "optimizer": optimizer})
        import torch

        torch.save({"data": data_state, "rng": rng_state()}, tmp / f"rank-{fabric.global_rank}.pth")
    if fabric.global_rank == 0:
        save_config(config, tmp)
        write_hf_side(config, Path(tokenizer_dir), tmp, _weights_dtype(model))
        (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "world_size": fabric.world_size},
                                                           indent=2, sort_keys=True))
    fabric.barrier()
    if fabric.global_rank == 0:
        (tmp / COMPLETE).write_text("")
        _fsync_dir(tmp)
        if final.exists():  # e.g. `final/` again after a crash between saving it and marking the stage complete
            old = out / f".tmp-old-{name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    fabric.barrier()
    return final


def _weights_dtype(model) -> str:
    param = next(iter(model.parameters()), None)
    return "float32" if param is None else str(param.dtype).removeprefix("torch.")


def write_hf_side(config, tokenizer_dir: Path, ckpt: Path, dtype: str = "float32") -> None:
    """Tokenizer files, `config.json` and `generation_config.json` into checkpoint directory `ckpt` (rank 0).

    An architecture with no HF config here (not Llama-style or GPT-NeoX) keeps the tokenizer files and gets a warning
    instead of config.json; any other failure falls back to copying the tokenizer files as they are (litgpt's
    copy_config_files), with the error printed: the checkpoint stays a LitGPT checkpoint and training goes on (the
    other ranks wait at the barrier)."""
    from proxlab.models.hf_export import write_hf_files

    name = ckpt.name.removeprefix(".tmp-")
    try:
        write_hf_files(config, tokenizer_dir, ckpt, dtype=dtype)
    except NotImplementedError as e:
        log.info(f"checkpoint {name}: no HF config.json ({e})")
    except Exception as e:  # noqa: BLE001  never lose a checkpoint over its HF side files
        from litgpt.utils import copy_config_files

        log.warning(f"checkpoint {name}: HF files not written ({type(e).__name__}: {e}); "
                    "tokenizer files copied as they are")
        copy_config_files(tokenizer_dir, ckpt)


def load(fabric, ckpt: Path, model, optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore model and optimizer (all ranks) and this rank's RNG; return (trainer_state, data_state)."""
    import torch

    state = json.loads((ckpt / "trainer_state.json").read_text())
    if state.get("world_size") != fabric.world_size:
        raise RuntimeError(f"{ckpt} was written by {state.get('world_size')} rank(s), this run has "
                           f"{fabric.world_size}: the data position cannot be restored exactly")
    fabric.load(ckpt / "resume.pth", {"model": model, "optimizer": optimizer})
    rank_state = torch.load(ckpt / f"rank-{fabric.global_rank}.pth", weights_only=False)
    set_rng_state(rank_state["rng"])
    return state, rank_state["data"]


def prune(out: Path, keep: int | None) -> None:
    """Keep only the newest `keep` complete step-* checkpoints (rank 0; None keeps all)."""
    if not keep:
        return
    steps = sorted((p for p in Path(out).glob("step-*") if _STEP_DIR.match(p.name)), key=lambda p: p.name)
    for p in steps[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics.jsonl records past the resumed step: they belong to the interrupted attempt."""
    rows = read_jsonl(path)
    kept = [r for r in rows if r.get("step") is None or r["step"] <= step]
    if len(kept) != len(rows):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
