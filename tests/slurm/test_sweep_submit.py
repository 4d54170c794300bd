"""`proxlab submit -m`: a sweep as Slurm jobs, one per experiment, and a report job after all of them.

Without a cluster: the sweep expands exactly as `run -m` expands it (Hydra's sweeper, the exp file's own
`hydra.sweeper.params`), and a stage only one job at a time can run (pretraining) makes the jobs that reuse it wait
for the job that computes it. On the one-host test cluster (marked `slurm`): three tiny experiments that share
prepare, refine.rules, tokenizer and tokenize run as three jobs at once, each shared stage completed by exactly one
process, and the report job renders all three. Each job has two ranks, so the two jobs the cluster runs at once split
the sharded stages (shard claims) when they reach them together; the third starts when a slot frees and reuses them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxlab.core.stage import COMPLETED_LOG, MANIFEST

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
CPU_JOB = ["cluster=slurm", "cluster.accelerator=cpu", "cluster.devices=1", "cluster.num_nodes=1",
           "cluster.cpus_per_task=1", "cluster.time=00:10:00"]
# Two ranks per job (one node, one CPU each: the test cluster runs two such jobs at once); the global batch of 8
# splits over them.
TWO_RANKS = [*CPU_JOB, "cluster.devices=2", "train.micro_batch_size=4"]
TINY = ["exp=smoke", "logger=none", "corpus.num_docs=60", "corpus.docs_per_shard=20", "train.warmup_steps=1",
        "train.save_interval=2", "eval.limit=4", "eval.tasks=[sciq]", "model.tokenizer.vocab_size=300"]


def paths(root: Path) -> list[str]:
    return [f"paths.runs_dir={root}/runs", f"paths.artifacts_dir={root}/artifacts"]


def expand(*overrides: str) -> list[list[str]]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from proxlab.runner.compose import CONF_DIR, register_schemas
    from proxlab.runner.sweep import expand_sweep

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return expand_sweep(GlobalHydra.instance().config_loader(), list(overrides))[0]


def test_the_paper_sweeps_expand_from_their_exp_files():
    table2 = expand("exp=table2")
    assert [job[0] for job in table2] == [f"refine={v}" for v in
                                          ("raw", "rules_gopher", "rules_c4", "rules_fineweb", "rules", "doc", "prox")]
    fig5 = expand("exp=fig5")
    assert len(fig5) == 12 and fig5[:5] == [
        ["model=tlm_xs", "refine=raw", "exp=fig5"], ["model=tlm_xs", "refine=prox_xs", "exp=fig5"],
        ["model=tlm_xs", "refine=prox_s", "exp=fig5"], ["model=tlm_xs", "refine=prox_m", "exp=fig5"],
        ["model=tlm_s", "refine=raw", "exp=fig5"]]
    # The command line wins over the exp file's sweep for the same key; range() and glob() are Hydra's.
    assert expand("exp=table2", "refine=raw,prox", "train.max_steps=range(10,30,10)") == [
        ["refine=raw", "exp=table2", "train.max_steps=10"], ["refine=raw", "exp=table2", "train.max_steps=20"],
        ["refine=prox", "exp=table2", "train.max_steps=10"], ["refine=prox", "exp=table2", "train.max_steps=20"]]
    assert [job[1] for job in expand("exp=smoke", "refine=glob(rules_*)")] == [
        "refine=rules_c4", "refine=rules_fineweb", "refine=rules_gopher"]


def test_the_jobs_are_the_experiments_run_minus_m_runs(tmp_path):
    """The same experiments, in the same order, with the same run directories as `proxlab plan -m` (Hydra's own
    multirun) plans them."""
    from proxlab.runner.sweep import plan_sweep

    sweep = [*CPU_JOB, *TINY, "refine=glob(rules_*)", "train.max_steps=range(2,4)", *paths(tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "proxlab.cli", "plan", "-m", *sweep], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    planned = re.findall(r"run directory: (\S+)", proc.stdout)
    jobs = plan_sweep(sweep)
    assert len(jobs) == 6 and [str(j.run_dir) for j in jobs] == planned


def test_a_shared_pretraining_makes_the_jobs_that_reuse_it_wait(tmp_path, capsys):
    from proxlab.runner.sweep import submit_sweep

    jobs = submit_sweep([*CPU_JOB, *TINY, "train.max_steps=2", "eval.limit=3,4,5", *paths(tmp_path)], dry_run=True)
    assert [j.after for j in jobs] == [[], [0], [0]]  # one pretraining, three evaluations
    assert len({s.key for j in jobs for s in j.stages if s.name == "pretrain"}) == 1
    commands = [line for line in capsys.readouterr().err.splitlines() if line.startswith("+ sbatch")]
    assert len(commands) == 4
    assert "--dependency" not in commands[0] and "--dependency=afterany:<job 0>" in commands[1]
    assert "slurm/report.sh sweep=smoke" in commands[3]
    assert "--dependency=afterany:<job 0>:<job 1>:<job 2>" in commands[3]
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.slurm
def test_three_experiments_as_three_jobs_share_their_common_stages(slurm_cluster, workdir):
    root = workdir
    sweep = [*TWO_RANKS, *TINY, "refine=rules", "train.max_steps=2,3,4", *paths(root)]
    proc = subprocess.run([str(PYTHON), "-m", "proxlab.cli", "submit", "-m", *sweep], cwd=workdir,
                          capture_output=True, text=True, timeout=300,
                          env=slurm_cluster.env(PROXLAB_PYTHON=str(PYTHON)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((root / "runs" / "smoke" / "jobs.json").read_text())
    jobs = record["jobs"]
    assert len(jobs) == 3 and all(not j["after"] for j in jobs)  # nothing only one job at a time may run
    report = slurm_cluster.wait(record["report_job"], timeout=600)
    logs = {j["job_id"]: Path(j["log"]).read_text() for j in jobs}
    report_log = (workdir / record["report_log"]).read_text()
    assert report["JobState"] == "COMPLETED", report_log[-3000:]
    for j in jobs:
        assert slurm_cluster.state(j["job_id"]) == "COMPLETED", logs[j["job_id"]][-5000:]
        assert (Path(j["run_dir"]) / "summary.json").exists()  # the run directory planned at submit time

    everything = "".join(logs.values())
    artifacts = root / "artifacts"
    for stage in ("prepare", "refine.rules", "tokenizer", "tokenize"):
        (key_dir,) = [d for d in (artifacts / stage).iterdir() if d.is_dir()]  # one artifact for all three
        manifest = json.loads((key_dir / MANIFEST).read_text())
        assert manifest["host"] and manifest["started"] and (key_dir / "_SUCCESS").exists()
        # Completed by exactly one process of one job, whichever got there first.
        assert everything.count(f"] {stage}: {COMPLETED_LOG}") == 1, stage
        if stage in ("prepare", "refine.rules"):  # sharded: a rank of any job may have done a shard
            by = [json.loads(p.read_text())["by"] for p in key_dir.glob("shard-*.json")]
            assert by and {b["job"] for b in by} <= set(logs) and {b["world"] for b in by} == {2}, by
            if stage == "refine.rules":  # its shards are prepare's 20-document output shards
                assert len(by) == len(list((artifacts / "prepare").glob("*/docs-*.parquet"))) == 3
        else:  # single-process: one job ran it, the others waited on its lock and reused it
            assert everything.count(f"{stage}: running") == 1, stage
    assert len([d for d in (artifacts / "pretrain").iterdir() if d.is_dir()]) == 3

    # The report job ran after all three and rendered them.
    table = (root / "runs" / "smoke" / "report" / "table.md").read_text()
    assert table.count("| rules | tiny |") == 3 and "failed" not in table, table
