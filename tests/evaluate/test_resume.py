"""The evaluate stage resumes: killed (SIGKILL) between checkpoints and in the middle of one, or stopped by SIGUSR1
(exit 3), then run again, on two SPMD ranks, it writes what an uninterrupted run writes, evaluates no unit
(checkpoint x task) twice, and reuses every request an interrupted unit saved in lm-eval's cache."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from proxlab.core.stage import EXIT_REQUEUE, StageSpec, read_jsonl, run_stage
from proxlab.evaluate.runner import Preempted
from proxlab.evaluate.stage import EVALUATIONS, Preemption, main

torch.set_num_threads(1)

# Four units, in this order: step-00000010.{arc_easy,hellaswag}, final.{arc_easy,hellaswag}; 40 requests each
# (10 questions x 4 choices), scored one by one (batch 1), so a run resumed halfway scores each exactly as an
# uninterrupted run does.
CONFIG = {"suite": "tiny_mc", "tasks": ["arc_easy", "hellaswag"], "limit": 10, "batch_size": 1,
          "checkpoints": "all"}
UNITS = ["step-00000010.arc_easy", "step-00000010.hellaswag", "final.arc_easy", "final.hellaswag"]
ENV = {**os.environ, "PROXLAB_EVAL_THREADS": "1", "PROXLAB_EVAL_COMMIT_S": "0"}  # commit every saved request


def make_spec(out: Path, artifact: Path, **runtime) -> StageSpec:
    return StageSpec(stage="evaluate", key="k" * 16, out_dir=str(out), config=dict(CONFIG),
                     inputs={"checkpoint": str(artifact)}, logger={"mode": "disabled"}, runtime=runtime)


@pytest.fixture(scope="module")
def reference(tiny_artifact, tmp_path_factory) -> Path:
    """An uninterrupted run, one process."""
    spec = make_spec(tmp_path_factory.mktemp("reference") / "artifact", tiny_artifact)
    run_stage(main, spec)
    return spec.out


class Rank:
    """One rank of the stage as its own process (``python -m proxlab.evaluate.stage``), as the orchestrator runs it."""

    def __init__(self, out: Path, artifact: Path, rank: int, world: int):
        self.spec_path = out.parent / f"spec.rank{rank}.json"
        make_spec(out, artifact, rank=rank, world_size=world).save(self.spec_path)
        self.log = open(out.parent / f"rank{rank}.log", "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "proxlab.evaluate.stage", "--spec", str(self.spec_path)],
                                     env=ENV, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_until(self, condition, what: str, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.proc.poll() is None, f"the stage exited ({self.proc.returncode}) before {what}: {self.tail()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s} s: {self.tail()}"
            time.sleep(0.01)

    def finish(self, timeout_s: float = 240) -> int:
        code = self.proc.wait(timeout=timeout_s)
        self.log.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.finish()

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-3000:]


def cached_requests(out: Path, unit: str) -> int:
    """Committed entries of a unit's request cache (lm-eval's sqlite file, local rank 0)."""
    path = out / "cache" / f"{unit}_rank0.db"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM unnamed").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or busy
        return 0


def events(out: Path, unit: str, event: str | None = None) -> list[dict]:
    return [e for e in read_jsonl(out / EVALUATIONS) if e["unit"] == unit and event in (None, e["event"])]


def unit_done(out: Path, unit: str) -> bool:
    label, task = unit.split(".")
    return (out / "units" / label / f"{task}.json").exists()


def without_volatile(path: Path) -> dict:
    res = json.loads(path.read_text())
    res.pop("runtime_s")
    res["samples_dir"] = Path(res["samples_dir"]).name
    return res


def test_killed_and_preempted_runs_resume_to_the_uninterrupted_results(tiny_artifact, reference, tmp_path):
    out = tmp_path / "artifact"
    # 1. Rank 0 of 2 (units 0 and 2) is killed once it finished step-10's unit: between checkpoints.
    r0 = Rank(out, tiny_artifact, 0, 2)
    r0.wait_until(lambda: (out / "shard-00000.json").exists(), "step-10's unit")
    r0.kill()
    # 2. Killed again in the middle of final's unit, after it saved some requests.
    r0 = Rank(out, tiny_artifact, 0, 2)
    r0.wait_until(lambda: cached_requests(out, UNITS[2]) >= 3, "saved requests of final's unit")
    r0.kill()
    assert not unit_done(out, UNITS[2])
    saved_when_killed = cached_requests(out, UNITS[2])
    # 3. Rank 0 finishes its units, then waits for rank 1's: SIGUSR1 there stops it at once, exit 3.
    r0 = Rank(out, tiny_artifact, 0, 2)
    r0.wait_until(lambda: (out / "shard-00002.json").exists(), "rank 0's units")
    r0.proc.send_signal(signal.SIGUSR1)
    assert r0.finish() == EXIT_REQUEUE, r0.tail()
    # 4. Rank 1 alone: SIGUSR1 as its final unit starts stops it after the unit's first saved request, exit 3.
    r1 = Rank(out, tiny_artifact, 1, 2)
    r1.wait_until(lambda: events(out, UNITS[3], "start"), "final's unit on rank 1")
    r1.proc.send_signal(signal.SIGUSR1)
    assert r1.finish() == EXIT_REQUEUE, r1.tail()
    assert not unit_done(out, UNITS[3]) and not (out / "_SUCCESS").exists()
    # 5. Both ranks again: rank 1 completes its unit from the cache, rank 0 finalizes.
    r0, r1 = Rank(out, tiny_artifact, 0, 2), Rank(out, tiny_artifact, 1, 2)
    assert (r1.finish(), r0.finish()) == (0, 0), r0.tail() + r1.tail()
    assert (out / "_SUCCESS").exists() and not (out / "cache").exists()

    # The outputs of the uninterrupted run
    for rel in ("results.json", "by_step/step-00000010.json"):
        assert without_volatile(out / rel) == without_volatile(reference / rel), rel
    samples = sorted(p.relative_to(reference) for p in (reference / "samples").rglob("*.jsonl"))
    assert len(samples) == 4
    for rel in samples:
        assert (out / rel).read_text() == (reference / rel).read_text(), rel
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(out / "metrics.jsonl")) == strip(read_jsonl(reference / "metrics.jsonl"))
    assert json.loads((out / "manifest.json").read_text())["counts"] == \
        json.loads((reference / "manifest.json").read_text())["counts"] == {"tasks": 2, "samples": 40,
                                                                               "checkpoints": 2}

    # No unit evaluated twice: one "done" each, by its rank, and nothing started after it
    total = {u: e["total"] for u in UNITS for e in events(reference, u, "done")}
    assert total == dict.fromkeys(UNITS, 40)
    for i, unit in enumerate(UNITS):
        log = events(out, unit)
        done = [k for k, e in enumerate(log) if e["event"] == "done"]
        assert len(done) == 1 and not [e for e in log[done[0] + 1:] if e["event"] == "start"], log
        label, task = unit.split(".")
        record = json.loads((out / "units" / label / f"{task}.json").read_text())
        assert record["by"]["rank"] == i % 2 and record["requests"]["total"] == total[unit]
    # ... and no request computed twice: a resumed unit computed only what its cache did not hold
    killed = events(out, UNITS[2], "done")[0]
    assert killed["cached"] >= saved_when_killed >= 3 and killed["cached"] + killed["computed"] == 40
    stopped, = events(out, UNITS[3], "stopped")
    assert stopped["computed"] == 1  # the signal came before any request: it stopped after the first
    resumed = events(out, UNITS[3], "done")[0]
    assert resumed["cached"] == stopped["cached"] + stopped["computed"]
    assert resumed["cached"] + resumed["computed"] == 40
    assert {e["pid"] for e in events(out, UNITS[0])} == {events(out, UNITS[0], "done")[0]["pid"]}


def test_signal_outside_a_unit_stops_at_once_and_inside_one_after_it():
    stop = Preemption().install()
    try:
        with pytest.raises(Preempted):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(5)  # the handler raises here
        stop.signum = None
        with pytest.raises(Preempted):
            with stop.unit():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                inside_finished = stop.requested()  # noted, not raised: the unit goes on to a safe point
        assert inside_finished and stop.signum == signal.SIGTERM
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_litgpt_saves_each_request_as_it_finishes(tiny_artifact):
    """The model hands every request to lm-eval's cache hook as soon as it is scored, not after the whole call, so a
    stop after the third request leaves three saved."""
    from proxlab.evaluate.lms.litgpt import LitGPTLM

    lm = LitGPTLM(tiny_artifact / "final", batch_size=2)

    class StopAfter:
        def __init__(self, n: int | None):
            self.n, self.saved = n, []

        def add_partial(self, attr, req, res):
            self.saved.append((attr, req, res))
            if len(self.saved) == self.n:
                raise Preempted()

    hook = StopAfter(3)
    lm.set_cache_hook(hook)
    requests = [((f"ctx {i}", f" cont {i}"), [5, 6, 7 + i], [8, 9 + i]) for i in range(6)]
    with pytest.raises(Preempted):
        lm._loglikelihood_tokens(requests)
    assert len(hook.saved) == 3 and all(attr == "loglikelihood" for attr, _, _ in hook.saved)
    lm.set_cache_hook(StopAfter(None))
    full = lm._loglikelihood_tokens(requests)
    by_key = {req[0]: result for req, result in zip(requests, full)}
    assert all(by_key[key] == res for _, key, res in hook.saved)
