"""A sweep as Slurm jobs (`proxlab submit -m exp=NAME [overrides]`), and the record a failed experiment leaves.

`submit_sweep` expands the sweep exactly as `proxlab run -m` does (Hydra's basic sweeper and override parser, the
exp file's `hydra.sweeper.params` included), composes and plans every experiment, and submits one `slurm/run.sh` job
per experiment plus a report job (`slurm/report.sh`) that runs after all of them (`--dependency=afterany`).

Work several experiments need is computed once:

* a sharded stage (prepare, refine.*, evaluate's units) is split among the ranks of every job that runs it (claims in
  `proxlab.core.sharding`); the rank 0 that finalizes writes the manifest, the others wait for its `_SUCCESS`;
* a single-process stage (tokenizer, tokenize) is guarded by the artifact lock (`run.artifact_lock`): one
  job computes it, the others wait for the lock and reuse it;
* a stage every rank of one job runs together (pretraining: one Fabric world) cannot be split or locked across jobs:
  a job that needs such a stage an earlier job of the sweep produces starts after that job (`--dependency=afterany`:
  it reuses the stage, or retries it if that job failed before finishing it).

docs/slurm.md ("Sweeps as jobs") explains the choice.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from proxlab.core.stage import SPEC_FILE, atomic_write_text, now_iso
from proxlab.runner.graph import PlannedStage

FAILURE = "failed.json"  # in a run directory: the latest attempt of this experiment failed (report: a failed row)
JOBS = "jobs.json"  # in a sweep directory: the jobs of its latest submission (report: rows of jobs that left nothing)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


# ---------------------------------------------------------------------------------------------------------------------
# A failed experiment's record


def failure_record(labels: dict[str, Any], stage: PlannedStage | None, error: str,
                   exit_code: int | None = None) -> dict[str, Any]:
    """What the report shows of a failed experiment: its labels, the stage that failed, the error, and where to look
    (the stage's spec and artifact directory, the run's log, the Slurm job)."""
    from proxlab.core.logs import RUN_LOG

    record = {**labels, "status": "failed", "error": error, "exit_code": exit_code, "overrides": job_overrides(),
              "stage": stage.name if stage else None, "finished": now_iso()}
    if stage is not None:
        record.update(stage_dir=str(stage.out_dir), spec=str(stage.out_dir / SPEC_FILE))
    if labels.get("run_dir"):
        record["log"] = str(Path(labels["run_dir"]) / RUN_LOG)
    if os.environ.get("SLURM_JOB_ID"):
        record["slurm_job"] = os.environ["SLURM_JOB_ID"]
    return record


def write_failure(run_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / FAILURE, json.dumps(record, indent=2, sort_keys=True))


def job_overrides() -> list[str]:
    """The command line's overrides of this Hydra job (a sweep's experiment: its combination), [] outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def failed_experiment(cfg: DictConfig, error: str) -> dict[str, Any]:
    """The record of an experiment of a local sweep that failed, kept in memory for the sweep's end (and, when it
    failed before it had a run directory, for the report)."""
    try:
        name = OmegaConf.select(cfg, "name", default=None)
    except Exception:  # the very error may be an unresolvable name
        name = None
    return {"status": "failed", "stage": None, "error": error, "overrides": job_overrides(), "experiment": name,
            "finished": now_iso()}


# ---------------------------------------------------------------------------------------------------------------------
# Expanding and planning a sweep


@dataclass
class SweepJob:
    """One experiment of a sweep, planned, as the Slurm job that runs it."""

    index: int
    overrides: list[str]  # this experiment's overrides, exactly as `run -m` hands them to its Hydra job
    labels: dict[str, Any]  # experiment, sweep, variant, model, run_dir, ... (run.run_labels): its report row
    cluster: dict[str, Any]
    run_dir: Path
    stages: list[PlannedStage]
    after: list[int] = field(default_factory=list)  # jobs (indices) that must have ended first
    job_id: str = ""


@dataclass
class SharedStage:
    """A stage (one key) that several experiments of the sweep need."""

    stage: PlannedStage
    users: list[int]  # job indices, in sweep order
    complete: bool

    @property
    def how(self) -> str:
        if self.complete:
            return "complete: every job reuses it"
        if one_job_only(self.stage):
            return f"job {self.users[0]} computes it; jobs {self.users[1:]} start after that job (--dependency)"
        if self.stage.definition.spmd:
            return ("the ranks of the jobs running it at once split its shards (claims; one finalizes), a later job "
                    "reuses it")
        return "the first job to reach it computes it; the others wait on its artifact lock and reuse it"


def one_job_only(stage: PlannedStage) -> bool:
    """A stage two jobs must not run at once: every rank of one job runs it together (pretraining is one Fabric world),
    so neither the shard executor's claims (prepare, refine.*, evaluate's units) nor the artifact lock
    (single-process stages) can share it between jobs."""
    return stage.definition.fabric


def expand_sweep(loader, overrides: list[str]) -> tuple[list[list[str]], DictConfig]:
    """Each experiment's overrides, as Hydra's basic sweeper expands a multirun: the config's `hydra.sweeper.params`
    (an exp file's sweep) then the command line's overrides (a key given on both: the command line's), parsed by
    Hydra's override parser (`a=1,2`, `range()`, `glob()`, ...) into their cartesian product, in the same order; and
    the multirun's config, which composes each experiment (`loader.load_sweep_config`)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    master = loader.load_configuration("config", overrides, run_mode=RunMode.MULTIRUN)
    sweeper = master.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        raise ValueError(f"proxlab submit -m expands sweeps as Hydra's basic sweeper does; hydra/sweeper is "
                         f"{sweeper.get('_target_')!r}")
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    parser = OverridesParser.create(config_loader=loader)
    parsed = parser.parse_overrides(params + list(master.hydra.overrides.task))
    (combinations,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(c) for c in combinations], master


def plan_sweep(overrides: list[str]) -> list[SweepJob]:
    """Expand the sweep, then compose, validate and plan each experiment (a bad value fails here, naming the
    experiment and the key, before anything is submitted); set each job's dependencies (`one_job_only`)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException

    from proxlab.core.config import ConfigError
    from proxlab.runner.compose import CONF_DIR, register_schemas
    from proxlab.runner.graph import plan
    from proxlab.runner.run import run_directory, run_labels
    from proxlab.runner.validate import validate

    register_schemas()
    jobs = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        try:
            combinations, master = expand_sweep(loader, overrides)
        except HydraException as e:  # an unknown config or key, a bad sweep expression: Hydra's message says which
            raise ValueError(str(e)) from e
        for index, combination in enumerate(combinations):
            try:
                cfg = loader.load_sweep_config(master, combination)
                HydraConfig.instance().set_config(cfg)  # `${hydra:runtime.choices...}` in names resolve per experiment
                validate(cfg)
                stages = plan(cfg, Path(cfg.paths.artifacts_dir).resolve())
            except (HydraException, ConfigError, ValueError, FileNotFoundError) as e:
                raise ValueError(f"experiment {index} of the sweep ({' '.join(combination)}): {e}") from e
            run_dir = run_directory(cfg, stages)
            jobs.append(SweepJob(index, combination, run_labels(cfg, run_dir),
                                 OmegaConf.to_container(cfg.cluster, resolve=True), run_dir, stages))
    for shared in shared_stages(jobs).values():
        if not shared.complete and one_job_only(shared.stage):
            for user in shared.users[1:]:
                if shared.users[0] not in jobs[user].after:
                    jobs[user].after.append(shared.users[0])
    return jobs


def shared_stages(jobs: list[SweepJob]) -> dict[str, SharedStage]:
    """Stage key -> the stage and the jobs that need it, for keys more than one job needs."""
    from proxlab.core.stage import is_complete

    users: dict[str, list[int]] = {}
    stages: dict[str, PlannedStage] = {}
    for job in jobs:
        for stage in job.stages:
            users.setdefault(stage.key, []).append(job.index)
            stages[stage.key] = stage
    return {key: SharedStage(stages[key], idx, is_complete(stages[key].out_dir))
            for key, idx in users.items() if len(idx) > 1}


# ---------------------------------------------------------------------------------------------------------------------
# Submitting


def submit_sweep(overrides: list[str], dry_run: bool = False, cwd: str | None = None) -> list[SweepJob]:
    """Plan the sweep, submit its jobs in order (a dependency names an earlier job's id), then one report job per
    sweep directory after all of them (afterany: failed experiments are rows too); write `<sweep dir>/jobs.json`."""
    from proxlab.runner.slurm import LOG_DIR, build_report_command, build_sbatch_command, run_sbatch

    jobs = plan_sweep(overrides)
    describe(jobs)
    for job in jobs:
        options = []
        if job.after:
            # afterany, not afterok: a job that failed after producing the stage (in evaluate, say) must not cancel
            # the jobs that reuse it; one that failed before finishing it leaves it to them to retry.
            ids = ":".join(jobs[i].job_id or f"<job {i}>" for i in job.after)
            options = [f"--dependency=afterany:{ids}"]
        cmd = build_sbatch_command(job.cluster, job.overrides, options=options, job_name=job_name(job))
        job.job_id = run_sbatch(cmd, job.cluster, dry_run=dry_run, cwd=cwd)
    for sweep_dir, members in sweep_dirs(jobs).items():
        ids = ":".join(j.job_id or f"<job {j.index}>" for j in members)
        cmd = build_report_command(members[0].cluster, sweep_dir.name, str(sweep_dir.parent), after=ids)
        report_id = run_sbatch(cmd, members[0].cluster, dry_run=dry_run, cwd=cwd)
        if dry_run:
            continue
        record = {"submitted": now_iso(), "report_job": report_id,
                  "report_log": f"{LOG_DIR}/proxlab-report-{sweep_dir.name}-{report_id}.out",
                  "jobs": [{**j.labels, "index": j.index, "overrides": j.overrides, "job_id": j.job_id,
                            "after": j.after,
                            "log": str(Path(cwd or os.getcwd()) / LOG_DIR / f"{job_name(j)}-{j.job_id}.out")}
                           for j in members]}
        atomic_write_text(sweep_dir / JOBS, json.dumps(record, indent=2))
    return jobs


def job_name(job: SweepJob) -> str:
    """proxlab-<experiment>-<index> (the %x of its log file, logs/slurm/%x-%j.out)."""
    return "proxlab-" + re.sub(r"[^A-Za-z0-9_.+-]+", "_", job.labels["experiment"])[:60] + f"-{job.index}"


def sweep_dirs(jobs: list[SweepJob]) -> dict[Path, list[SweepJob]]:
    out: dict[Path, list[SweepJob]] = {}
    for job in jobs:
        out.setdefault(job.run_dir.parent, []).append(job)
    return out


def describe(jobs: list[SweepJob]) -> None:
    """Print the sweep's jobs and how the work they share is computed once."""
    print(f"[proxlab] sweep: {len(jobs)} experiment(s) -> {len(jobs)} job(s) and a report job after them", flush=True)
    for job in jobs:
        after = f"  (after job {', '.join(map(str, job.after))})" if job.after else ""
        print(f"[proxlab]   job {job.index}: {' '.join(job.overrides)} -> {job.run_dir}{after}", flush=True)
    shared = shared_stages(jobs)
    if shared:
        print("[proxlab] shared work, computed once:", flush=True)
    for key, s in shared.items():
        print(f"[proxlab]   {s.stage.name:<22} {key}  jobs {s.users}: {s.how}", flush=True)

