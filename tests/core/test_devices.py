"""GPU binding (proxlab.core.devices) and how the orchestrator applies it (proxlab.runner.run): which GPUs each stage
process of an SPMD task sees, engines of tensor_parallel_size tasks, and the errors for launches that cannot be
paired. The same on the Slurm test cluster, with GPU GRES: tests/slurm/test_gpu_binding.py."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from proxlab.core.config import ConfigError
from proxlab.core.devices import (Engine, GpuLayoutError, TaskLayout, engine_of, expand_tasks_per_node, task_gpus,
                                  task_layout, visible_gpus)
from proxlab.core.stage import DEVICES, StageSpec, read_jsonl, run_stage

EIGHT = [str(i) for i in range(8)]


def step_env(localid: int, nodeid: int = 0, tasks_per_node: str = "8", gpus: str | None = "0,1,2,3,4,5,6,7") -> dict:
    """What a task of a plain `srun` step sees (Slurm 22.05, --gpus-per-node, no cgroups)."""
    env = {"SLURM_STEP_TASKS_PER_NODE": tasks_per_node, "SLURM_LOCALID": str(localid), "SLURM_NODEID": str(nodeid),
           "SLURMD_NODENAME": f"n{nodeid + 1}"}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


def test_tasks_per_node_and_layouts():
    assert expand_tasks_per_node("8") == (8,)
    assert expand_tasks_per_node("2(x3),1") == (2, 2, 2, 1)
    with pytest.raises(ValueError, match="cannot read tasks per node"):
        expand_tasks_per_node("2(3)")
    assert task_layout(step_env(3, nodeid=1, tasks_per_node="4(x2)")) == TaskLayout(1, 3, (4, 4), "n2")
    # torchrun: 2 nodes x 4 processes
    layout = task_layout({"LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8", "GROUP_RANK": "1"})
    assert (layout.node, layout.local_rank, layout.tasks_per_node) == (1, 2, (4, 4))
    # A batch script's shell (no step) is one process, whatever the job's task count.
    alone = task_layout({"SLURM_LOCALID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_TASKS_PER_NODE": "8"})
    assert (alone.local_rank, alone.tasks_per_node) == (0, (1,))


def test_visible_gpus():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_STEP_GPUS": "4,5"}) == ["0", "1"]
    assert visible_gpus({"SLURM_STEP_GPUS": "4,5", "SLURM_JOB_GPUS": "4,5,6,7"}) == ["4", "5"]
    assert visible_gpus({"SLURM_JOB_GPUS": "0,1"}) == []  # the job's GPUs are not the step's
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    for none in ("", "NoDevFiles", "-1"):
        assert visible_gpus({"CUDA_VISIBLE_DEVICES": none, "SLURM_STEP_GPUS": "0"}) == []
    assert visible_gpus({}) == []


def test_one_gpu_per_task():
    got = [task_gpus(EIGHT, task_layout(step_env(i))) for i in range(8)]
    assert got == [[str(i)] for i in range(8)]
    # Slurm's numbers are kept as they are (a job holding GPUs 4-7 of a node without cgroups).
    assert task_gpus(["4", "5", "6", "7"], TaskLayout(0, 2, (4,))) == ["6"]


def test_nothing_changes_without_gpus_or_for_a_task_alone_on_its_node():
    assert task_gpus([], TaskLayout(0, 1, (2, 2))) is None  # CPU
    assert task_gpus(EIGHT, TaskLayout()) is None  # an array task or a workstation: keeps every GPU it sees
    assert task_gpus(EIGHT, TaskLayout(), size=8) is None


def test_tasks_per_node_must_equal_gpus_per_node():
    with pytest.raises(GpuLayoutError) as err:  # --ntasks-per-node=8 --gpus-per-node=4
        task_gpus(["0", "1", "2", "3"], task_layout(step_env(5, gpus="0,1,2,3")))
    assert isinstance(err.value, ConfigError)
    message = str(err.value)
    assert message.startswith("cluster.devices=8: 8 tasks on node n1 but each sees 4 GPU(s) "
                              "(CUDA_VISIBLE_DEVICES=0,1,2,3)")
    assert "one task per GPU" in message
    with pytest.raises(GpuLayoutError, match="--gpus-per-task"):  # Slurm already bound one GPU to each task
        task_gpus(["1"], TaskLayout(0, 1, (2,), "n1"))


def test_engines_of_tensor_parallel_tasks():
    # 2 nodes x 4 tasks, engines of 2: numbered node by node, led by the even local ranks.
    layout = lambda node, local: TaskLayout(node, local, (4, 4))  # noqa: E731
    engines = {(n, i): engine_of(layout(n, i), 2) for n in (0, 1) for i in range(4)}
    assert engines == {(0, 0): Engine(0, 4, True), (0, 1): Engine(0, 4, False), (0, 2): Engine(1, 4, True),
                       (0, 3): Engine(1, 4, False), (1, 0): Engine(2, 4, True), (1, 1): Engine(2, 4, False),
                       (1, 2): Engine(3, 4, True), (1, 3): Engine(3, 4, False)}
    gpus = {i: task_gpus(["0", "1", "2", "3"], layout(1, i), 2) for i in range(4)}
    assert gpus == {0: ["0", "1"], 1: ["0", "1"], 2: ["2", "3"], 3: ["2", "3"]}
    assert task_gpus(EIGHT, TaskLayout(0, 5, (8,)), 8) == EIGHT
    assert engine_of(layout(0, 3), 1) is None
    assert engine_of(TaskLayout(1, 0, (1, 1)), 2) is None  # one task per node: each is its own engine


def test_engines_that_cannot_be_formed():
    with pytest.raises(GpuLayoutError, match=r"refine.doc.tensor_parallel_size=4: .* node 1 runs 6 task\(s\)"):
        engine_of(TaskLayout(0, 0, (8, 6)), 4, "refine.doc.tensor_parallel_size")
    with pytest.raises(GpuLayoutError, match=r"tensor_parallel_size=4: an engine needs 4 GPUs but the task on w "
                                             r"sees 2 \(CUDA_VISIBLE_DEVICES=0,1\)"):
        task_gpus(["0", "1"], TaskLayout(host="w"), 4)
    with pytest.raises(GpuLayoutError, match="must be at least 1"):
        engine_of(TaskLayout(), 0)


# --- the orchestrator ------------------------------------------------------------------------------------------------

def planned(name: str, **config):
    from proxlab.runner.graph import STAGES, PlannedStage

    return PlannedStage(name, STAGES[name], config)


CFG = OmegaConf.create({"refine": {"shard_rank": None, "num_shards": None}})


def test_orchestrator_binds_every_stage_but_fabric_s(monkeypatch):
    from proxlab.runner.launcher import stage_env
    from proxlab.runner.run import stage_gpus

    for key, value in step_env(1, tasks_per_node="2", gpus="0,1").items():
        monkeypatch.setenv(key, value)
    assert stage_gpus(planned("prepare")) == ["1"]
    assert stage_gpus(planned("evaluate")) == ["1"]
    assert stage_gpus(planned("refine.generate_doc", level="doc", tensor_parallel_size=1)) == ["1"]
    assert stage_gpus(planned("refine.generate_chunk", level="chunk", tensor_parallel_size=2)) == ["0", "1"]
    assert stage_gpus(planned("pretrain")) is None  # Fabric: all of the node's GPUs, cuda:<local rank>
    assert stage_env(True, stage_gpus(planned("evaluate"))) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert stage_env(True, stage_gpus(planned("pretrain"))) == {}


def test_orchestrator_groups_tensor_parallel_refiners(monkeypatch):
    from proxlab.runner.run import shard_identity

    gen = planned("refine.generate_chunk", level="chunk", tensor_parallel_size=2)
    ids = {}
    for node in (0, 1):
        for local in (0, 1):
            for key, value in step_env(local, node, "2(x2)", "0,1").items():
                monkeypatch.setenv(key, value)
            rank = 2 * node + local
            ids[rank] = shard_identity(CFG, gen, rank, 4)
            assert shard_identity(CFG, planned("refine.apply_chunk"), rank, 4) == {"rank": rank, "world_size": 4}
    assert ids == {0: {"rank": 0, "world_size": 2}, 1: {"rank": 0, "world_size": 2, "idle": True},
                   2: {"rank": 1, "world_size": 2}, 3: {"rank": 1, "world_size": 2, "idle": True}}


def test_a_launch_that_cannot_be_paired_fails_before_any_stage(monkeypatch):
    from proxlab.runner.run import check_gpu_layout

    for key, value in step_env(0, tasks_per_node="2", gpus="0").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="cluster.devices=2: 2 tasks on node n1 but each sees 1 GPU"):
        check_gpu_layout([planned("prepare"), planned("pretrain")])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    check_gpu_layout([planned("prepare")])
    with pytest.raises(ConfigError, match="refine.doc.tensor_parallel_size=4"):
        check_gpu_layout([planned("prepare"), planned("refine.generate_doc", level="doc", tensor_parallel_size=4)])


def test_every_stage_process_records_what_it_was_given(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("SLURM_LOCALID", "3")
    monkeypatch.setenv("SLURMD_NODENAME", "n7")
    spec = StageSpec(stage="test.stage", key="k", out_dir=str(tmp_path / "out"), config={},
                     runtime={"rank": 5, "world_size": 8})
    run_stage(lambda s: None, spec)
    (record,) = read_jsonl(tmp_path / "out" / DEVICES)
    assert {k: record[k] for k in ("event", "stage", "rank", "world_size", "node", "slurm_localid",
                                   "cuda_visible_devices")} == \
        {"event": "start", "stage": "test.stage", "rank": 5, "world_size": 8, "node": "n7", "slurm_localid": "3",
         "cuda_visible_devices": "3"}
