"""The ``evaluate`` stage: evaluate a pretrain artifact's final checkpoint (and, with ``checkpoints: all``, every
intermediate ``step-XXXXXXXX`` checkpoint) on an eval suite with lm-eval, on every rank, resumably.

Input ``checkpoint``: a pretrain artifact directory with ``final/`` and ``step-XXXXXXXX/`` LitGPT checkpoint dirs.
``config.model`` set: evaluate that model (LitGPT dir, HF dir/id, ``smollm2``) instead of the input.

Outputs under the artifact dir:
  ``results.json``                      results of the final checkpoint (format: ``proxlab.evaluate.runner``)
  ``by_step/step-XXXXXXXX.json``        results of each intermediate checkpoint (``checkpoints: all``)
  ``samples/<checkpoint>/<task>.jsonl`` per-sample contexts, log-likelihoods / generations, predictions, scores
  ``metrics.jsonl``                     ``eval/<task>`` and ``eval/avg`` per step, a table per checkpoint, a summary
  ``units/<checkpoint>/<task>.json``    one unit's results, who evaluated it (``by``: rank, node, pid, device,
                                        its GPU's CUDA_VISIBLE_DEVICES entry and UUID) and its request counts
                                        (``cached``: answered from the cache, ``computed``)
  ``evaluations.jsonl``                 every start, stop, reuse and end of a unit, with rank, pid and counts
  ``shard-NNNNN.json``                  the shard executor's record that unit NNNNN is finished

Units and ranks: the work is one unit per (checkpoint, task) (MMLU's 57 subjects are one task), in checkpoint order,
handed to the shard executor (``proxlab.core.sharding``): under Slurm every rank runs the stage and unit i belongs to
rank i % world, on the rank's own GPU (``cuda:<local rank>`` when the node's GPUs are all visible to each rank). Each
unit writes its results file atomically; the finalizing rank (0) waits for all, checks every unit (results and
samples present), merges each checkpoint's units (``runner.merge_results``) and writes ``results.json``,
``by_step/``, ``metrics.jsonl`` (in step order; W&B too) and the summary, as the single-process stage did.

Resume and requeue:
  - A restarted stage skips finished units; a unit whose results file was written but not yet recorded by the
    executor is taken from that file, not evaluated again.
  - Within a unit, lm-eval's request cache (``CachingLM``, sqlite ``cache/<checkpoint>.<task>_rank<r>.db``) keeps each
    finished request: the LitGPT and HF models hand every one to ``cache_hook.add_partial`` and
    ``runner.RequestCache`` commits them every ``$PROXLAB_EVAL_COMMIT_S`` seconds (default 5), so a SIGKILL loses at
    most that much; the rerun answers the saved requests from the cache and computes only the others.
  - SIGUSR1 / SIGTERM (Slurm's pre-timeout signal, preemption): stop at the next safe point (inside a unit: after
    the next saved request; between units or while rank 0 waits for the others: at once), commit the cache and exit
    with ``EXIT_REQUEUE`` (3), which the orchestrator and ``slurm/run.sh`` turn into a requeue. A signal while the
    finalizing rank writes the results is noted and the stage completes.
  - The cache is removed once the stage is complete (the unit files hold the results).

Config: ``spec.config`` is the ``eval`` section, loaded once into an ``EvalConfig``; its data (``eval.task_files``
included) is checked before any checkpoint is loaded. Each results file records, per task, the file, split and items
scored and how they differ from the paper's (``data``; ``proxlab.evaluate.tasks.splits``). Device: ``spec.runtime
["accelerator"]`` (``cpu`` | ``gpu`` | ``auto``, the cluster's), mapped to a torch device by ``torch_device``, then
to this rank's GPU by ``rank_device``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxlab.core.config import EvalConfig, load
from proxlab.core.logs import get_logger
from proxlab.core.preemption import StopFlag
from proxlab.core.sharding import Placement, ShardStats, ShardWork, run_shards
from proxlab.core.stage import (EXIT_REQUEUE, StageResult, StageSpec, accelerator_device, append_jsonl,
                                atomic_write_text, now_iso, stage_cli)
from proxlab.core.tracking import METRICS, MetricsLogger, artifact_run_id, wandb_name

# not __name__: run as `python -m proxlab.evaluate.stage` that is __main__, outside the `proxlab` logger's tree
log = get_logger("evaluate")

_STEP_RE = re.compile(r"^step-(\d+)$")
ACCELERATORS = ("cpu", "gpu", "auto")
EVALUATIONS = "evaluations.jsonl"
COMMIT_ENV = "PROXLAB_EVAL_COMMIT_S"  # seconds between commits of the request cache (default 5)


def list_checkpoints(artifact: Path) -> tuple[Path | None, list[tuple[int, Path]]]:
    """(final checkpoint dir or None, [(step, dir)] of intermediate checkpoints, ascending)."""
    artifact = Path(artifact)
    final = artifact / "final" if (artifact / "final" / "lit_model.pth").is_file() else None
    if final is None and (artifact / "lit_model.pth").is_file():
        final = artifact
    steps = []
    if artifact.is_dir():
        for d in artifact.iterdir():
            m = _STEP_RE.match(d.name)
            if m and (d / "lit_model.pth").is_file():
                steps.append((int(m.group(1)), d))
    return final, sorted(steps)


def torch_device(accelerator: str | None) -> str:
    """The torch device for ``cluster.accelerator``: ``cpu`` -> ``"cpu"``; ``gpu`` -> ``"cuda"`` (``"cpu"`` with a
    warning when CUDA is not available); ``auto`` -> ``"cuda"`` when available, else ``"cpu"``. Unset: ``cpu``."""
    accelerator = accelerator or "cpu"
    if accelerator not in ACCELERATORS:
        raise ValueError(f"runtime accelerator must be one of {list(ACCELERATORS)}, got {accelerator!r}")
    want = accelerator_device(accelerator)  # "cpu", "cuda", or None (auto)
    if want == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if want == "cuda":
        log.warning("runtime accelerator gpu requested but CUDA is not available: evaluating on CPU")
    return "cpu"


def local_rank() -> int:
    """This rank's index among the tasks of its node (proxlab.core.devices: the srun step's, torchrun's, else 0)."""
    from proxlab.core.devices import task_layout

    return task_layout().local_rank


def rank_device(device: str) -> str:
    """This rank's GPU: with several visible, its local rank's, so the ranks of a node share out the node's GPUs;
    with one visible (the runner gave this task its own GPU), that one."""
    if device != "cuda":
        return device
    import torch

    n = torch.cuda.device_count()
    return f"cuda:{local_rank() % n}" if n > 1 else device


def visible_gpu() -> str | None:
    """The visible GPU entry of this rank's GPU (its local rank's when several are visible), as ``rank_device`` picks
    it; None when none is listed."""
    from proxlab.core.devices import visible_gpus

    visible = visible_gpus()
    return visible[local_rank() % len(visible)] if visible else None


def commit_interval() -> float:
    value = os.environ.get(COMMIT_ENV, "5")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"${COMMIT_ENV} must be a number of seconds, got {value!r}") from None
    if seconds < 0:
        raise ValueError(f"${COMMIT_ENV} must be >= 0, got {value!r}")
    return seconds


# ---------------------------------------------------------------------------------------------------------------------
# Preemption


class Preemption(StopFlag):
    """SIGUSR1 / SIGTERM: stop at the next safe point; ``main`` then exits with ``EXIT_REQUEUE``.

    Inside a unit the handler only notes the signal (the model may be in the middle of a forward pass):
    ``runner.RequestCache`` raises ``Preempted`` after the next saved request, and a unit that ends first raises it on
    its way out. Outside a unit nothing is unsaved (results and the executor's records are written by rename), so the
    handler raises at once: between units, and while rank 0 waits for the other ranks. Once the finalizing rank
    writes the results (``finalizing``), a signal is only noted and the stage completes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.deferred = False

    def _handle(self, signum, _frame) -> None:
        from proxlab.evaluate.runner import Preempted

        self.signum = signum
        if not self.deferred:
            raise Preempted(signum)

    @contextlib.contextmanager
    def unit(self):
        """A unit's evaluation: signals wait for a safe point; a signal that came during it stops after it."""
        from proxlab.evaluate.runner import Preempted

        self.deferred = True
        try:
            yield
        finally:
            self.deferred = False
        if self.signum is not None:
            raise Preempted(self.signum)

    def finalizing(self) -> None:
        self.deferred = True  # for good: writing the results takes seconds, then the stage is complete


# ---------------------------------------------------------------------------------------------------------------------
# Units of work


@dataclass(frozen=True)
class Unit:
    """One task of the suite on one checkpoint."""

    label: str  # the results' checkpoint name: "final" or "step-XXXXXXXX"
    step: int | None  # its training step (None: known once the model is loaded, for config.model)
    checkpoint: str  # its LitGPT checkpoint dir, or config.model
    task: str  # the suite's task name

    @property
    def name(self) -> str:
        return f"{self.label}.{self.task}"


@dataclass
class Plan:
    """The units, in checkpoint order (steps ascending, final last), and which results each checkpoint reports."""

    units: list[Unit]
    steps: list[tuple[int, str]]  # (step, label) of every intermediate checkpoint, ascending (checkpoints: all)
    skipped: dict[str, list[str]]  # tasks skipped for missing data (on_missing_task: skip), with their files


def unit_path(out: Path, unit: Unit) -> Path:
    return out / "units" / unit.label / f"{unit.task}.json"


def read_unit(out: Path, unit: Unit) -> dict[str, Any] | None:
    """A unit's record, if one for this very unit was written."""
    path = unit_path(out, unit)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("unit") == dataclasses.asdict(unit) else None


def plan_units(cfg: EvalConfig, spec: StageSpec, task_names: list[str], skipped: dict[str, list[str]]) -> Plan:
    """Every rank plans the same units from the config and the artifact's checkpoints. A step checkpoint at final/'s
    own training step is evaluated once, as final."""
    if cfg.model:
        return Plan([Unit("final", None, str(cfg.model), t) for t in task_names], [], skipped)
    from proxlab.evaluate.lms.litgpt import checkpoint_step, load_lit_state_dict

    artifact = spec.input("checkpoint")
    final_dir, steps = list_checkpoints(artifact)
    if final_dir is None:
        raise FileNotFoundError(f"{artifact}: no final/ checkpoint (lit_model.pth) to evaluate")
    final_step = checkpoint_step(final_dir, load_lit_state_dict(final_dir)[1])  # weights memory-mapped, not read
    steps = steps if cfg.checkpoints == "all" else []
    units = [Unit(d.name, step, str(d), t) for step, d in steps if step != final_step for t in task_names]
    units += [Unit("final", final_step, str(final_dir), t) for t in task_names]
    return Plan(units, [(step, d.name) for step, d in steps], skipped)


@dataclass
class _Run:
    """What every unit evaluated by this process shares."""

    cfg: EvalConfig
    data_dir: str | None
    device: str
    out: Path
    placement: Placement
    stop: Preemption
    commit_s: float = 5.0
    vllm_python: str | None = None  # the vLLM environment's interpreter (eval.generation_backend=vllm)
    _model: tuple[str, Any, str, int | None] | None = field(default=None, repr=False)  # (checkpoint, lm, name, step)

    def model(self, unit: Unit) -> tuple[Any, str, int | None]:
        """(lm, the results' model name, step) of the unit's checkpoint; the last one is kept, since a rank's units
        come in checkpoint order."""
        if self._model is None or self._model[0] != unit.checkpoint:
            self._model = None
            _free_accelerator_memory()
            self._model = (unit.checkpoint, *self._load(unit))
        return self._model[1:]

    def _load(self, unit: Unit) -> tuple[Any, str, int | None]:
        from proxlab.evaluate.lms.litgpt import LitGPTLM, checkpoint_step
        from proxlab.evaluate.runner import make_lm, resolve_model_path

        if not self.cfg.model:
            lm = LitGPTLM(unit.checkpoint, batch_size=self.cfg.batch_size, device=self.device)
            return lm, unit.checkpoint, unit.step
        kind, loc = resolve_model_path(self.cfg.model)
        lm = make_lm(self.cfg.model, batch_size=self.cfg.batch_size, device=self.device)
        return lm, loc, checkpoint_step(lm.checkpoint_dir, lm.meta) if kind == "litgpt" else None

    def by(self) -> dict[str, Any]:
        """Who evaluates: rank, node, pid, device and GPU (its ``CUDA_VISIBLE_DEVICES`` entry and, on CUDA, its UUID,
        which tells GPUs apart across nodes)."""
        by = {"rank": self.placement.rank, "world": self.placement.world, "local_rank": local_rank(),
              "host": socket.gethostname(), "node": os.environ.get("SLURMD_NODENAME", socket.gethostname()),
              "pid": os.getpid(), "device": self.device, "gpu": visible_gpu(), "gpu_uuid": None}
        if self.device.startswith("cuda"):
            import torch

            by["gpu_uuid"] = str(torch.cuda.get_device_properties(torch.device(self.device)).uuid)
        return by

    def event(self, unit: Unit, event: str, **counts: Any) -> None:
        append_jsonl(self.out / EVALUATIONS, {"unit": unit.name, "event": event, "time": now_iso(), **self.by(),
                                              **counts})


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_unit(run: _Run, unit: Unit) -> ShardStats:
    """Evaluate one unit (unless a previous attempt finished it) and write ``units/<checkpoint>/<task>.json``."""
    from proxlab.evaluate.runner import Preempted, RequestCache, run_suite

    record = read_unit(run.out, unit)
    if record is not None:  # finished by an attempt that stopped before the executor recorded it
        run.event(unit, "reused")
        return _unit_stats(record)
    if run.cfg.generation_backend == "vllm":
        return evaluate_unit_vllm(run, unit)
    cache = RequestCache(run.out / "cache" / unit.name, stop_requested=run.stop.requested, commit_s=run.commit_s)
    with run.stop.unit():
        run.event(unit, "start")
        lm, model_name, step = run.model(unit)
        try:
            res = run_suite(lm, dataclasses.replace(run.cfg, tasks=[unit.task]), run.data_dir,
                            run.out / "samples" / unit.label, unit.label, step, model_name, cache=cache)
        except Preempted:
            run.event(unit, "stopped", cached=cache.cached, computed=cache.computed)
            raise
        requests = {"cached": cache.cached or 0, "computed": cache.computed}
        requests["total"] = requests["cached"] + requests["computed"]
        record = {"unit": dataclasses.asdict(unit), "results": res, "requests": requests, "by": run.by()}
        atomic_write_text(unit_path(run.out, unit), json.dumps(record, indent=2, sort_keys=True, default=str))
        run.event(unit, "done", **requests)
    return _unit_stats(record)


def evaluate_unit_vllm(run: _Run, unit: Unit) -> ShardStats:
    """A generation unit through lm-eval's ``vllm`` model in the vLLM environment (eval.generation_backend=vllm;
    ``proxlab.evaluate.lms.vllm_math``): the checkpoint exported to HF, greedy, fp32, the same results and samples
    as the LitGPT path. No request cache: a unit stopped midway is redone, and a preemption signal is honoured once
    the engine's process returns."""
    from proxlab.evaluate.lms.vllm_math import run_suite_vllm

    with run.stop.unit():
        run.event(unit, "start")
        res = run_suite_vllm(unit.checkpoint, dataclasses.replace(run.cfg, tasks=[unit.task]), run.data_dir,
                             run.out / "samples" / unit.label, unit.label, unit.step, unit.checkpoint,
                             work_dir=run.out / "vllm" / unit.name, python=run.vllm_python)
        requests = {"cached": 0, "computed": res["n_samples"], "total": res["n_samples"]}
        record = {"unit": dataclasses.asdict(unit), "results": res, "requests": requests, "by": run.by()}
        atomic_write_text(unit_path(run.out, unit), json.dumps(record, indent=2, sort_keys=True, default=str))
        run.event(unit, "done", **requests)
    return _unit_stats(record)


def _unit_stats(record: dict[str, Any]) -> ShardStats:
    n = record["results"]["n_samples"]
    return ShardStats(docs_in=n, docs_out=n, extra={f"requests_{k}": v for k, v in record["requests"].items()})


def check_units(run: _Run, units: list[Unit]) -> None:
    """Before finalizing: every unit's results file is there, for that unit, with its task and all its samples."""
    from proxlab.evaluate.tasks.suites import get_suite

    suite = get_suite(run.cfg.suite)
    problems = []
    for unit in units:
        record = read_unit(run.out, unit)
        if record is None or unit.task not in record["results"].get("tasks", {}):
            problems.append(f"{unit.name}: no results in {unit_path(run.out, unit)}")
            continue
        lines = 0
        for lm_task in suite.tasks[unit.task].lm_tasks:
            path = run.out / "samples" / unit.label / f"{lm_task}.jsonl"
            if not path.is_file():
                problems.append(f"{unit.name}: missing {path}")
                break
            lines += sum(1 for _ in open(path, encoding="utf-8"))
        else:
            if lines != record["results"]["n_samples"]:
                problems.append(f"{unit.name}: {lines} sample lines, its results say {record['results']['n_samples']}")
    if problems:
        raise RuntimeError(f"evaluate: {len(problems)} of {len(units)} units are incomplete: "
                           + "; ".join(problems[:5]))


# ---------------------------------------------------------------------------------------------------------------------
# Finalizing: the results of every checkpoint, as the single-process stage wrote them


def log_results(logger: MetricsLogger, results: dict[str, Any], step: int | None) -> None:
    from proxlab.evaluate.runner import results_table

    metrics = {f"eval/{name}": e[e["metric"]] for name, e in results["tasks"].items()}
    metrics["eval/avg"] = results["avg"]
    logger.log(metrics, step=step)
    cols, rows = results_table(results)
    logger.table(f"eval/table/{results['checkpoint']}", cols, rows)


def pretrain_metrics(results: dict[str, Any]) -> dict[str, float]:
    """One checkpoint's accuracies as the pretrain run shows them: each task's reported metric (`score`, acc_norm or
    acc as the suite says), its acc and acc_norm, and the average."""
    metrics = {}
    for name, e in results["tasks"].items():
        metrics[wandb_name("evaluate", f"eval/{name}")] = e[e["metric"]]  # eval/<task>/score, as the evaluate run's
        metrics.update({f"eval/{name}/{m}": e[m] for m in ("acc", "acc_norm") if e.get(m) is not None})
    metrics[wandb_name("evaluate", "eval/avg")] = results["avg"]
    return metrics


def log_into_pretrain_run(spec: StageSpec, all_results: list[dict[str, Any]]) -> None:
    """Every checkpoint's accuracies also into the W&B run of the pretraining that wrote them, at `train/step` = the
    checkpoint's step, so one chart shows a variant's loss and accuracy. The run's id follows from the pretrain
    artifact (`artifact_run_id`); offline, this resumes it in a new offline directory, which `proxlab wandb-sync`
    merges into it. W&B only: the pretrain artifact's metrics.jsonl stays the stage's own."""
    by_step = {r["step"]: r for r in all_results if r.get("step") is not None}
    if not by_step or "checkpoint" not in spec.inputs:
        return
    checkpoint = spec.input("checkpoint")
    logger = MetricsLogger(None, job="pretrain", logger_cfg=spec.logger, run_dir=spec.run_dir,
                           run_id=artifact_run_id(checkpoint))
    try:
        for step, res in sorted(by_step.items()):
            logger.log(pretrain_metrics(res), step=step)
    finally:
        logger.close()


def merged_results(run: _Run, plan: Plan) -> dict[str, dict[str, Any]]:
    """{checkpoint label: its results}, merged from its units in the suite's task order."""
    from proxlab.evaluate.runner import merge_results

    parts: dict[str, list[dict[str, Any]]] = {}
    for unit in plan.units:
        parts.setdefault(unit.label, []).append(read_unit(run.out, unit)["results"])
    return {label: merge_results(p, plan.skipped) for label, p in parts.items()}


def write_steps(out: Path, logger: MetricsLogger, plan: Plan, results: dict[str, dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """``by_step/<label>.json``, metrics and a table for every intermediate checkpoint, ascending; the one at final/'s
    step reports final's results under its own label."""
    from proxlab.evaluate.runner import format_table

    all_results = []
    for step, label in plan.steps:
        if label in results:
            res = results[label]
        else:  # same training step as final/: evaluated once, as final
            res = {**results["final"], "checkpoint": label, "samples_dir": results["final"].get("samples_dir")}
        atomic_write_text(out / "by_step" / f"{label}.json", json.dumps(res, indent=2, sort_keys=True, default=str))
        log_results(logger, res, step)
        all_results.append(res)
        log.info(f"{label}:\n{format_table(res)}")
    return all_results


def write_final(out: Path, logger: MetricsLogger, final_res: dict[str, Any], all_results: list[dict[str, Any]]
                ) -> None:
    """``results.json``, final's metrics (unless its step's were logged already) and the run summary."""
    from proxlab.evaluate.runner import format_table

    atomic_write_text(out / "results.json", json.dumps(final_res, indent=2, sort_keys=True, default=str))
    if not (all_results and final_res["step"] is not None and final_res["step"] == all_results[-1]["step"]):
        log_results(logger, final_res, final_res["step"])
    logger.summary({f"eval/final/{k}": e[e["metric"]] for k, e in final_res["tasks"].items()}
                   | {"eval/final/avg": final_res["avg"]})
    log.info(f"final:\n{format_table(final_res)}")


def finalize(run: _Run, spec: StageSpec, plan: Plan) -> StageResult:
    run.stop.finalizing()
    results = merged_results(run, plan)
    (spec.out / METRICS).unlink(missing_ok=True)  # a finalizer killed halfway through logging leaves no duplicates
    logger = MetricsLogger.for_stage(spec)
    try:
        all_results = write_steps(spec.out, logger, plan, results)
        write_final(spec.out, logger, results["final"], all_results)
    finally:
        logger.close()
    if not run.cfg.model:  # evaluated the input's checkpoints (not a model named in eval.model)
        log_into_pretrain_run(spec, [*all_results, results["final"]])
    shutil.rmtree(spec.out / "cache", ignore_errors=True)  # it only served resuming; the unit files hold the results
    return stage_result(results["final"], all_results)


def stage_result(final_res: dict[str, Any], all_results: list[dict[str, Any]]) -> StageResult:
    others = [r for r in all_results if r["step"] is None or r["step"] != final_res["step"]]
    total = final_res["n_samples"] + sum(r["n_samples"] for r in others)
    return StageResult(counts={"tasks": len(final_res["tasks"]), "samples": total, "checkpoints": 1 + len(others)},
                       flops={}, extra={"results": final_res})


# ---------------------------------------------------------------------------------------------------------------------
# main


def load_config(spec: StageSpec) -> EvalConfig:
    cfg = load(EvalConfig, spec.config, spec.runtime.get("settings"), where="eval")
    if cfg.checkpoints not in ("final", "all"):
        raise ValueError(f"eval.checkpoints must be 'final' or 'all', got {cfg.checkpoints!r}")
    return cfg


def check_data(cfg: EvalConfig, data_dir: str | None) -> tuple[list[str], dict[str, list[str]]]:
    """Before any checkpoint is loaded: ``eval.task_files`` all present (an error names the task, the key and the
    path) and every task's data present, or skipped as ``eval.on_missing_task`` says. Returns (the tasks to
    evaluate, in the suite's order; the skipped ones with their missing files)."""
    from proxlab.evaluate.runner import check_suite_data

    tasks, skipped = check_suite_data(cfg, data_dir)
    return [t.name for t in tasks], skipped


def evaluate(spec: StageSpec, stop: Preemption) -> StageResult | None:
    from proxlab.evaluate.runner import configure_threads

    cfg = load_config(spec)
    data_dir = spec.runtime.get("data_dir")
    plan = plan_units(cfg, spec, *check_data(cfg, data_dir))
    spec.out.mkdir(parents=True, exist_ok=True)
    configure_threads()
    run = _Run(cfg, data_dir, rank_device(torch_device(spec.runtime.get("accelerator"))), spec.out,
               Placement.of(spec), stop, commit_interval(), (spec.runtime.get("envs") or {}).get("vllm"))
    work = ShardWork([Path(u.checkpoint) for u in plan.units], lambda i, _path: evaluate_unit(run, plan.units[i]),
                     lambda: check_units(run, plan.units), desc="units (checkpoint x task)")
    if run_shards(spec, work) is None:  # another rank finalizes
        return None
    return finalize(run, spec, plan)


def main(spec: StageSpec) -> StageResult | None:
    from proxlab.evaluate.runner import Preempted

    stop = Preemption().install()
    try:
        return evaluate(spec, stop)
    except Preempted as e:
        name = signal.Signals(e.signum or stop.signum).name
        log.warning(f"evaluate: {name}: finished units and requests are saved; exit {EXIT_REQUEUE} to requeue")
        raise SystemExit(EXIT_REQUEUE) from None
    finally:
        stop.uninstall()


if __name__ == "__main__":
    stage_cli(main)
