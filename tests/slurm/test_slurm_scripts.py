"""slurm/run.sh, refine_array.sh, eval_checkpoints.sh and proxlab.runner.slurm.submit on the test cluster, with a
fake orchestrator (PROXLAB_PYTHON) that prints what it sees and follows the stage protocol (signal -> exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

CPU_OPTS = ["--gpus-per-node=0", "--cpus-per-task=1"]


def fake_lines(path: Path) -> list[dict]:
    return [json.loads(line[5:]) for line in path.read_text().splitlines() if line.startswith("FAKE {")]


def job_log(workdir: Path, pattern: str) -> Path:
    logs = sorted((workdir / "logs" / "slurm").glob(pattern))
    assert len(logs) == 1, logs
    return logs[0]


def test_run_sh_two_nodes_maps_allocation_to_cluster_overrides(slurm_cluster, workdir, fake_python):
    env = slurm_cluster.env(PROXLAB_PYTHON=str(fake_python), FAKE_MODE="ok")
    job = slurm_cluster.sbatch("--nodes=2", "--ntasks-per-node=1", *CPU_OPTS, "slurm/run.sh", "exp=smoke",
                               "refine=raw", cwd=workdir, env=env)
    record = slurm_cluster.wait(job, timeout=60)
    log = workdir / "logs" / "slurm" / f"proxlab-{job}.out"  # the script's default --output (%x-%j.out)
    assert record["JobState"] == "COMPLETED", log.read_text()
    ranks = sorted(fake_lines(log), key=lambda r: r["SLURM_PROCID"])
    assert [(r["SLURM_PROCID"], r["SLURMD_NODENAME"], r["SLURM_NNODES"]) for r in ranks] == [
        ("0", "n1", "2"), ("1", "n2", "2")]
    assert ranks[0]["argv"] == ["-m", "proxlab.runner.run", "exp=smoke", "refine=raw", "cluster=slurm",
                                "cluster.num_nodes=2", "cluster.devices=1"]
    assert ranks[0]["SRUN_CPUS_PER_TASK"] == "1"


def test_run_sh_keeps_a_user_cluster_choice(slurm_cluster, workdir, fake_python):
    env = slurm_cluster.env(PROXLAB_PYTHON=str(fake_python))
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=2", *CPU_OPTS, "slurm/run.sh", "exp=smoke",
                               "cluster=mysite", "cluster.devices=8", cwd=workdir, env=env)
    assert slurm_cluster.wait(job)["JobState"] == "COMPLETED"
    log = workdir / "logs" / "slurm" / f"proxlab-{job}.out"
    ranks = fake_lines(log)
    assert len(ranks) == 2
    assert ranks[0]["argv"][2:] == ["exp=smoke", "cluster=mysite", "cluster.devices=8", "cluster.num_nodes=1",
                                    "cluster.devices=2"]  # the allocation wins (Hydra: last value)
    assert "is overridden by the allocation" in log.read_text()


def test_run_sh_usr1_is_forwarded_and_the_job_requeued(slurm_cluster, workdir, fake_python):
    # The pre-timeout signal (--signal=B:USR1@300) reaches the batch shell; here it is sent at once.
    env = slurm_cluster.env(PROXLAB_PYTHON=str(fake_python), FAKE_MODE="wait_signal")
    job = slurm_cluster.sbatch("--nodes=2", "--ntasks-per-node=1", *CPU_OPTS, "slurm/run.sh", "exp=smoke",
                               cwd=workdir, env=env)
    log = workdir / "logs" / "slurm" / f"proxlab-{job}.out"
    slurm_cluster.wait_running(job)
    slurm_cluster.wait_for_text(log, "FAKE waiting", count=2)  # both ranks have installed their handlers
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    record = slurm_cluster.wait(job, timeout=60)
    text = log.read_text()
    assert record["JobState"] == "COMPLETED" and record["Restarts"] == "1", text
    # Both ranks got USR1 first; a rank still in its handler when the other exits 3 may also see srun's
    # --kill-on-bad-exit SIGTERM, which is fine: it has already checkpointed.
    assert text.count("FAKE got ['SIGUSR1'") == 2, text
    assert "requeueing job" in text and text.count("FAKE done restart=1") == 2, text


def test_run_sh_exit_3_requeues(slurm_cluster, workdir, fake_python):
    env = slurm_cluster.env(PROXLAB_PYTHON=str(fake_python), FAKE_MODE="exit3_once")
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=1", *CPU_OPTS, "slurm/run.sh", "exp=smoke",
                               cwd=workdir, env=env)
    record = slurm_cluster.wait(job, timeout=60)
    text = (workdir / "logs" / "slurm" / f"proxlab-{job}.out").read_text()
    assert record["JobState"] == "COMPLETED" and record["Restarts"] == "1", text
    assert "step exit 3 (checkpointed, requeue requested): requeueing job" in text


def test_run_sh_failure_and_scancel_are_not_requeued(slurm_cluster, workdir, fake_python):
    failing = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=1", *CPU_OPTS, "slurm/run.sh", cwd=workdir,
                                   env=slurm_cluster.env(PROXLAB_PYTHON=str(fake_python), FAKE_MODE="fail"))
    waiting = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=1", *CPU_OPTS, "slurm/run.sh", cwd=workdir,
                                   env=slurm_cluster.env(PROXLAB_PYTHON=str(fake_python), FAKE_MODE="wait_signal"))
    log = workdir / "logs" / "slurm" / f"proxlab-{waiting}.out"
    slurm_cluster.wait_running(waiting)
    slurm_cluster.wait_for_text(log, "FAKE waiting")
    slurm_cluster.run("scancel", waiting)

    record = slurm_cluster.wait(failing)
    assert record["JobState"] == "FAILED" and record["ExitCode"] == "7:0" and record["Restarts"] == "0"
    record = slurm_cluster.wait(waiting)
    assert record["JobState"] == "CANCELLED" and record["Restarts"] == "0"
    assert "not requeueing" in log.read_text()


def test_run_sh_without_python_fails_clearly(slurm_cluster, workdir):
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=1", *CPU_OPTS, "slurm/run.sh", cwd=workdir,
                               env=slurm_cluster.env(PROXLAB_PYTHON=str(workdir / "nope")))
    record = slurm_cluster.wait(job)
    assert record["JobState"] == "FAILED" and record["ExitCode"] == "2:0"
    assert "not found" in (workdir / "logs" / "slurm" / f"proxlab-{job}.out").read_text()


def test_refine_array_passes_shard_overrides(slurm_cluster, workdir, fake_python):
    env = slurm_cluster.env(PROXLAB_PYTHON=str(fake_python))
    opts = ["--ntasks=1", *CPU_OPTS]
    array = slurm_cluster.sbatch("--array=0-2", *opts, "slurm/refine_array.sh", "exp=smoke", cwd=workdir, env=env)
    tasks = slurm_cluster.wait_array(array)
    assert {t: r["JobState"] for t, r in tasks.items()} == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    for task in range(3):
        (rank,) = fake_lines(job_log(workdir, f"proxlab-refine-{array}_{task}.out"))
        assert rank["argv"][2:] == ["exp=smoke", "cluster=slurm", "cluster.num_nodes=1", "cluster.devices=1",
                                    "stop_after=refine", f"refine.shard_rank={task}", "refine.num_shards=3"]

    # One task alone: the number of shards must be given, or the task refuses to guess.
    alone = slurm_cluster.sbatch("--array=1", *opts, "slurm/refine_array.sh", "exp=smoke", cwd=workdir, env=env)
    assert slurm_cluster.wait_array(alone)[1]["JobState"] == "FAILED"
    assert "Pass refine.num_shards=N" in job_log(workdir, f"proxlab-refine-{alone}_1.out").read_text()
    alone = slurm_cluster.sbatch("--array=1", *opts, "slurm/refine_array.sh", "exp=smoke", "refine.num_shards=3",
                                 cwd=workdir, env=env)
    assert slurm_cluster.wait_array(alone)[1]["JobState"] == "COMPLETED"
    (rank,) = fake_lines(job_log(workdir, f"proxlab-refine-{alone}_1.out"))
    assert rank["argv"][2:] == ["exp=smoke", "refine.num_shards=3", "cluster=slurm", "cluster.num_nodes=1",
                                "cluster.devices=1", "stop_after=refine", "refine.shard_rank=1"]


def test_eval_checkpoints_one_checkpoint_per_task(slurm_cluster, workdir, fake_python):
    ckpts = workdir / "ckpts"
    for name in ("step-00000020", "step-00000040", "final", "other"):
        (ckpts / name).mkdir(parents=True)
    env = slurm_cluster.env(PROXLAB_PYTHON=str(fake_python), PROXLAB_SBATCH_ARGS="--gpus-per-node=0 --cpus-per-task=1")
    proc = slurm_cluster.run("bash", "slurm/eval_checkpoints.sh", "--submit", str(ckpts), "eval=tiny_mc",
                             cwd=workdir, env=env)
    array = proc.stdout.split()[-1]  # "Submitted batch job N"
    tasks = slurm_cluster.wait_array(array)
    assert sorted(tasks) == [0, 1, 2] and all(r["JobState"] == "COMPLETED" for r in tasks.values())
    seen = []
    for task in range(3):
        (rank,) = fake_lines(job_log(workdir, f"proxlab-eval-{array}_{task}.out"))
        assert rank["argv"][:3] == ["-m", "proxlab.cli", "evaluate"]
        assert rank["argv"][4:] == ["eval=tiny_mc"]
        seen.append(rank["argv"][3])
    assert seen == [f"model={ckpts}/{name}" for name in ("final", "step-00000020", "step-00000040")]
    (frozen,) = (workdir / "logs" / "slurm").glob("eval-checkpoints-*.txt")
    assert frozen.read_text().split() == [s.split("=", 1)[1] for s in seen]


def test_submit_from_python(slurm_cluster, workdir, fake_python, monkeypatch):
    from proxlab.runner.slurm import submit

    for key, value in slurm_cluster.env(PROXLAB_PYTHON=str(fake_python)).items():
        monkeypatch.setenv(key, value)
    cluster = {"kind": "slurm", "accelerator": "cpu", "devices": 1, "num_nodes": 2, "cpus_per_task": 1,
               "time": "00:10:00", "mem": "100M", "setup": ["export PROXLAB_TEST_SETUP=yes"],
               "sbatch_extra": ["--comment=proxlab-test"]}
    (workdir / "logs").rename(workdir / "logs-old")  # submit() creates logs/slurm itself
    job = submit(cluster, ["exp=smoke", "refine=raw"], cwd=str(workdir))
    assert job.isdigit()
    record = slurm_cluster.wait(job)
    log = workdir / "logs" / "slurm" / f"proxlab-smoke-{job}.out"
    assert record["JobState"] == "COMPLETED", log.read_text()
    assert record["NumNodes"] == "2" and record["TimeLimit"] == "00:10:00"
    ranks = fake_lines(log)
    assert len(ranks) == 2 and ranks[0]["argv"][2:] == ["exp=smoke", "refine=raw", "cluster=slurm",
                                                        "cluster.num_nodes=2", "cluster.devices=1"]
    assert "setup: export PROXLAB_TEST_SETUP=yes" in log.read_text()
