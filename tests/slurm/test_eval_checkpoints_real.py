"""slurm/eval_checkpoints.sh on real checkpoint paths: a tiny model pretrained here by the real stages, its run
directory handed to `--submit`, one array task per checkpoint running the real `proxlab evaluate` on the test
cluster. Each task's results name its own checkpoint's training step."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tiny_pretrain import pretrain_tiny_run  # tests/tiny_pretrain.py

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    import torch

    torch.set_num_threads(1)
    return pretrain_tiny_run(tmp_path_factory.mktemp("evalckpt"))


def test_eval_checkpoints_array_evaluates_each_real_checkpoint(slurm_cluster, workdir, tiny_run):
    env = slurm_cluster.env(PROXLAB_PYTHON=sys.executable, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                            PROXLAB_SBATCH_ARGS="--gpus-per-node=0 --cpus-per-task=1 --mem=2G",
                            **{k: v for k, v in os.environ.items() if k == "PROXLAB_DATA_DIR"})
    # the run directory, as a user has it after `proxlab run`: its plan.json names the pretrain artifact
    proc = slurm_cluster.run("bash", "slurm/eval_checkpoints.sh", "--submit", str(tiny_run["run_dir"]),
                             "eval=tiny_mc", "eval.limit=4", cwd=workdir, env=env)
    array = proc.stdout.split()[-1]  # "Submitted batch job N"
    tasks = slurm_cluster.wait_array(array, timeout=400)
    logs = {t: (workdir / "logs" / "slurm" / f"proxlab-eval-{array}_{t}.out") for t in tasks}
    assert sorted(tasks) == [0, 1, 2], tasks
    for t, record in tasks.items():
        assert record["JobState"] == "COMPLETED", logs[t].read_text()[-3000:]
    (frozen,) = (workdir / "logs" / "slurm").glob("eval-checkpoints-*.txt")
    ckpts = [Path(p) for p in frozen.read_text().split()]
    art = tiny_run["artifact"]
    assert ckpts == [art / "final", art / "step-00000012", art / "step-00000024"]
    steps = []
    for ckpt in ckpts:
        (results,) = (workdir / "runs" / "evaluate").glob(f"*{ckpt.name}/tiny_mc/results.json")
        res = json.loads(results.read_text())
        assert res["tasks"] and all(e["n"] == 4 for e in res["tasks"].values()), res["tasks"]  # eval.limit=4
        assert 0.0 <= res["avg"] <= 1.0
        steps.append(res["step"])
    assert steps == [24, 12, 24]
