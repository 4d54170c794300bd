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
        if importlib.util.find_spec("proxlab.experiments.run") is None:
            return "proxlab.experiments.run does not exist yet (the orchestrator); the e2e Slurm tests need it"
    except ImportError as err:
        return f"proxlab.experiments.run is not importable: {err}"
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


def test_smoke_on_two_nodes_equals_local(slurm_cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    proc = subprocess.run([str(PYTHON), "-m", "proxlab.experiments.run", *COMMON, *_paths(local)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800, env=slurm_cluster.env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

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
    # Pretraining: 2 ranks x 1 micro-batch and 1 rank x 2 accumulated micro-batches take the same optimizer steps on
    # the same data; only the gradient summation order differs.
    (one,), (two,) = (list((root / "artifacts").glob("pretrain/*/train_summary.json")) for root in (local, remote))
    one, two = json.loads(one.read_text()), json.loads(two.read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2) and one["steps"] == two["steps"] == 20
    assert one["tokens"] == two["tokens"]
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-3)
    (a,), (b,) = (list((root / "runs" / "smoke").glob("*/summary.json")) for root in (local, remote))
    a, b = json.loads(a.read_text()), json.loads(b.read_text())
    assert a["docs/kept"] == b["docs/kept"] and a["tokens/train"] == b["tokens/train"]
    assert b["eval/avg"] == pytest.approx(a["eval/avg"], abs=0.05)


def test_requeue_during_pretraining_resumes(slurm_cluster, tmp_path):
    root = tmp_path / "slurm"
    log = tmp_path / "job.out"
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=1", *CPU_OPTS, f"--output={log}", f"--error={log}",
                               "slurm/run.sh", *COMMON, *_paths(root), cwd=REPO,
                               env=slurm_cluster.env(PROXLAB_PYTHON=str(PYTHON)))
    # Wait for the first complete pretraining checkpoint: artifacts/pretrain/<key>/step-NNNNNNNN/.
    deadline = time.monotonic() + 1500
    while not [p for p in (root / "artifacts").glob("pretrain/*/step-*") if re.fullmatch(r"step-\d{8}", p.name)]:
        state = slurm_cluster.state(job)
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), (
            f"job {state} before any pretraining checkpoint (save_interval too large for exp=smoke?):\n"
            + log.read_text()[-5000:])
        assert time.monotonic() < deadline, "no pretraining checkpoint appeared"
        time.sleep(1)
    # What the pre-timeout signal (--signal=B:USR1@300) does, now: the stage checkpoints, exits 3, the job requeues.
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", job)
    record = slurm_cluster.wait(job, timeout=1800)
    text = log.read_text()
    assert record["JobState"] == "COMPLETED" and record["Restarts"] == "1", text[-5000:]
    assert "requeued job" in text
    # The restarted pretrain stage resumed from its checkpoint (proxlab.pretrain.train logs "resumed from ... at
    # step N") and the stages before it were reused, not re-run.
    assert re.search(r"pretrain: resumed from \S+ at step [1-9]", text), text[-5000:]
    after_restart = text[text.index("restart 1 on"):]
    assert "prepare: reusing" in after_restart, after_restart[-5000:]
    (summary,) = (root / "artifacts").glob("pretrain/*/train_summary.json")
    assert json.loads(summary.read_text())["steps"] == 20


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
