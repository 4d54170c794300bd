"""End to end on the test cluster: the real orchestrator under slurm/run.sh.

Demo-sized (300 documents, 20 steps, 20 eval samples per task) so both fit CI's default suite: a few minutes each on
2 cores. Marked `slurm` (they need the test cluster, which `make test` brings up as root).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


def _orchestrator_missing() -> str:
    try:
        if importlib.util.find_spec("proxlab.runner.run") is None:
            return "proxlab.runner.run does not exist yet (the orchestrator); the e2e Slurm tests need it"
    except ImportError as err:
        return f"proxlab.runner.run is not importable: {err}"
    if not PYTHON.exists():
        return f"{PYTHON} missing: the jobs run the orchestrator with the main environment"
    return ""


_missing = _orchestrator_missing()
if _missing:
    pytestmark.append(pytest.mark.skip(reason=_missing))

# Small and CPU-only on the 2-core test machine. The global batch (8) must split over 2 ranks: micro-batch 4 (1 rank
# accumulates 2 micro-batches, 2 ranks 1 each: the same optimizer steps). Checkpoints every 5 of 20 steps. On CPU:
# conf/cluster/slurm.yaml (which run.sh selects) says gpu.
COMMON = ["exp=smoke", "logger=none", "cluster.accelerator=cpu", "train.micro_batch_size=4", "train.max_steps=20",
          "train.save_interval=5", "eval.limit=20", "corpus.num_docs=300", "corpus.docs_per_shard=100",
          "model.tokenizer.vocab_size=1024"]
CPU_OPTS = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=30"]


def _paths(root: Path) -> list[str]:
    return [f"paths.runs_dir={root}/runs", f"paths.artifacts_dir={root}/artifacts"]


def _digest_stage(stage_dir: Path) -> dict[str, str]:
    """path below the stage's key directory -> sha256, for every data file of the stage's artifacts."""
    out = {}
    for path in sorted(p for p in stage_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(stage_dir).parts[1:]  # drop <key>/: keys may cover the cluster layout
        if not rel or rel[0].startswith((".", "_")) or path.suffix in (".log", ".jsonl", ".json", ".yaml"):
            continue  # markers, specs, manifests and metrics hold times, hosts and ranks; data files must match
        out["/".join(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


DATA_STAGES = ("prepare", "refine", "tokenize")  # deterministic and independent of the world size


def run_local(root: Path, *overrides: str) -> None:
    proc = subprocess.run([str(PYTHON), "-m", "proxlab.runner.run", *COMMON, *overrides, *_paths(root)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def only(paths) -> Path:
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The uninterrupted run both Slurm runs are compared with: two processes (DDP) on this machine, as the jobs have
    two ranks on two nodes, so each rank reads the same part of every batch and the results agree exactly."""
    root = tmp_path_factory.mktemp("local")
    run_local(root, "cluster.devices=2")
    return root


def test_smoke_on_two_nodes_equals_local(slurm_cluster, local_run, tmp_path):
    local, remote = local_run, tmp_path / "slurm"
    log = tmp_path / "job.out"
    job = slurm_cluster.sbatch("--nodes=2", "--ntasks-per-node=1", *CPU_OPTS, f"--output={log}", f"--error={log}",
                               "slurm/run.sh", *COMMON, *_paths(remote), cwd=REPO,
                               env=slurm_cluster.env(PROXLAB_PYTHON=str(PYTHON)))
    record = slurm_cluster.wait(job, timeout=1800)
    assert record["JobState"] == "COMPLETED", log.read_text()[-5000:]

    # Every stage that ran locally completed on Slurm; the data stages wrote identical files.
    stages = sorted(p.name for p in (local / "artifacts").iterdir() if p.is_dir())
    assert stages
    for stage in stages:
        assert list((remote / "artifacts" / stage).glob("*/_SUCCESS")), f"no completed {stage} on Slurm"
        if stage.split(".")[0] in DATA_STAGES:
            a = _digest_stage(local / "artifacts" / stage)
            b = _digest_stage(remote / "artifacts" / stage)
            assert a and a == b, f"{stage} differs between local and 2-node Slurm"
    # Pretraining with DDP across the two nodes equals DDP across two local processes.
    one, two = (read_json(only((root / "artifacts").glob("pretrain/*/train_summary.json"))) for root in (local, remote))
    assert one["world_size"] == two["world_size"] == 2 and one["steps"] == two["steps"] == 20
    assert one["tokens"] == two["tokens"]
    assert two["final_loss"] == pytest.approx(one["final_loss"], abs=1e-5)
    a, b = (read_json(only((root / "runs" / "smoke").glob("*/summary.json"))) for root in (local, remote))
    assert a["docs/kept"] == b["docs/kept"] and a["tokens/train"] == b["tokens/train"]
    assert b["eval/avg"] == pytest.approx(a["eval/avg"], abs=1e-6)


def test_scontrol_requeue_during_pretraining_resumes_to_the_same_result(slurm_cluster, local_run, tmp_path):
    root = tmp_path / "slurm"
    log = tmp_path / "job.out"
    job = slurm_cluster.sbatch("--nodes=2", "--ntasks-per-node=1", *CPU_OPTS, f"--output={log}", f"--error={log}",
                               "slurm/run.sh", *COMMON, "logger=wandb_offline", *_paths(root), cwd=REPO,
                               env=slurm_cluster.env(PROXLAB_PYTHON=str(PYTHON)))
    # Wait for the first complete pretraining checkpoint: artifacts/pretrain/<key>/step-NNNNNNNN/.
    deadline = time.monotonic() + 1500
    while not [p for p in (root / "artifacts").glob("pretrain/*/step-*") if re.fullmatch(r"step-\d{8}", p.name)]:
        state = slurm_cluster.state(job)
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), (
            f"job {state} before any pretraining checkpoint:\n" + log.read_text()[-5000:])
        assert time.monotonic() < deadline, "no pretraining checkpoint appeared"
        time.sleep(0.5)
    slurm_cluster.run("scontrol", "requeue", job)
    record = slurm_cluster.wait(job, timeout=1800,
                                until=lambda r: r.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
                                and int(r.get("Restarts", 0)) >= 1)
    text = log.read_text()
    assert record["JobState"] == "COMPLETED", text[-5000:]
    # The restart reused the finished stages and resumed pretraining from a checkpoint ("resumed from ... at step N").
    after_restart = text[text.index("restart 1 on"):]
    assert "prepare: reusing" in after_restart and "tokenize: reusing" in after_restart, after_restart[-5000:]
    assert re.search(r"pretrain: resumed from \S+ at step [1-9]", after_restart), after_restart[-5000:]
    assert read_json(only((root / "artifacts").glob("pretrain/*/train_summary.json")))["steps"] == 20
    # Same final result as the uninterrupted run (deterministic CPU training, two ranks both times).
    ref = read_json(only((local_run / "artifacts").glob("pretrain/*/train_summary.json")))
    got = read_json(only((root / "artifacts").glob("pretrain/*/train_summary.json")))
    assert got["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-5)
    a, b = (read_json(only((r / "runs" / "smoke").glob("*/summary.json"))) for r in (local_run, root))
    assert b["eval/avg"] == pytest.approx(a["eval/avg"], abs=1e-6)
    # One W&B run per stage artifact: the pretrain run was continued under its id after the restart, not started
    # anew (evaluation adds its accuracies to it under the same id too).
    from proxlab.core.tracking import artifact_run_id, wandb_run_id

    run_dir = Path(b["run_dir"])
    ids = [p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")]
    expected = {artifact_run_id(d): d.parent.name for d in (root / "artifacts").glob("*/*") if d.is_dir()}
    assert set(ids) <= set(expected) | {wandb_run_id(run_dir, "summary")}, (ids, expected)
    pretrain = only((root / "artifacts").glob("pretrain/*/train_summary.json")).parent
    assert ids.count(artifact_run_id(pretrain)) >= 3, ids  # before and after the requeue, and evaluation: one id


ARRAY = ["exp=smoke", "logger=none", "refine=rules", "corpus.num_docs=600", "corpus.docs_per_shard=100"]


def test_refine_array_with_a_failed_task_resubmitted_alone(slurm_cluster, tmp_path):
    import pyarrow.parquet as pq

    root = tmp_path / "slurm"
    env = slurm_cluster.env(PROXLAB_PYTHON=str(PYTHON))
    opts = ["--ntasks=1", *CPU_OPTS, "--hold", f"--output={tmp_path}/%A_%a.out", f"--error={tmp_path}/%A_%a.out"]
    array = slurm_cluster.sbatch("--array=0-2", *opts, "slurm/refine_array.sh", *ARRAY, *_paths(root), cwd=REPO,
                                 env=env)
    # Task 0 alone starts; it takes open shards one at a time and dies (SIGKILL, as on a lost node) after its first.
    slurm_cluster.run("scontrol", "release", f"{array}_0")
    deadline = time.monotonic() + 600
    while not list((root / "artifacts").glob("refine.rules/*/shard-00000.json")):
        assert time.monotonic() < deadline, (tmp_path / f"{array}_0.out").read_text()[-3000:]
        time.sleep(0.2)
    slurm_cluster.run("scancel", "--full", "--signal=KILL", f"{array}_0")
    slurm_cluster.wait(f"{array}_0", timeout=60)
    stage = only((root / "artifacts").glob("refine.rules/*"))
    assert not (stage / "_SUCCESS").exists()
    done_before = {p.name for p in stage.glob("shard-*.json")}
    assert 1 <= len(done_before) < 6
    slurm_cluster.run("scancel", str(array))  # tasks 1 and 2 never ran: the failed task's resubmission is enough

    # Re-submit only the failed task; it names the number of array tasks, as a partial array must.
    again = slurm_cluster.sbatch("--array=0", *[o for o in opts if o != "--hold"], "slurm/refine_array.sh", *ARRAY,
                                 "refine.num_shards=3", *_paths(root), cwd=REPO, env=env)
    tasks = slurm_cluster.wait_array(again, timeout=600)
    assert tasks[0]["JobState"] == "COMPLETED", (tmp_path / f"{again}_0.out").read_text()[-3000:]
    assert (stage / "_SUCCESS").exists() and len(list(stage.glob("shard-*.json"))) == 6
    # Complete and duplicate-free: every prepared document is kept or dropped exactly once.
    prepared = [i for f in sorted((root / "artifacts").glob("prepare/*/docs-*.parquet"))
                for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]
    out = [i for f in sorted(stage.glob("*-*.parquet")) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]
    assert len(prepared) == 600 and len(out) == len(set(out)) == 600 and set(out) == set(prepared)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
