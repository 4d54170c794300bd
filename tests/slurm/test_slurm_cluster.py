"""The one-host test cluster behaves like the real clusters our scripts rely on: multi-node jobs, requeue with
SLURM_RESTART_COUNT, pre-timeout signals to the batch shell, job arrays with a re-submitted task."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


def test_two_nodes_one_task_each(slurm_cluster, tmp_path):
    script = _script(tmp_path / "job.sh", """
        srun bash -c 'echo "$SLURM_PROCID $SLURM_NTASKS $SLURM_NNODES $SLURM_NODEID $SLURMD_NODENAME"'
        # The first host of the allocation must resolve: rendezvous code (torch.distributed) connects to it.
        getent hosts "$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)" >/dev/null && echo resolves
    """)
    out = tmp_path / "out.txt"
    proc = slurm_cluster.run("sbatch", "--wait", "--nodes=2", "--ntasks-per-node=1", f"--output={out}",
                             str(script), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0
    lines = out.read_text().split("\n")
    ranks = sorted(line for line in lines if line[:1].isdigit())
    assert ranks == ["0 2 2 0 n1", "1 2 2 1 n2"], out.read_text()
    assert "resolves" in lines


def test_sbatch_wait_propagates_exit_code(slurm_cluster, tmp_path):
    proc = slurm_cluster.run("sbatch", "--wait", f"--output={tmp_path}/o.txt", "--wrap", "exit 3",
                             check=False, cwd=tmp_path)
    assert proc.returncode == 3


def test_requeue_restarts_with_restart_count(slurm_cluster, tmp_path):
    out = tmp_path / "out.txt"
    script = _script(tmp_path / "job.sh", """
        echo "run restart=${SLURM_RESTART_COUNT:-unset}"
        if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then exit 0; fi
        sleep 120 & wait
    """)
    job = slurm_cluster.sbatch("--requeue", "--open-mode=append", f"--output={out}", str(script), cwd=tmp_path)
    slurm_cluster.wait_running(job)
    slurm_cluster.wait_for_text(out, "run restart=unset")
    slurm_cluster.run("scontrol", "requeue", job)
    record = slurm_cluster.wait(job, timeout=60)
    assert record["JobState"] == "COMPLETED", record
    assert record["Restarts"] == "1"
    text = out.read_text()
    assert "run restart=unset" in text and "run restart=1" in text, text


def test_pre_timeout_signal_lets_the_batch_shell_requeue(slurm_cluster, tmp_path):
    # --time is whole minutes and Slurm checks limits every ~30 s: with --time=1 and @50 the USR1 is due at once and
    # arrives within ~30 s; without the trap the job would be killed (TIMEOUT) at ~60-90 s.
    out = tmp_path / "out.txt"
    script = _script(tmp_path / "job.sh", """
        #SBATCH --time=1
        #SBATCH --signal=B:USR1@50
        #SBATCH --requeue
        #SBATCH --open-mode=append
        start=$SECONDS
        echo "run restart=${SLURM_RESTART_COUNT:-unset}"
        if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then echo finished; exit 0; fi
        on_usr1() {
            echo "USR1 after $((SECONDS - start)) s"
            scontrol requeue "$SLURM_JOB_ID" && echo requeued
            exit 0
        }
        trap on_usr1 USR1
        sleep 300 & wait   # interruptible: the trap runs as soon as the signal arrives
        echo "no signal"
    """)
    t0 = time.monotonic()
    job = slurm_cluster.sbatch(f"--output={out}", str(script), cwd=tmp_path)
    record = slurm_cluster.wait(job, timeout=150)
    text = out.read_text()
    assert record["JobState"] == "COMPLETED", (record, text)
    assert record["Restarts"] == "1", text
    assert "USR1 after" in text and "requeued" in text and "run restart=1" in text and "finished" in text, text
    assert "no signal" not in text
    assert time.monotonic() - t0 < 120


def test_array_task_fails_and_is_resubmitted_alone(slurm_cluster, tmp_path):
    flag = tmp_path / "fail-2"
    flag.touch()
    script = _script(tmp_path / "job.sh", f"""
        echo "task=$SLURM_ARRAY_TASK_ID count=$SLURM_ARRAY_TASK_COUNT"
        if [ -e {tmp_path}/fail-$SLURM_ARRAY_TASK_ID ]; then echo failing; exit 1; fi
        touch {tmp_path}/done-$SLURM_ARRAY_TASK_ID
    """)
    array = slurm_cluster.sbatch("--array=0-3", f"--output={tmp_path}/%A_%a.out", str(script), cwd=tmp_path)
    tasks = slurm_cluster.wait_array(array)
    assert sorted(tasks) == [0, 1, 2, 3]
    states = {task: record["JobState"] for task, record in tasks.items()}
    assert states == {0: "COMPLETED", 1: "COMPLETED", 2: "FAILED", 3: "COMPLETED"}
    assert tasks[2]["ExitCode"] == "1:0"
    assert sorted(p.name for p in tmp_path.glob("done-*")) == ["done-0", "done-1", "done-3"]

    flag.unlink()
    again = slurm_cluster.sbatch("--array=2", f"--output={tmp_path}/%A_%a.out", str(script), cwd=tmp_path)
    tasks = slurm_cluster.wait_array(again)
    assert list(tasks) == [2] and tasks[2]["JobState"] == "COMPLETED"
    assert (tmp_path / "done-2").exists()
    # A re-submitted task sees an array of one: scripts must not derive the number of shards from it.
    assert "task=2 count=1" in (tmp_path / f"{again}_2.out").read_text()
