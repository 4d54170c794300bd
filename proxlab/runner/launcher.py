"""Launch one stage as a subprocess with the interpreter of its environment, and pass signals through to it.

Running each stage in its own process lets the refine stage run in the vLLM environment, keeps heavy imports (LitGPT,
lm-eval, vLLM) out of the orchestrator, and lets a preemption signal reach the stage that must checkpoint.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from proxlab.core.logs import get_logger
from proxlab.core.paths import HUB_OFFLINE, REPO_ROOT
from proxlab.core.stage import EXIT_REQUEUE
from proxlab.core.tracking import WANDB_SERVICE_ENV


FORWARDED_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)  # Slurm's pre-timeout signal, preemption, scancel

_preempted = False


def preempted() -> bool:
    """Whether a preemption signal reached this orchestrator: it should stop at the next safe point and exit 3."""
    return _preempted


def _note_preemption(signum, _frame) -> None:
    global _preempted
    _preempted = True
    get_logger("runner").warning(f"received {signal.Signals(signum).name}: stopping at the next safe point")


def install_preemption_handlers() -> None:
    """Between stages and while waiting, a preemption signal only sets a flag (the default action would kill us)."""
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, _note_preemption)


class StageFailed(RuntimeError):
    def __init__(self, stage: str, returncode: int, log_hint: str = ""):
        self.stage, self.returncode = stage, returncode
        super().__init__(f"stage {stage} failed with exit code {returncode}{log_hint}")


def interpreter(envs: dict[str, str], env_name: str) -> str:
    """The python of environment `env_name`; a relative path is taken from the repository root."""
    if env_name not in envs:
        raise KeyError(f"cluster.envs has no environment {env_name!r} (have {sorted(envs)})")
    path = Path(envs[env_name]).expanduser()
    if not path.is_absolute():
        path = REPO_ROOT / path
    if path.exists():
        return str(path)
    if env_name == "main":  # the orchestrator itself runs in the main environment
        return sys.executable
    raise FileNotFoundError(f"the {env_name!r} environment's interpreter {path} does not exist: "
                            f"run `make venv-{env_name}` or set cluster.envs.{env_name}=/path/to/python")


def available_interpreters(envs: dict[str, str]) -> dict[str, str]:
    """The interpreter of each environment that exists: a stage that starts a process of another environment itself
    (evaluate's vLLM generation path) finds it in its spec's runtime."""
    found = {}
    for name in envs:
        try:
            found[name] = interpreter(envs, name)
        except FileNotFoundError:
            continue
    return found


def _die_with_parent() -> None:
    """Child side: get SIGKILL when the orchestrator dies, so no orphaned stage keeps writing (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def stage_env(allow_hub: bool, gpus: list[str] | None = None) -> dict[str, str]:
    """What a stage process gets on top of this environment: the hub-offline variables unless the hub is allowed
    (a value the user exported wins either way), and only the GPUs `gpus` when given (proxlab.core.devices: this
    task's own, under SPMD)."""
    env = {} if allow_hub else {k: os.environ.get(k, v) for k, v in HUB_OFFLINE.items()}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def run_stage_process(stage: str, python: str, module: str, spec_path: Path, env: dict[str, str] | None = None) -> int:
    """Run `python -m module --spec spec_path`; forward SIGUSR1/SIGTERM/SIGINT to it; return its exit code."""
    cmd = [python, "-m", module, "--spec", str(spec_path)]
    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.pop(WANDB_SERVICE_ENV, None)  # the stage starts its own W&B service (see tracking.py)
    proc = subprocess.Popen(cmd, env=child_env, preexec_fn=_die_with_parent)
    previous = {}

    def forward(signum, frame):
        if signum in PREEMPTION_SIGNALS:
            _note_preemption(signum, frame)
        if proc.poll() is None:
            proc.send_signal(signum)

    for sig in FORWARDED_SIGNALS:
        previous[sig] = signal.signal(sig, forward)
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
