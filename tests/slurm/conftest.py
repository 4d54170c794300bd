"""Fixtures for tests against the one-host Slurm test cluster (slurm/testcluster/up.sh, down.sh).

`slurm_cluster` (session scope) brings the cluster up once, when running as root on a machine where the Debian
packages are installed or installable, else skips with the reason; it tears the cluster down at the end of the
session (set PROXLAB_SLURM_KEEP=1 to leave it up for debugging). Tests using it are marked `slurm`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTCLUSTER = REPO / "slurm" / "testcluster"
EXIT_UNAVAILABLE = 20  # up.sh: Slurm cannot be had here
SLURM_CONF = "/etc/slurm/slurm.conf"

# Terminal job states, as a whitelist: transient ones (COMPLETING, SIGNALING, REQUEUED, ...) are not final.
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
            "PREEMPTED"}


def _clean_env(extra: Optional[dict] = None) -> dict:
    """This process's environment without the SLURM_* of any enclosing job, pointed at the test cluster's config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env["SLURM_CONF"] = SLURM_CONF
    env.update(extra or {})
    return env


def parse_record(line: str) -> dict:
    """One `scontrol show job -o` line as a dict (values are the text up to the next space)."""
    record = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep and key not in record:
            record[key] = value
    return record


class SlurmCluster:
    """Thin helpers over the Slurm client commands, all with deadlines."""

    repo = REPO

    def env(self, **extra: str) -> dict:
        return _clean_env(extra)

    def run(self, *args: str, check: bool = True, timeout: float = 60, env: Optional[dict] = None,
            cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              env=env or self.env(), cwd=cwd)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} -> exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sbatch(self, *args: str, cwd: Optional[Path] = None, env: Optional[dict] = None) -> str:
        """Submit (`sbatch --parsable ARGS`) and return the job id."""
        proc = self.run("sbatch", "--parsable", *args, cwd=cwd, env=env)
        return proc.stdout.strip().splitlines()[-1].split(";")[0]

    def records(self, job_id: str) -> list[dict]:
        """scontrol's records of a job (one per array task once the array is split); [] when unknown."""
        proc = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        if proc.returncode != 0:
            return []
        return [parse_record(line) for line in proc.stdout.splitlines() if line.strip()]

    def job(self, job_id: str) -> dict:
        """The record of a job, or of one array task named `<array id>_<task id>`."""
        for record in self.records(job_id):
            if str(job_id) in (record.get("JobId"), f"{record.get('ArrayJobId')}_{record.get('ArrayTaskId')}"):
                return record
        return {}

    def state(self, job_id: str) -> str:
        return self.job(job_id).get("JobState", "")

    def wait(self, job_id: str, timeout: float = 60, until=None) -> dict:
        """Poll until the job reaches a terminal state (or `until(record)` is true); return its record."""
        deadline = time.monotonic() + timeout
        record: dict = {}
        while time.monotonic() < deadline:
            record = self.job(job_id)
            if until is not None and record and until(record):
                return record
            if until is None and record.get("JobState") in TERMINAL:
                return record
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not done after {timeout}s: {record}")

    def wait_running(self, job_id: str, timeout: float = 30) -> dict:
        return self.wait(job_id, timeout, until=lambda r: r.get("JobState") == "RUNNING")

    def wait_array(self, array_id: str, timeout: float = 60) -> dict[int, dict]:
        """Poll until no task of the array is queued or running; return {task id: record}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.run("squeue", "-h", "-r", "-j", str(array_id), "-o", "%i", check=False)
            if proc.returncode == 0 and not proc.stdout.strip():
                tasks = {}
                for record in self.records(array_id):
                    task = record.get("ArrayTaskId", "")
                    if task.isdigit():
                        tasks[int(task)] = record
                if tasks and all(r.get("JobState") in TERMINAL for r in tasks.values()):
                    return tasks
            time.sleep(0.1)
        raise AssertionError(f"array {array_id} not done after {timeout}s: {self.records(array_id)}")

    @staticmethod
    def wait_for_text(path: Path, text: str, timeout: float = 30, count: int = 1) -> str:
        """Poll until `text` occurs `count` times in the file; return its content."""
        deadline = time.monotonic() + timeout
        content = ""
        while time.monotonic() < deadline:
            content = path.read_text() if path.exists() else ""
            if content.count(text) >= count:
                return content
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in {path} after {timeout}s:\n{content}")


LOCK_FILE = "/run/lock/proxlab-slurm-tests.lock"
LOCK_WAIT_S = 900


def _lock_session():
    """Hold an exclusive lock for the whole session: two pytest sessions on one machine would up/down the same cluster
    under each other. Waits up to LOCK_WAIT_S for the other session, then skips."""
    import fcntl

    Path(LOCK_FILE).parent.mkdir(parents=True, exist_ok=True)
    handle = open(LOCK_FILE, "w")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                pytest.skip(f"another test session has held the Slurm test cluster ({LOCK_FILE}) for {LOCK_WAIT_S} s")
            time.sleep(1)


@pytest.fixture(scope="session")
def slurm_cluster():
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("Slurm test cluster needs root (it installs packages and starts munged/slurmctld/slurmd)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm test cluster needs Debian's slurmctld/slurmd packages (no slurmctld, no apt-get here)")
    lock = _lock_session()
    try:
        yield from _cluster_up_down()
    finally:
        lock.close()


def _cluster_up_down():
    try:
        proc = subprocess.run(["bash", str(TESTCLUSTER / "up.sh")], capture_output=True, text=True, timeout=900,
                              env=_clean_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("slurm/testcluster/up.sh did not finish in 900 s")
    if proc.returncode == EXIT_UNAVAILABLE:
        pytest.skip(f"Slurm test cluster unavailable: {proc.stderr.strip()[-500:]}")
    if proc.returncode != 0:
        pytest.fail(f"slurm/testcluster/up.sh failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    print(proc.stderr.strip())
    try:
        yield SlurmCluster()
    finally:
        if os.environ.get("PROXLAB_SLURM_KEEP") != "1":
            subprocess.run(["bash", str(TESTCLUSTER / "down.sh")], capture_output=True, text=True, timeout=120,
                           env=_clean_env(), stdin=subprocess.DEVNULL)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A submit directory that looks like the repository to the scripts: slurm/ links to the real one, logs/slurm
    exists. Jobs' logs and files land here, not in the checkout."""
    (tmp_path / "slurm").symlink_to(REPO / "slurm", target_is_directory=True)
    (tmp_path / "logs" / "slurm").mkdir(parents=True)
    return tmp_path


FAKE_ORCHESTRATOR = r'''#!/usr/bin/env python3
"""Stands in for `python -m proxlab.runner.run ...` under srun: prints what it sees, behaves per FAKE_MODE."""
import json, os, signal, sys, time
env = os.environ
restart = int(env.get("SLURM_RESTART_COUNT") or 0)
mode = env.get("FAKE_MODE", "ok")
info = {k: env.get(k) for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NNODES", "SLURM_NODEID", "SLURMD_NODENAME",
                                "SLURM_RESTART_COUNT", "SLURM_ARRAY_TASK_ID", "SRUN_CPUS_PER_TASK")}
info["argv"] = sys.argv[1:]
print("FAKE " + json.dumps(info), flush=True)
got = []
def handler(signum, frame):
    got.append(signal.Signals(signum).name)
signal.signal(signal.SIGUSR1, handler)
signal.signal(signal.SIGTERM, handler)
if mode == "wait_signal" and restart == 0:
    print("FAKE waiting", flush=True)
    deadline = time.time() + 150
    while not got and time.time() < deadline:
        time.sleep(0.05)
    print(f"FAKE got {got}: checkpointed, exit 3", flush=True)
    sys.exit(3)
if mode == "exit3_once" and restart == 0:
    sys.exit(3)
if mode == "fail":
    sys.exit(7)
print(f"FAKE done restart={restart}", flush=True)
'''


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """An executable to pass as PROXLAB_PYTHON: it ignores `-m proxlab.runner.run`, prints its environment and
    arguments as `FAKE {json}`, and on FAKE_MODE=wait_signal waits for USR1/TERM then exits 3 (the stage protocol)."""
    path = tmp_path / "fake_python"
    path.write_text(FAKE_ORCHESTRATOR)
    path.chmod(0o755)
    return path
