"""`proxlab run exp=NAME [overrides]`: compose the experiment, plan its stage graph, run or reuse each stage, and write
the run directory (config, ledger, metrics.jsonl, summary, W&B).

Under Slurm every rank runs this same program (SPMD). Single-process stages run on rank 0 while the other ranks wait
for the stage's completion marker; sharded stages and pretraining run on every rank.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from proxlab.core.config import ConfigError
from proxlab.core.devices import engine_of, task_gpus, task_layout, visible_gpus
from proxlab.core.logs import RUN_LOG, get_logger, setup_logging
from proxlab.core.paths import data_dir
from proxlab.core.stage import EXIT_REQUEUE, SPEC_FILE, StageSpec, atomic_write_text, is_complete, rank_and_world
from proxlab.core.tracking import METRICS, MetricsLogger, experiment_wandb_settings
from proxlab.models.presets import tokenizer_standin
from proxlab.runner.compose import CONF_DIR, register_schemas
from proxlab.runner.graph import PlannedStage, plan, run_key
from proxlab.runner.launcher import (StageFailed, available_interpreters, install_preemption_handlers, interpreter,
                                    preempted, run_stage_process, stage_env)
from proxlab.runner.ledger import SUMMARY, Ledger, StageEntry, collect_stage_metrics, experiment_summary
from proxlab.runner.sweep import FAILURE, failed_experiment, failure_record, write_failure
from proxlab.runner.validate import validate

FAILED = "_FAILED"
# The experiments of this process's sweep (`run -m`) that failed: the sweep goes on, and main() exits non-zero at the
# end. Hydra runs a local sweep's jobs in this process, one after another.
FAILED_EXPERIMENTS: list[dict] = []

register_schemas()


_log = get_logger("runner")


def log(msg: str) -> None:
    _log.info(msg)


def run_directory(cfg: DictConfig, stages: list[PlannedStage]) -> Path:
    label = f"{cfg.refine.variant}-{cfg.model.preset}-{run_key(stages)}"
    return Path(cfg.paths.runs_dir).resolve() / (cfg.sweep or cfg.name) / label


def wandb_settings(cfg: DictConfig) -> dict:
    """The W&B settings of the experiment's runs: one group per experiment, each run's job type its stage."""
    return experiment_wandb_settings(OmegaConf.to_container(cfg.logger, resolve=True), experiment_labels(cfg))


def experiment_labels(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """What W&B groups, filters and compares an experiment's runs by (each stage run's config `labels`, its summary
    run's): sweep, experiment, variant, model, corpus, seeds, paper table and row, run directory."""
    return {"sweep": cfg.sweep or cfg.name, "experiment": cfg.name, "variant": cfg.refine.variant,
            "model": cfg.model.preset, "corpus": cfg.corpus.name, "seed": cfg.train.seed,
            "data_seed": cfg.train.get("data_seed"), "paper_table": cfg.paper_table,
            "report_row": cfg.report_row or f"{cfg.model.preset}/{cfg.refine.variant}",
            "run": Path(run_dir).name if run_dir else None}


def is_forced(stage: str, force: list[str]) -> bool:
    return any(stage == f or stage.startswith(f + ".") for f in force)


def remove_artifact(out_dir: Path) -> None:
    if out_dir.exists():
        trash = out_dir.with_name(f".{out_dir.name}.removed.{os.getpid()}")
        out_dir.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def exit_for_requeue(where: str) -> None:
    log(f"preempted {where}: exiting with code {EXIT_REQUEUE} so the job is requeued; finished stages are kept")
    sys.exit(EXIT_REQUEUE)


def wait_for(out_dir: Path, stage: str, poll_s: float = 2.0) -> None:
    """Non-zero ranks: wait until rank 0 marks the stage complete (or failed)."""
    while not is_complete(out_dir):
        if (out_dir / FAILED).exists():
            raise StageFailed(stage, 1, f" on rank 0 ({(out_dir / FAILED).read_text().strip()})")
        if preempted():
            exit_for_requeue(f"while waiting for {stage}")
        time.sleep(poll_s)


@contextlib.contextmanager
def artifact_lock(out_dir: Path, enabled: bool, poll_s: float = 2.0):
    """One writer per artifact: concurrent experiments (the jobs of a submitted sweep, job-array tasks) that need the
    same single-process stage take turns; the second finds it complete and reuses it. While waiting, a preemption
    signal still requeues the job."""
    if not enabled:
        yield
        return
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as fh:
        announced = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log(f"{out_dir.parent.name}: another experiment is computing {out_dir}; waiting for it")
                    announced = True
                if preempted():
                    exit_for_requeue(f"while waiting for {out_dir.parent.name}")
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def shard_identity(cfg: DictConfig, stage: PlannedStage, rank: int, world: int) -> dict:
    """Rank and world a stage process sees: a job-array task's own (slurm/refine_array.sh runs prepare and the refine
    stages as an array: every sharded stage before tokenize), the SPMD rank, or 0/1. A refiner with
    tensor_parallel_size=k runs one engine per k tasks of a node: its shards go to the engines (the engine's rank and
    world), and a task that does not lead an engine is `idle`: it waits for the stage, as non-zero ranks do for a
    single-process stage."""
    in_array = stage.name == "prepare" or stage.name.startswith("refine.")
    if in_array and cfg.refine.shard_rank is not None:  # range checked at compose time
        return {"rank": cfg.refine.shard_rank, "world_size": cfg.refine.num_shards, "array": True}
    if stage.definition.spmd:
        engine = engine_of(task_layout(), *engine_size(stage))
        if engine is not None:
            return {"rank": engine.rank, "world_size": engine.world, **({} if engine.leader else {"idle": True})}
        return {"rank": rank, "world_size": world}
    return {"rank": 0, "world_size": 1}


def engine_size(stage: PlannedStage) -> tuple[int, str]:
    """(GPUs per engine, the setting that says so) of a stage: a refiner's tensor_parallel_size; 1 for the others."""
    if stage.name.startswith("refine.generate_"):
        return int(stage.config.get("tensor_parallel_size", 1)), f"refine.{stage.config['level']}.tensor_parallel_size"
    if stage.name == "refiner.annotate" and stage.config.get("teacher") == "llm":  # the teacher's engines
        return int(stage.config["llm"].get("tensor_parallel_size", 1)), "refiner.annotate.llm.tensor_parallel_size"
    return 1, ""


def stage_gpus(stage: PlannedStage) -> list[str] | None:
    """The GPUs this task's process of `stage` may see (proxlab.core.devices), or None to leave them as they are:
    Fabric's processes (pretraining) take cuda:<local rank> of all their node's GPUs themselves."""
    if stage.definition.fabric:
        return None
    return task_gpus(visible_gpus(), task_layout(), *engine_size(stage))


def check_gpu_layout(stages: list[PlannedStage]) -> None:
    """Every stage's GPUs can be handed out; else a GpuLayoutError (a ConfigError naming the numbers) before the first
    stage runs, not hours later when the refiner starts."""
    for stage in stages:
        stage_gpus(stage)


def execute(cfg: DictConfig, stage: PlannedStage, run_dir: Path, rank: int, world: int) -> bool:
    """Run one stage unless its artifact is complete; return whether it was reused."""
    identity = shard_identity(cfg, stage, rank, world)
    single_writer = not identity.get("array") and identity["world_size"] == 1 and rank == 0
    with artifact_lock(stage.out_dir, single_writer):
        return _execute(cfg, stage, run_dir, rank, identity)


def _execute(cfg: DictConfig, stage: PlannedStage, run_dir: Path, rank: int, identity: dict) -> bool:
    if is_forced(stage.name, list(cfg.force)) and rank == 0 and not os.environ.get("PROXLAB_FORCED_" + stage.key):
        log(f"{stage.name}: force={list(cfg.force)} → removing {stage.out_dir} and running it again")
        remove_artifact(stage.out_dir)
        os.environ["PROXLAB_FORCED_" + stage.key] = "1"  # once per process: multirun jobs share the artifact
    if is_complete(stage.out_dir):
        log(f"{stage.name}: reusing {stage.out_dir} (complete)")
        return True
    if preempted():
        exit_for_requeue(f"before {stage.name}")
    if not stage.definition.spmd and rank != 0:
        log(f"{stage.name}: rank {rank} waiting for rank 0")
        wait_for(stage.out_dir, stage.name)
        return False
    if identity.get("idle"):
        log(f"{stage.name}: rank {rank} is part of an engine of {engine_size(stage)[0]} GPUs that another rank runs; "
            f"waiting for the stage")
        wait_for(stage.out_dir, stage.name)
        return False
    stage.out_dir.mkdir(parents=True, exist_ok=True)
    (stage.out_dir / FAILED).unlink(missing_ok=True)
    spec = StageSpec(
        stage=stage.name, key=stage.key, out_dir=str(stage.out_dir),
        config=stage.config,
        inputs={**{name: str(inp.out_dir) for name, inp in stage.inputs.items()}, **stage.external_inputs},
        run_dir=str(run_dir), experiment=cfg.name, logger=wandb_settings(cfg), sources=stage.sources,
        runtime={"data_dir": str(data_dir(cfg.paths.data_dir)), "devices": cfg.cluster.devices,
                 "num_nodes": cfg.cluster.num_nodes, "accelerator": cfg.cluster.accelerator,
                 "settings": stage.runtime, "envs": available_interpreters(dict(cfg.cluster.envs)),
                 "labels": experiment_labels(cfg, run_dir), **identity},
    )
    spec_path = stage.out_dir / (SPEC_FILE if identity["rank"] == 0 else f"spec.rank{identity['rank']}.json")
    spec.save(spec_path)
    python = interpreter(dict(cfg.cluster.envs), stage.env)
    log(f"{stage.name}: running {stage.definition.module} in env {stage.env!r} → {stage.out_dir}")
    t0 = time.perf_counter()
    code = run_stage_process(stage.name, python, stage.definition.module, spec_path,
                             env=stage_env(cfg.cluster.allow_hub, stage_gpus(stage)))
    if code == EXIT_REQUEUE or (code != 0 and preempted()):
        exit_for_requeue(f"during {stage.name} (its exit code {code})")
    if code != 0:
        if rank == 0:
            atomic_write_text(stage.out_dir / FAILED, f"exit code {code}")
        raise StageFailed(stage.name, code, f"; its spec is {spec_path}")
    if identity.get("array") and not is_complete(stage.out_dir):
        log(f"{stage.name}: shard task {identity['rank']}/{identity['world_size']} done; the task that finishes the "
            f"last shard completes the stage")
        raise ArrayTaskDone(stage.name)
    if stage.definition.spmd and rank != 0:
        wait_for(stage.out_dir, stage.name)
    log(f"{stage.name}: done in {time.perf_counter() - t0:.1f} s")
    return False


class ArrayTaskDone(Exception):
    """A refine job-array task finished its shards; the rest of the graph is not this task's to run."""


def print_plan(cfg: DictConfig, exp, stages: list[PlannedStage], run_dir: Path):
    """Print the stage graph; with dry_run, also the planned costs, returned (a CostEstimate) for a sweep's total."""
    log(f"experiment {cfg.name} (variant={cfg.refine.variant}, model={cfg.model.preset}, corpus={cfg.corpus.name})")
    log(f"run directory: {run_dir}")
    for st in stages:
        state = "complete" if is_complete(st.out_dir) else "to run"
        inputs = ", ".join(f"{k}={v.name}" for k, v in st.inputs.items())
        log(f"  {st.name:<22} {st.key}  [{state}]  env={st.env}  {inputs}")
    if cfg.dry_run:
        from proxlab.runner.planning import cost_estimate, describe_costs, describe_training, refiner_build_flops

        # stop_after=refiner (exp=refiners) runs no training of the experiment's own: only the build is its cost
        lines = (describe_training(exp) + describe_costs(exp) if any(st.name == "pretrain" for st in stages)
                 else refiner_build_flops(exp)[0])
        for line in lines:
            log(line)
        return cost_estimate(exp, {st.name: st.key for st in stages})
    return None


def run_experiment(cfg: DictConfig) -> dict:
    exp = validate(cfg)
    artifacts = Path(cfg.paths.artifacts_dir).resolve()
    stages = plan(cfg, artifacts)
    run_dir = run_directory(cfg, stages)
    rank, world = rank_and_world()
    # Rank 0 talks, the others only warn; Hydra's handlers (console, job log) show what propagates.
    setup_logging(rank=rank, console=False)
    cost = print_plan(cfg, exp, stages, run_dir)
    if cfg.dry_run:
        return {"cost": cost}
    check_gpu_layout(stages)
    # From here the run exists: its run.log, which its stage processes append to too, gets every message.
    setup_logging(rank=rank, console=False, log_file=run_dir / RUN_LOG)
    install_preemption_handlers()
    t0 = time.perf_counter()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / FAILURE).unlink(missing_ok=True)  # this attempt replaces an earlier one's failure
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write_text(run_dir / "plan.json", json.dumps(
            [{"stage": s.name, "key": s.key, "out_dir": str(s.out_dir), "inputs": {k: v.key for k, v in s.inputs.items()}}
             for s in stages], indent=2))
    ledger = Ledger(run_dir)
    for stage in stages:
        try:
            reused = execute(cfg, stage, run_dir, rank, world)
        except ArrayTaskDone:
            return {}
        except StageFailed as failure:
            if rank == 0:  # the report's failed row: which stage, the error, its spec and the run's log
                write_failure(run_dir, failure_record(run_labels(cfg, run_dir), stage, str(failure),
                                                      failure.returncode))
            raise
        if rank == 0:
            ledger.add(StageEntry.from_manifest(stage.name, stage.key, stage.out_dir, reused))
            write_run_metrics(run_dir, ledger)
    if rank != 0:
        return {}
    labels = {**run_labels(cfg, run_dir), "wall_s": round(time.perf_counter() - t0, 1)}
    summary = experiment_summary(ledger, labels)
    atomic_write_text(run_dir / SUMMARY, json.dumps(summary, indent=2, sort_keys=True))
    logger = MetricsLogger(run_dir / METRICS, job="summary", logger_cfg=wandb_settings(cfg), run_dir=run_dir,
                           config={"labels": experiment_labels(cfg, run_dir),
                                   **OmegaConf.to_container(cfg, resolve=True)})
    logger.summary({k: v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None})
    logger.close()
    reused = summary["reused_stages"]
    log(f"finished in {summary['wall_s']} s; reused {len(reused)}/{len(stages)} stages"
        + (f" ({', '.join(reused)})" if reused else ""))
    print_summary(summary)
    return summary


def run_labels(cfg: DictConfig, run_dir: Path) -> dict:
    """What names a run in its summary (and in the record of its failure): the report's row."""
    return {"experiment": cfg.name, "sweep": cfg.sweep or cfg.name, "variant": cfg.refine.variant,
            "model": cfg.model.preset, "corpus": cfg.corpus.name, "run_dir": str(run_dir),
            "paper_table": cfg.paper_table,
            "report_row": cfg.report_row or f"{cfg.model.preset}/{cfg.refine.variant}",
            "refiner_presets": refiner_presets(cfg),
            # another tokenizer than the paper's for the preset (the Llama-2 stand-in of Pythia): the report marks it
            "tokenizer_standin": tokenizer_standin(cfg.model.preset, cfg.model.tokenizer.kind,
                                                   cfg.model.tokenizer.path)}


def refiner_presets(cfg: DictConfig) -> dict[str, str | None]:
    """The architecture (model preset) of each refining model the variant ran, for the report's optional count of the
    refiner's own pretraining; None where the config does not say (refine.<level>.size_preset unset)."""
    levels = {"doc": ("doc",), "prox": ("doc", "chunk")}.get(cfg.refine.variant, ())
    return {level: cfg.refine[level].size_preset for level in levels}


def write_run_metrics(run_dir: Path, ledger: Ledger) -> None:
    """The run's metrics.jsonl: every record of the artifacts it used (rewritten whole, so reruns do not duplicate)."""
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in collect_stage_metrics(ledger))
    atomic_write_text(run_dir / METRICS, lines)


def print_summary(summary: dict) -> None:
    evals = {k[5:]: v for k, v in summary.items() if k.startswith("eval/") and k.count("/") == 1
             and k not in ("eval/avg", "eval/metric")}
    if evals:
        metric = summary.get("eval/metric", "acc_norm")
        log(f"{metric} by task: " + ", ".join(f"{k} {v:.3f}" for k, v in evals.items() if v is not None)
            + f" | average {summary.get('eval/avg', float('nan')):.3f}")
    log(f"FLOPs: refine {summary['flops/refine']:.3e} + train {summary['flops/train']:.3e} = "
        f"{summary['flops/total']:.3e}; docs kept {summary.get('docs/kept')}/{summary.get('docs/raw')}; "
        f"train tokens {summary.get('tokens/train')}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> dict:
    # The return value reaches Hydra callbacks (job_return.return_value): a sweep's plan sums its experiments' costs,
    # its report shows the failed ones.
    try:
        return run_experiment(cfg)
    except (StageFailed, ConfigError) as e:
        message = f"config error: {e}" if isinstance(e, ConfigError) else str(e)
        _log.error(message)  # every rank's (an error is worth 64 lines: each rank may fail for its own reason)
        if not in_sweep():
            sys.exit(2 if isinstance(e, ConfigError) else 1)
        recorded = isinstance(e, StageFailed)  # run_experiment wrote the run directory's failure record
    except Exception as e:  # a sweep's other experiments still run; a single run shows the traceback as it is
        if not in_sweep():
            raise
        message, recorded = f"{type(e).__name__}: {e}", False
        _log.error(f"experiment failed:\n{traceback.format_exc().rstrip()}")
    # A sweep goes on with its next experiment; main() exits non-zero once all have run.
    failure = {**failed_experiment(cfg, message), "recorded": recorded}
    FAILED_EXPERIMENTS.append(failure)
    log(f"experiment {failure['experiment']} ({' '.join(failure['overrides'])}) failed; the sweep goes on")
    return {"failed": failure}


def in_sweep() -> bool:
    """Whether this Hydra job is one experiment of a local multirun (`run -m`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Hydra's parser takes its flags before the overrides only; `proxlab run exp=x -m refine=a,b` is common enough
    # (and an unhelpful "unrecognized arguments" otherwise) that -m/--multirun may go anywhere.
    flags = [a for a in argv if a in ("-m", "--multirun")]
    sys.argv = [sys.argv[0], *flags, *[a for a in argv if a not in flags]]
    FAILED_EXPERIMENTS.clear()
    hydra_main()
    if FAILED_EXPERIMENTS:
        log(f"{len(FAILED_EXPERIMENTS)} experiment(s) of the sweep failed (the report lists them):")
        for failure in FAILED_EXPERIMENTS:
            log(f"  {' '.join(failure['overrides'])}: {failure['error']}")
        sys.exit(1)


if __name__ == "__main__":
    main()
