"""The shard executor (proxlab.core.sharding) on its own: placement, claims, waiting, who finalizes, and that a
failing check leaves no `_SUCCESS`. The same executor under Slurm job arrays and SPMD: tests/slurm/test_shard_executor.py."""

from __future__ import annotations

import fcntl
import json
import threading
import time
from pathlib import Path

import pytest

from proxlab.core.sharding import ShardStats, ShardWork, open_shards, run_shards, shard_provenance, stats_path
from proxlab.core.stage import StageResult, StageSpec, is_complete, run_stage


def spec(out: Path, **runtime) -> StageSpec:
    return StageSpec(stage="test.sharded", key="k", out_dir=str(out), config={}, runtime=runtime)


class Work:
    """Six shards; `process` records each call and writes one output file per shard."""

    def __init__(self, out: Path, n: int = 6, fail_check: str | None = None):
        self.out, self.calls, self.checks, self.fail_check = out, [], 0, fail_check
        self.shards = [Path(f"in-{i}") for i in range(n)]

    def process(self, index: int, path: Path) -> ShardStats:
        self.calls.append(index)
        (self.out / f"out-{index}.txt").write_text(str(path))
        return ShardStats(docs_in=10, docs_out=index, dropped={"short": 10 - index})

    def check(self) -> None:
        self.checks += 1
        if self.fail_check:
            raise RuntimeError(self.fail_check)

    def work(self) -> ShardWork:
        return ShardWork(self.shards, self.process, self.check, desc="test")


def test_single_process_does_every_shard_checks_and_sums(tmp_path):
    w = Work(tmp_path)
    total = run_shards(spec(tmp_path), w.work())
    assert sorted(w.calls) == list(range(6)) and w.checks == 1
    assert (total.docs_in, total.docs_out, total.dropped) == (60, 15, {"short": 45})
    assert {i: b["rank"] for i, b in shard_provenance(tmp_path, 6).items()} == dict.fromkeys(range(6), 0)


def test_a_finished_shard_is_never_redone(tmp_path):
    w = Work(tmp_path)
    run_shards(spec(tmp_path), w.work())
    stats_path(tmp_path, 2).unlink()  # as if the process died after shard 1
    w2 = Work(tmp_path)
    run_shards(spec(tmp_path), w2.work())
    assert w2.calls == [2]


def test_spmd_ranks_split_shards_and_only_rank_0_finalizes(tmp_path):
    w0, w1 = Work(tmp_path), Work(tmp_path)
    results = {}
    t0 = threading.Thread(target=lambda: results.update(r0=run_shards(spec(tmp_path, rank=0, world_size=2),
                                                                      w0.work(), poll_s=0.05)))
    t0.start()  # rank 0 does its shards, then waits for rank 1's
    results["r1"] = run_shards(spec(tmp_path, rank=1, world_size=2), w1.work())
    t0.join(timeout=30)
    assert sorted(w0.calls) == [0, 2, 4] and sorted(w1.calls) == [1, 3, 5]
    assert results["r1"] is None and results["r0"].docs_in == 60
    assert (w0.checks, w1.checks) == (1, 0)
    assert {i: b["rank"] for i, b in shard_provenance(tmp_path, 6).items()} == {i: i % 2 for i in range(6)}


def test_spmd_rank_0_times_out_naming_the_missing_shards(tmp_path):
    with pytest.raises(TimeoutError, match=r"3 shard\(s\) \(e.g. \[1, 3, 5\]\)"):
        run_shards(spec(tmp_path, rank=0, world_size=2), Work(tmp_path).work(), wait_timeout_s=0.2, poll_s=0.05)


def test_array_task_skips_held_shards_and_leaves_without_waiting(tmp_path):
    """A shard another live task holds is left to it; the task leaves at once instead of waiting for it."""
    held = open(tmp_path / ".shard-00003.lock", "w")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    w = Work(tmp_path)
    assert run_shards(spec(tmp_path, rank=4, world_size=6, array=True), w.work(), wait_timeout_s=0.0) is None
    assert sorted(w.calls) == [0, 1, 2, 4, 5] and w.checks == 0 and open_shards(tmp_path, 6) == [3]
    held.close()  # its holder died: the shard is open to anyone, e.g. the task resubmitted alone
    again = Work(tmp_path)
    total = run_shards(spec(tmp_path, rank=0, world_size=6, array=True), again.work())
    assert again.calls == [3] and again.checks == 1 and total.docs_in == 60


def test_array_only_one_task_finalizes(tmp_path):
    run_shards(spec(tmp_path, rank=0, world_size=2, array=True), Work(tmp_path).work())  # finalizes (lock held)
    late = Work(tmp_path)
    assert run_shards(spec(tmp_path, rank=1, world_size=2, array=True), late.work()) is None
    assert late.calls == [] and late.checks == 0


def test_a_failing_check_leaves_no_success_and_says_why(tmp_path):
    def main(s: StageSpec):
        total = run_shards(s, Work(s.out, fail_check="3 input ids neither kept nor dropped").work())
        return None if total is None else StageResult(counts={"docs": total.docs_in})

    with pytest.raises(RuntimeError, match="3 input ids neither kept nor dropped"):
        run_stage(main, spec(tmp_path / "stage", rank=0, world_size=1, array=True))
    assert not is_complete(tmp_path / "stage") and not (tmp_path / "stage" / "manifest.json").exists()
    assert len(list((tmp_path / "stage").glob("shard-*.json"))) == 6  # the work stays: a fixed check reuses it


def test_run_stage_writes_manifest_and_success_only_for_the_finalizer(tmp_path):
    def main(s: StageSpec):
        total = run_shards(s, Work(s.out).work())
        return None if total is None else StageResult(counts={"docs": total.docs_in})

    held = open(tmp_path / "a" / ".shard-00000.lock", "w") if (tmp_path / "a").mkdir() is None else None
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert run_stage(main, spec(tmp_path / "a", rank=1, world_size=2, array=True)) is None
    assert not is_complete(tmp_path / "a")
    held.close()
    result = run_stage(main, spec(tmp_path / "a", rank=0, world_size=2, array=True))
    assert result.counts == {"docs": 60} and is_complete(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["counts"] == {"docs": 60}


def test_spmd_ranks_of_two_jobs_split_one_stage_and_one_of_them_finalizes(tmp_path):
    """Two jobs run the same stage at once (experiments of a sweep submitted as jobs share it), each as rank 0 of its
    own world: every shard is done once, by whichever job claims it; one rank 0 finalizes, the other waits for its
    `_SUCCESS` and writes nothing. A shard held by a process that dies is done by a waiting job."""
    held = open(tmp_path / ".shard-00005.lock", "w")  # a third job's rank is on shard 5 ...
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def job(name: str, results: dict) -> None:
        def main(s: StageSpec):
            total = run_shards(s, works[name].work(), poll_s=0.05)
            return None if total is None else StageResult(counts={"docs": total.docs_in})

        results[name] = run_stage(main, spec(tmp_path, rank=0, world_size=1))

    works, results = {"a": Work(tmp_path), "b": Work(tmp_path)}, {}
    threads = [threading.Thread(target=job, args=(name, results)) for name in works]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(works["a"].calls) + len(works["b"].calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not is_complete(tmp_path)  # both wait for shard 5
    held.close()  # ... and dies: one of the waiting jobs takes it
    for t in threads:
        t.join(timeout=30)
    assert sorted(works["a"].calls + works["b"].calls) == list(range(6))
    finalized = [name for name, result in results.items() if result is not None]
    assert len(finalized) == 1 and results[finalized[0]].counts == {"docs": 60}
    assert works["a"].checks + works["b"].checks == 1 and is_complete(tmp_path)
