"""GPU binding on the test cluster, whose nodes declare 2 GPUs each on dummy device files (slurm/testcluster/up.sh).

One real run of slurm/run.sh on 2 nodes x 2 tasks x 2 GPUs: every stage process that is not Fabric's sees only its
task's GPU, the refiner configured with tensor_parallel_size=2 runs one engine per node on both of its GPUs (the other
task of the node waits), and pretraining sees all of its node's GPUs and takes cuda:<local rank>. Compute is on CPU
(cluster.accelerator=cpu) with the GPU GRES allocated, so what is checked is what each process was given: the
`_devices.jsonl` that every stage process appends to (proxlab.core.stage.record_process). Launches whose tasks per
node differ from their GPUs per node stop before any work. Unit level: tests/core/test_devices.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
OPTS = ["--cpus-per-task=1", "--time=30"]
# exp=smoke_prox's CPU refiners (proxlab:tiny-llama on transformers): doc level on every task, chunk level as engines
# of 2 GPUs; 4 ranks share the global batch of 8 (micro-batch 2); evaluate splits its 2 units over the ranks.
EXP = ["exp=smoke_prox", "refine=prox", "logger=none", "cluster.accelerator=cpu", "corpus.num_docs=40",
       "corpus.docs_per_shard=10", "refine.chunk.tensor_parallel_size=2", "train.max_steps=2", "train.warmup_steps=1",
       "train.save_interval=2", "train.micro_batch_size=2", "eval.tasks=[sciq,arc_easy]", "eval.limit=4",
       "model.tokenizer.vocab_size=300"]
EVERY_GPU = {("n1", "0"), ("n1", "1"), ("n2", "0"), ("n2", "1")}

if not PYTHON.exists():
    pytestmark.append(pytest.mark.skip(reason=f"{PYTHON} missing: the jobs run the orchestrator with it"))


def paths(root: Path) -> list[str]:
    return [f"paths.runs_dir={root}/runs", f"paths.artifacts_dir={root}/artifacts"]


def records(root: Path, stage: str, event: str = "start") -> list[dict]:
    from proxlab.core.stage import DEVICES, read_jsonl

    (artifact,) = (d for d in (root / "artifacts" / stage).iterdir() if d.is_dir())  # not the artifact's lock file
    return [r for r in read_jsonl(artifact / DEVICES) if r["event"] == event]


def test_each_task_gets_its_own_gpu_and_pretraining_keeps_fabric_s(slurm_cluster, tmp_path):
    from proxlab.core.sharding import shard_provenance

    root, log = tmp_path / "work", tmp_path / "job.out"
    job = slurm_cluster.sbatch("--nodes=2", "--ntasks-per-node=2", "--gpus-per-node=2", *OPTS, f"--output={log}",
                               f"--error={log}", "slurm/run.sh", *EXP, *paths(root), cwd=REPO,
                               env=slurm_cluster.env(PROXLAB_PYTHON=str(PYTHON), OMP_NUM_THREADS="1"))
    record = slurm_cluster.wait(job, timeout=900)
    text = log.read_text()
    assert record["JobState"] == "COMPLETED", text[-5000:]

    # Every task's process of refine.generate_doc and evaluate: its own GPU, 4 distinct (node, GPU) over the job.
    for stage in ("refine.generate_doc", "evaluate"):
        got = records(root, stage)
        assert sorted(r["rank"] for r in got) == [0, 1, 2, 3], (stage, got)
        assert {(r["node"], r["cuda_visible_devices"]) for r in got} == EVERY_GPU, (stage, got)
        assert all(r["cuda_visible_devices"] == r["slurm_localid"] for r in got), (stage, got)
    # Single-process and other sharded stages get the GPU of the task that runs them, like every non-Fabric stage.
    for stage in ("prepare", "refine.apply_doc", "refine.apply_chunk", "tokenizer", "tokenize"):
        got = records(root, stage)
        assert got and all(r["cuda_visible_devices"] == r["slurm_localid"] for r in got), (stage, got)

    # tensor_parallel_size=2: one engine per node, led by local task 0, on both of the node's GPUs; its shards split
    # over the 2 engines; the other task of each node waited.
    engines = records(root, "refine.generate_chunk")
    assert sorted((r["rank"], r["world_size"], r["node"], r["slurm_localid"], r["cuda_visible_devices"])
                  for r in engines) == [(0, 2, "n1", "0", "0,1"), (1, 2, "n2", "0", "0,1")]
    (chunk_dir,) = (d for d in (root / "artifacts" / "refine.generate_chunk").iterdir() if d.is_dir())
    by = shard_provenance(chunk_dir, 4)
    assert {i: (b["rank"], b["world"]) for i, b in by.items()} == {i: (i % 2, 2) for i in range(4)}
    # Logs for many ranks: the 4 orchestrators share this log, and rank 0 alone printed the plan and the banners.
    assert text.count("[proxlab] run directory:") == 1, text[-5000:]
    other_ranks = [line for line in text.splitlines() if line.startswith("[proxlab rank ")]
    assert all(" WARNING: " in line or " ERROR: " in line for line in other_ranks), other_ranks
    assert text.count("refine.generate_chunk: running proxlab.refine.generate") == 1, text[-5000:]

    # Pretraining: every rank sees both GPUs of its node and Fabric takes cuda:<local rank>.
    fabric = records(root, "pretrain", "fabric")
    assert len(fabric) == 4, fabric
    assert all(r["cuda_visible_devices"] == "0,1" for r in fabric), fabric
    assert all(r["fabric_local_rank"] == int(r["slurm_localid"]) for r in fabric), fabric
    assert {(r["node"], str(r["fabric_local_rank"])) for r in fabric} == EVERY_GPU
    assert sorted(r["fabric_global_rank"] for r in fabric) == [0, 1, 2, 3]


def test_run_sh_refuses_gpus_per_node_other_than_tasks_per_node(slurm_cluster, workdir, fake_python):
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=2", *OPTS, "slurm/run.sh",
                               "exp=smoke", cwd=workdir, env=slurm_cluster.env(PROXLAB_PYTHON=str(fake_python)))
    record = slurm_cluster.wait(job, timeout=60)
    text = (workdir / "logs" / "slurm" / f"proxlab-{job}.out").read_text()
    assert record["JobState"] == "FAILED" and record["ExitCode"].startswith("2:"), text
    assert "ERROR: 1 task(s) per node but 2 GPU(s) per node: run one task per GPU" in text
    assert "FAKE" not in text  # no orchestrator started


def test_the_orchestrator_refuses_tasks_it_cannot_pair_with_gpus_before_any_stage(slurm_cluster, tmp_path):
    # srun directly (not run.sh): 2 tasks on a node holding 1 GPU; each task sees that one GPU.
    root, log = tmp_path / "work", tmp_path / "job.out"
    command = " ".join([str(PYTHON), "-m", "proxlab.runner.run", *EXP, *paths(root)])
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=1", *OPTS, f"--output={log}",
                               f"--error={log}", f"--wrap=srun {command}", cwd=REPO,
                               env=slurm_cluster.env(OMP_NUM_THREADS="1"))
    record = slurm_cluster.wait(job, timeout=300)
    text = log.read_text()
    assert record["JobState"] == "FAILED", text[-3000:]
    assert text.count("config error: cluster.devices=2: 2 tasks on node n1 but each sees 1 GPU(s) "
                      "(CUDA_VISIBLE_DEVICES=0)") == 2, text[-3000:]
    assert not (root / "artifacts").exists()  # no stage started
    assert [p.name for p in (root / "runs").iterdir()] == [".hydra"]  # no run directory either (only Hydra's)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
