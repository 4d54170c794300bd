"""Submit a proxlab experiment to Slurm: the sbatch command line for `slurm/run.sh` built from `cluster.*` config.

`proxlab submit exp=... [overrides]` calls :func:`submit` with the resolved ``cluster`` config and the user's Hydra
overrides. Options given here override the ``#SBATCH`` defaults of the script (1 node x 8 GPUs); the overrides are
passed through to every rank's ``python -m proxlab.runner.run``. The setup lines (``cluster.setup``) and the main
environment's interpreter (``cluster.envs.main``) reach the job through its environment (``PROXLAB_SETUP``,
``PROXLAB_PYTHON``: sbatch exports the submitter's environment by default). `proxlab submit -m` submits a sweep
(proxlab.runner.sweep): one such job per experiment, and a report job after them (:func:`build_report_command`).
docs/slurm.md has the whole picture.

Standard library only: the vLLM environment and tests import it without Hydra.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

DEFAULT_SCRIPT = "slurm/run.sh"
REPORT_SCRIPT = "slurm/report.sh"
LOG_DIR = "logs/slurm"  # where the script's #SBATCH --output points; Slurm does not create it

_JOB_NAME_RE = re.compile(r"[^A-Za-z0-9_.+-]+")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """cfg[key] for a dict, an OmegaConf DictConfig or a dataclass alike."""
    if cfg is None:
        return default
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        try:
            value = cfg.get(key, default)
        except Exception:  # a DictConfig with a missing mandatory value
            value = default
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def _positive_int(cfg: Any, key: str, default: int) -> int:
    value = _get(cfg, key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"cluster.{key} must be an integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"cluster.{key} must be >= 1, got {number}")
    return number


def _job_name(overrides: Sequence[str]) -> str:
    """proxlab-<exp> from an `exp=NAME` override (the %x in the log file name), else proxlab."""
    for item in reversed(list(overrides)):
        key, sep, value = item.lstrip("+").partition("=")
        if sep and key == "exp" and value:
            return "proxlab-" + _JOB_NAME_RE.sub("_", value)[:60]
    return "proxlab"


def build_sbatch_command(cluster_cfg: Mapping[str, Any], overrides: Sequence[str],
                         script: str = DEFAULT_SCRIPT, options: Sequence[str] = (),
                         job_name: Optional[str] = None) -> list[str]:
    """The sbatch argv that runs `script` with `overrides` on the resources of `cluster_cfg` (a `cluster` config).

    nodes = cluster.num_nodes; tasks per node = cluster.devices (Fabric needs both to match the allocation); GPUs per
    node = devices when cluster.accelerator is gpu or auto, 0 when cpu (cancelling the script's default of 8);
    partition, account, qos, cpus-per-task, time and mem when set; each cluster.sbatch_extra item as given
    ("--exclusive", "--constraint=a100"; a bare "exclusive" gets its "--"); then `options` (a sweep's
    `--dependency=...`). The job is named `job_name`, else proxlab-<exp>.
    """
    nodes = _positive_int(cluster_cfg, "num_nodes", 1)
    devices = _positive_int(cluster_cfg, "devices", 1)
    accelerator = str(_get(cluster_cfg, "accelerator", "gpu")).lower()
    if accelerator not in ("gpu", "cpu", "auto"):
        raise ValueError(f"cluster.accelerator must be gpu, cpu or auto, got {accelerator!r}")

    cmd = ["sbatch", "--parsable", f"--job-name={job_name or _job_name(overrides)}", *_placement(cluster_cfg)]
    cmd += [f"--nodes={nodes}", f"--ntasks-per-node={devices}"]
    cmd.append(f"--gpus-per-node={0 if accelerator == 'cpu' else devices}")
    cpus = _get(cluster_cfg, "cpus_per_task")
    if cpus not in (None, ""):
        cmd.append(f"--cpus-per-task={_positive_int(cluster_cfg, 'cpus_per_task', 1)}")
    for key in ("time", "mem"):
        value = _get(cluster_cfg, key)
        if value not in (None, ""):
            cmd.append(f"--{key}={value}")
    for item in _get(cluster_cfg, "sbatch_extra", []) or []:
        item = str(item).strip()
        if item:
            cmd.append(item if item.startswith("-") else "--" + item)
    cmd += [str(o) for o in options]
    cmd.append(script)
    cmd += [str(o) for o in overrides]
    return cmd


def _placement(cluster_cfg: Mapping[str, Any]) -> list[str]:
    """--partition, --account, --qos where the cluster config sets them."""
    return [f"--{key}={value}" for key in ("partition", "account", "qos")
            if (value := _get(cluster_cfg, key)) not in (None, "")]


def build_report_command(cluster_cfg: Mapping[str, Any], sweep: str, runs_dir: str, after: str) -> list[str]:
    """The sbatch argv of a sweep's report job: `slurm/report.sh sweep=NAME runs_dir=DIR` (one CPU, its #SBATCH
    defaults) on the experiments' partition/account/qos, once every job in `after` ("101:102:103") has ended, however
    it ended (afterany: a failed experiment is a row of the report too)."""
    return ["sbatch", "--parsable", f"--job-name=proxlab-report-{_JOB_NAME_RE.sub('_', sweep)[:60]}",
            *_placement(cluster_cfg), f"--dependency=afterany:{after}", REPORT_SCRIPT, f"sweep={sweep}",
            f"runs_dir={runs_dir}"]


def sbatch_env(cluster_cfg: Mapping[str, Any], base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment to run sbatch in: `base` (default os.environ) plus PROXLAB_SETUP / PROXLAB_PYTHON from the config.

    SLURM_* variables of an enclosing job (submitting from inside salloc) are dropped, SLURM_CONF excepted: the job
    would inherit them, and its srun would read stale sizes. SBATCH_* (the user's defaults) are kept.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    setup = [str(line) for line in (_get(cluster_cfg, "setup", []) or [])]
    if setup:
        env["PROXLAB_SETUP"] = "\n".join(setup)
    envs = _get(cluster_cfg, "envs", {}) or {}
    main_python = _get(envs, "main")
    if main_python and "PROXLAB_PYTHON" not in env:
        env["PROXLAB_PYTHON"] = str(main_python)
    return env


def parse_job_id(stdout: str) -> str:
    """The job id from `sbatch --parsable` output ("123" or "123;cluster")."""
    lines = [line.strip() for line in stdout.strip().splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("sbatch printed no job id")
    job_id = lines[-1].split(";", 1)[0]
    if not job_id.isdigit():
        raise RuntimeError(f"unexpected sbatch output: {stdout.strip()!r}")
    return job_id


def submit(cluster_cfg: Mapping[str, Any], overrides: Sequence[str], dry_run: bool = False,
           script: str = DEFAULT_SCRIPT, cwd: Optional[str] = None) -> str:
    """Submit `script` with `overrides` via sbatch; print the command; return the job id ("" when dry_run).

    Runs in `cwd` (default: the current directory, which must be the repository root: the script and its log
    directory are relative to it), creating logs/slurm there first.
    """
    return run_sbatch(build_sbatch_command(cluster_cfg, overrides, script=script), cluster_cfg, dry_run, cwd)


def run_sbatch(cmd: list[str], cluster_cfg: Mapping[str, Any], dry_run: bool = False,
               cwd: Optional[str] = None) -> str:
    """Run an sbatch argv (build_sbatch_command, build_report_command) as `submit` describes; return the job id."""
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    if dry_run:
        return ""
    script = next(a for a in cmd[1:] if not a.startswith("-"))
    name = next(a.split("=", 1)[1] for a in cmd if a.startswith("--job-name="))
    workdir = Path(cwd or os.getcwd())
    if not (workdir / script).is_file():
        raise FileNotFoundError(f"{script} not found under {workdir}: run from the repository root")
    if shutil.which("sbatch") is None:
        raise RuntimeError("sbatch not found on PATH: submit from a Slurm login node")
    (workdir / LOG_DIR).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, cwd=workdir, env=sbatch_env(cluster_cfg), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    job_id = parse_job_id(proc.stdout)
    print(f"submitted job {job_id}; log: {LOG_DIR}/{name}-{job_id}.out", file=sys.stderr, flush=True)
    return job_id
