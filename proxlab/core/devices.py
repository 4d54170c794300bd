"""Which GPUs a stage process gets (docs/slurm.md, "GPU binding"). Standard library only: pure functions of the
environment the launcher gave this task.

`slurm/run.sh` starts one orchestrator per GPU with a plain `srun`, and every task of a node then sees all of the
node's GPUs (`CUDA_VISIBLE_DEVICES=0,1,...,7` on each). Pretraining wants exactly that: Fabric takes
`cuda:<local rank>`. Every other stage opens "the" GPU, i.e. the first one it sees, so eight engines would share GPU
0. The orchestrator therefore narrows `CUDA_VISIBLE_DEVICES` for every stage that is not Fabric's:

* several tasks on a node, one GPU each: local task i gets the node's GPU i;
* engines of k GPUs (a refiner's `tensor_parallel_size=k`): local tasks i..i+k-1 (i a multiple of k) form one engine,
  led by local task i, which gets GPUs i..i+k-1; the other tasks of the engine run nothing for that stage and wait;
* one task on its node (a job-array task, `proxlab run` on a workstation): it keeps every GPU it sees;
* no GPU visible (CPU runs): nothing changes.

Any other pairing (a node whose task count is not its GPU count, or not a multiple of k) raises `GpuLayoutError`,
which names the numbers; the orchestrator checks every stage of the plan before the first one runs.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping

from proxlab.core.config import ConfigError

# CUDA_VISIBLE_DEVICES when Slurm allocated GPUs that have no device files: no usable GPU.
_NO_DEVICE_FILES = "NoDevFiles"
_ONE_TASK_PER_GPU = ("launch one task per GPU (sbatch --ntasks-per-node=G --gpus-per-node=G, without --gpus-per-task "
                     "or --gpu-bind): pretraining pairs local rank i with GPU i of the node")


class GpuLayoutError(ConfigError):
    """Tasks and GPUs that cannot be paired. A ConfigError: the orchestrator reports it like a wrong setting (naming
    the key to change) and exits before any stage runs."""


@dataclass(frozen=True)
class TaskLayout:
    """Where this process sits among the tasks of one launch (an srun step, torchrun)."""

    node: int = 0  # this node's index in the launch
    local_rank: int = 0  # this task's index among the tasks of its node
    tasks_per_node: tuple[int, ...] = (1,)  # every node's task count, in node order
    host: str = ""  # the node's name, for messages

    @property
    def local_tasks(self) -> int:
        return self.tasks_per_node[self.node]


def expand_tasks_per_node(value: str) -> tuple[int, ...]:
    """Slurm's compressed task counts, one per node: "2(x3),1" → (2, 2, 2, 1)."""
    counts: list[int] = []
    for part in value.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ValueError(f"cannot read tasks per node {value!r} (expected e.g. '2(x3),1')")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return tuple(counts)


def task_layout(env: Mapping[str, str] = os.environ) -> TaskLayout:
    """This process's place: from an srun step (SLURM_STEP_TASKS_PER_NODE, SLURM_NODEID, SLURM_LOCALID), else from
    torchrun (LOCAL_WORLD_SIZE, GROUP_RANK, LOCAL_RANK), else a process alone on its node. Only a step counts under
    Slurm: a batch script's shell, and what it runs without srun, is one process whatever the job's task count."""
    host = env.get("SLURMD_NODENAME") or socket.gethostname()
    if "SLURM_STEP_TASKS_PER_NODE" in env and "SLURM_LOCALID" in env:
        return TaskLayout(int(env.get("SLURM_NODEID", "0")), int(env["SLURM_LOCALID"]),
                          expand_tasks_per_node(env["SLURM_STEP_TASKS_PER_NODE"]), host)
    if "LOCAL_RANK" in env and "LOCAL_WORLD_SIZE" in env:
        local = int(env["LOCAL_WORLD_SIZE"])
        nodes = max(1, int(env.get("WORLD_SIZE", local)) // local)
        return TaskLayout(int(env.get("GROUP_RANK", "0")), int(env["LOCAL_RANK"]), (local,) * nodes, host)
    return TaskLayout(host=host)


def visible_gpus(env: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use, as listed for it: CUDA_VISIBLE_DEVICES when set (Slurm sets it for a step with
    GPUs), else the step's SLURM_STEP_GPUS; [] for none. Not SLURM_JOB_GPUS: a step may hold fewer GPUs than its job."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        value = env.get("SLURM_STEP_GPUS", "")
    value = value.strip()
    if value == _NO_DEVICE_FILES or value.startswith("-"):  # CUDA reads "-1" (or any invalid first id) as none
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


@dataclass(frozen=True)
class Engine:
    """One engine run by `size` tasks together: its index among all engines of the launch, how many there are, and
    whether this task leads it (runs the stage process) or waits."""

    rank: int
    world: int
    leader: bool


def engine_of(layout: TaskLayout, size: int, key: str = "tensor_parallel_size") -> Engine | None:
    """The engine this task belongs to when a stage runs one engine per `size` GPUs; None when every task is its own
    engine (size 1, or one task per node: that task's GPUs are the engine's). Engines are numbered node by node, so
    engine 0 is led by the first task of the first node (global rank 0, which finalizes sharded stages).
    `key` names the setting in errors."""
    if size < 1:
        raise GpuLayoutError(key, size, "must be at least 1")
    if size == 1 or max(layout.tasks_per_node) == 1:
        return None
    uneven = {node: n for node, n in enumerate(layout.tasks_per_node) if n % size}
    if uneven:
        node, n = next(iter(uneven.items()))
        raise GpuLayoutError(key, size, f"tasks group into engines of {size} GPUs on one node, but node {node} runs "
                                        f"{n} task(s): run a multiple of {size} tasks per node, one per GPU")
    before = sum(layout.tasks_per_node[:layout.node])
    return Engine(rank=(before + layout.local_rank) // size, world=sum(layout.tasks_per_node) // size,
                  leader=layout.local_rank % size == 0)


def task_gpus(visible: list[str], layout: TaskLayout, size: int = 1,
              key: str = "tensor_parallel_size") -> list[str] | None:
    """The CUDA_VISIBLE_DEVICES entries for a (non-Fabric) stage process of this task: its own GPU, or the `size` GPUs
    of its engine; None to leave the environment as it is (no GPU visible, or the task is alone on its node and keeps
    every GPU it sees). Raises GpuLayoutError when tasks and GPUs cannot be paired."""
    engine_of(layout, size, key)  # checks the grouping
    if not visible:
        return None
    tasks, listed = layout.local_tasks, f"CUDA_VISIBLE_DEVICES={','.join(visible)}"
    if tasks == 1:
        if size > len(visible):
            raise GpuLayoutError(key, size, f"an engine needs {size} GPUs but the task on {layout.host} sees "
                                            f"{len(visible)} ({listed})")
        return None
    if len(visible) != tasks:
        raise GpuLayoutError("cluster.devices", tasks, f"{tasks} tasks on node {layout.host} but each sees "
                                                       f"{len(visible)} GPU(s) ({listed}): {_ONE_TASK_PER_GPU}")
    first = layout.local_rank // size * size
    return visible[first:first + size]
