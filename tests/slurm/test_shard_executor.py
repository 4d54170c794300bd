"""The one shard executor under Slurm, for every sharded variant: job arrays throttled below their size, a task
killed mid-shard and resubmitted alone, a failing check, and SPMD with two tasks. Every document of the prepared
corpus must be kept or dropped exactly once, and each stage must be completed by exactly one process.

The refiner is `proxlab:tiny-llama` on transformers (exp=smoke_prox): real generation, nonsense programs, seconds per
shard on CPU. 60 documents in 6 shards of 10.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
BASE = ["exp=smoke_prox", "logger=none", "corpus.num_docs=60", "corpus.docs_per_shard=10", "cluster.accelerator=cpu"]
CHAIN = {"rules": ["refine.rules"], "doc": ["refine.generate_doc", "refine.apply_doc"],
         "prox": ["refine.generate_doc", "refine.apply_doc", "refine.generate_chunk", "refine.apply_chunk"]}
CPU_OPTS = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=30"]
N_SHARDS = 6

if not PYTHON.exists():
    pytestmark.append(pytest.mark.skip(reason=f"{PYTHON} missing: the jobs run the orchestrator with it"))


def paths(root: Path) -> list[str]:
    return [f"paths.runs_dir={root}/runs", f"paths.artifacts_dir={root}/artifacts"]


def submit_array(cluster, tmp_path: Path, root: Path, array: str, variant: str, *extra: str, hold=False) -> str:
    opts = ["--ntasks=1", *CPU_OPTS, f"--output={tmp_path}/%A_%a.out", f"--error={tmp_path}/%A_%a.out"]
    return cluster.sbatch(f"--array={array}", *opts, *(["--hold"] if hold else []), "slurm/refine_array.sh", *BASE,
                          f"refine={variant}", *extra, *paths(root), cwd=REPO,
                          env=cluster.env(PROXLAB_PYTHON=str(PYTHON)))


def logs(tmp_path: Path, job: str) -> str:
    return "".join(p.read_text() for p in sorted(tmp_path.glob(f"{job}_*.out")))


def stage_dir(root: Path, stage: str) -> Path:
    dirs = [d for d in (root / "artifacts" / stage).iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def ids(directory: Path, prefix: str) -> list[str]:
    import pyarrow.parquet as pq

    return [i for f in sorted(directory.glob(f"{prefix}-*.parquet"))
            for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


def assert_every_document_once(root: Path, variant: str) -> None:
    """Each refine stage is complete; the last one keeps or drops every prepared document exactly once."""
    prepared = ids(stage_dir(root, "prepare"), "docs")
    assert len(prepared) == 60
    for stage in CHAIN[variant]:
        d = stage_dir(root, stage)
        assert (d / "_SUCCESS").exists() and (d / "manifest.json").exists(), stage
        assert len(list(d.glob("shard-*.json"))) == N_SHARDS, stage
    last = stage_dir(root, CHAIN[variant][-1])
    dropped_before = [i for stage in CHAIN[variant][:-1] if stage.startswith("refine.apply")
                      for i in ids(stage_dir(root, stage), "dropped")]
    out = ids(last, "docs") + ids(last, "dropped") + dropped_before
    assert len(out) == len(set(out)) == 60 and set(out) == set(prepared)


def completions(text: str, stage: str) -> int:
    """How many processes completed `stage` (wrote its manifest and `_SUCCESS`)."""
    from proxlab.core.stage import COMPLETED_LOG

    return text.count(f"] {stage}: {COMPLETED_LOG}")


@pytest.mark.parametrize("variant", ["rules", "doc", "prox"])
def test_array_throttled_to_two_tasks_completes_every_stage_once(slurm_cluster, tmp_path, variant):
    root = tmp_path / "work"
    array = submit_array(slurm_cluster, tmp_path, root, f"0-{N_SHARDS - 1}%2", variant)
    tasks = slurm_cluster.wait_array(array, timeout=900)
    text = logs(tmp_path, array)
    assert sorted(tasks) == list(range(N_SHARDS))
    assert all(t["JobState"] == "COMPLETED" for t in tasks.values()), text[-4000:]
    assert_every_document_once(root, variant)
    for stage in CHAIN[variant]:
        assert completions(text, stage) == 1, (stage, text[-4000:])
    assert "waiting for" not in text  # no array task waits for shards it cannot own


@pytest.mark.parametrize("variant", ["doc", "prox"])  # rules: tests/slurm/test_run_e2e.py
def test_task_killed_mid_shard_then_resubmitted_alone_finishes(slurm_cluster, tmp_path, variant):
    from proxlab.core.sharding import shard_provenance

    root = tmp_path / "work"
    array = submit_array(slurm_cluster, tmp_path, root, f"0-{N_SHARDS - 1}", variant, hold=True)
    slurm_cluster.run("scontrol", "release", f"{array}_0")
    deadline = time.monotonic() + 600
    while not list((root / "artifacts").glob("refine.generate_doc/*/shard-00001.json")):
        assert time.monotonic() < deadline, logs(tmp_path, array)[-3000:]
        time.sleep(0.05)
    slurm_cluster.run("scancel", "--full", "--signal=KILL", f"{array}_0")  # mid-shard, as on a lost node
    slurm_cluster.wait(f"{array}_0", timeout=60)
    slurm_cluster.run("scancel", str(array))  # the other tasks never ran
    generate = stage_dir(root, "refine.generate_doc")
    assert not (generate / "_SUCCESS").exists()
    assert 2 <= len(shard_provenance(generate, N_SHARDS)) < N_SHARDS

    again = submit_array(slurm_cluster, tmp_path, root, "3", variant, f"refine.num_shards={N_SHARDS}")
    tasks = slurm_cluster.wait_array(again, timeout=900)
    assert tasks[3]["JobState"] == "COMPLETED", logs(tmp_path, again)[-4000:]
    assert_every_document_once(root, variant)
    by = shard_provenance(generate, N_SHARDS)
    assert {b["rank"] for b in by.values()} == {0, 3}  # the killed task's shards stand; the new one did the rest


def _plant_a_corrupt_finished_shard(root: Path, variant: str) -> Path:
    """Shard 3 of the first refine stage 'finished' with an empty output, as a disk error or a bug would leave it:
    no process redoes a finished shard, so only the stage's check can catch it."""
    from proxlab.core.formats import DOC_SCHEMA, DROP_SCHEMA, PROGRAM_SCHEMA, shard_name, write_parquet
    from proxlab.core.sharding import ShardStats, stats_path
    from proxlab.runner.compose import compose_config
    from proxlab.runner.graph import plan

    cfg = compose_config([*BASE, f"refine={variant}", *paths(root)])
    stage = {s.name: s for s in plan(cfg, root / "artifacts")}[CHAIN[variant][0]]
    out = stage.out_dir
    out.mkdir(parents=True)
    if variant == "rules":
        write_parquet(out / shard_name("docs", 3), [], DOC_SCHEMA)
        write_parquet(out / shard_name("dropped", 3), [], DROP_SCHEMA)
    else:
        write_parquet(out / shard_name("programs", 3), [], PROGRAM_SCHEMA)
    stats_path(out, 3).write_text(json.dumps(ShardStats().to_dict()))
    return out


@pytest.mark.parametrize("variant,why", [("rules", "10 input ids neither kept nor dropped"),
                                         ("doc", "0 programs for 10 documents")])
def test_a_failing_check_leaves_no_success_and_says_why(slurm_cluster, tmp_path, variant, why):
    root = tmp_path / "work"
    out = _plant_a_corrupt_finished_shard(root, variant)
    array = submit_array(slurm_cluster, tmp_path, root, f"0-{N_SHARDS - 1}%2", variant)
    tasks = slurm_cluster.wait_array(array, timeout=900)
    text = logs(tmp_path, array)
    assert any(t["JobState"] == "FAILED" for t in tasks.values()), text[-4000:]
    assert not (out / "_SUCCESS").exists() and not (out / "manifest.json").exists()
    assert why in text, text[-4000:]


@pytest.mark.parametrize("variant", ["rules", "doc", "prox"])
def test_spmd_with_two_tasks(slurm_cluster, tmp_path, variant):
    from proxlab.core.sharding import shard_provenance

    root = tmp_path / "work"
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=2", *CPU_OPTS, f"--output={tmp_path}/%j.out",
                               f"--error={tmp_path}/%j.out", "slurm/run.sh", *BASE, f"refine={variant}",
                               "stop_after=refine", "train.micro_batch_size=4", *paths(root), cwd=REPO,
                               env=slurm_cluster.env(PROXLAB_PYTHON=str(PYTHON)))
    record = slurm_cluster.wait(job, timeout=900)
    text = (tmp_path / f"{job}.out").read_text()
    assert record["JobState"] == "COMPLETED", text[-4000:]
    assert_every_document_once(root, variant)
    for stage in CHAIN[variant]:
        by = shard_provenance(stage_dir(root, stage), N_SHARDS)
        assert {i: (b["rank"], b["world"], b["array"]) for i, b in by.items()} == \
            {i: (i % 2, 2, False) for i in range(N_SHARDS)}, stage
        assert completions(text, stage) == 1, stage


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
