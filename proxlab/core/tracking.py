"""Log metrics twice: to W&B (offline by default) and to plain `metrics.jsonl` files that reports and tests can read.

`metrics.jsonl` is the source of truth (reports and the ledger read it): its keys are the stages' own (`loss`,
`eval/arc_easy`, `apply/kept_ratio`). W&B gets the same values under namespaced names (`wandb_name`): `train/…`,
`eval/<task>/…`, `refine/…`, `flops/…`, so one project's panels line up across stages and runs. W&B is imported
lazily: the vLLM environment may not have it, and then only the jsonl side logs.

W&B runs and their ids (docs/report.md, "W&B"): a stage's run id follows from its artifact (`artifact_run_id`), so a
requeued stage continues its run and a later stage can add to it (evaluation logs its accuracies into the pretrain
run, against `train/step`). Offline, each (re)start writes a new `offline-run-*-<id>` directory; `proxlab wandb-sync`
merges them into one run before uploading.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from proxlab.core.logs import get_logger
from proxlab.core.stage import StageSpec, append_jsonl, now_iso

log = get_logger("tracking")

METRICS = "metrics.jsonl"
STEP_METRIC = "train/step"  # the x-axis of training and evaluation curves on W&B

# wandb hands its service's address to child processes in this variable, so a stage started by a process that had
# already logged (the orchestrator's report, a test runner) would log through the parent's long-lived service. When
# such a stage is SIGKILLed, that service keeps its run open and the resumed stage fails with "run ID ... is in use".
# Each stage process starts its own service instead: one inherited at import time is dropped before the first init.
WANDB_SERVICE_ENV = "WANDB_SERVICE"
_INHERITED_WANDB_SERVICE = os.environ.get(WANDB_SERVICE_ENV)


def wandb_run_id(run_dir: str | Path, job: str) -> str:
    """A W&B run id that is the same every time this run's `job` is (re)started: the experiment's summary run, a
    sweep's report run."""
    return hashlib.sha1(f"{Path(run_dir).resolve()}::{job}".encode()).hexdigest()[:16]


def artifact_run_id(artifact_dir: str | Path) -> str:
    """The W&B run id of the stage that writes `artifact_dir` (`<artifacts>/<stage>/<key>`): the same for every attempt
    (a requeued job continues its run), for every experiment that shares the artifact, and known to the stages that
    read it (evaluation logs into its checkpoint's pretrain run). From the stage and key, not the absolute path, so a
    moved artifact store keeps its ids."""
    artifact_dir = Path(artifact_dir)
    return hashlib.sha1(f"{artifact_dir.parent.name}/{artifact_dir.name}".encode()).hexdigest()[:16]


def experiment_wandb_settings(logger: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    """The W&B settings of an experiment's runs (its stage runs, its summary run) from the `logger` config section and
    the experiment's labels: one group per experiment, tags and run names that say variant, model and seed. Runs are
    compared across experiments by their config's `labels` (grouped by `labels.variant`, filtered by `labels.sweep`)."""
    seed = labels.get("seed")
    tags = [f"variant:{labels['variant']}", f"model:{labels['model']}", f"corpus:{labels['corpus']}",
            f"exp:{labels['experiment']}", f"sweep:{labels['sweep']}", *([f"seed:{seed}"] if seed is not None else []),
            *logger.get("tags", [])]
    backend = logger.get("backend", "wandb")
    return {"backend": backend, "mode": logger.get("mode", "offline") if backend == "wandb" else "disabled",
            "project": logger.get("project", "proxlab"), "entity": logger.get("entity"), "group": labels["experiment"],
            "tags": tags, "name_prefix": f"{labels['experiment']}/{labels['variant']}/{labels['model']}/"
                                         + ("" if seed is None else f"seed{seed}/")}


def is_training(job: str) -> bool:
    """Jobs whose W&B curves run against `train/step`: pretraining (the experiment's or a refiner's base) and the
    refiner fine-tunes."""
    return job.endswith("pretrain") or job.startswith("refiner.finetune")


def wandb_name(job: str, key: str) -> str:
    """The W&B name of a `metrics.jsonl` key logged by `job` (one place for the namespaces):

    - `eval/<task>` (a task's reported metric, acc_norm or acc) → `eval/<task>/score`, `eval/avg` →
      `eval/avg/score`; `eval/final/<task>` → `eval/<task>/final_score`; other `eval/…` names stay;
    - training jobs: FLOPs keys → `flops/…` (`flops_per_step` → `flops/per_step`, `train_flops` → `flops/train`),
      the other bare keys → `train/…` (`loss` → `train/loss`);
    - refining jobs (`refine.*`, the refiner builders) → `refine/…` (`apply/kept_ratio` →
      `refine/apply/kept_ratio`);
    - everything else (the summary run's `flops/…`, `docs/…`, the report's tables) stays."""
    parts = key.split("/")
    if parts[0] == "eval" and len(parts) == 2 and parts[1] not in ("metric", "table", "final"):
        return f"{key}/score"
    if parts[0] == "eval" and len(parts) == 3 and parts[1] == "final":
        return f"eval/{parts[2]}/final_score"
    if is_training(job):
        if len(parts) > 1:
            return key
        if "flops" in key:
            return "flops/" + (re.sub(r"_?flops_?", "_", key).strip("_") or "total")
        return f"train/{key}"
    if (job.startswith("refine.") or job.startswith("refiner.")) and parts[0] != "refine":
        return f"refine/{key}"
    return key


class MetricsLogger:
    """One logger per stage process (or per report): `log({...}, step)` and `summary({...})`, then `close()`.

    `jsonl_path` None: W&B only (adding to a run whose jsonl belongs to another stage). `run_id`: the W&B run to log
    into (default: `wandb_run_id(run_dir, job)`)."""

    def __init__(self, jsonl_path: Path | None, job: str, logger_cfg: dict[str, Any] | None = None,
                 run_dir: str | Path | None = None, config: dict[str, Any] | None = None, enabled: bool = True,
                 run_id: str | None = None):
        self.jsonl_path = None if jsonl_path is None else Path(jsonl_path)
        self.job = job
        self.enabled = enabled
        self._wandb_run = None
        # training and evaluation rows carry `train/step`, the x-axis their W&B panels share
        self._step_axis = is_training(job) or job == "evaluate"
        cfg = logger_cfg or {}
        if enabled and cfg.get("backend", "wandb") == "wandb" and cfg.get("mode", "offline") != "disabled" and run_dir:
            self._wandb_run = _init_wandb(cfg, job, Path(run_dir), config, run_id or wandb_run_id(run_dir, job),
                                          self._step_axis)

    @classmethod
    def for_stage(cls, spec: StageSpec, rank: int = 0) -> "MetricsLogger":
        """Metrics of a stage go to its artifact directory; the orchestrator copies them into each run that uses it.
        Its W&B run is the artifact's (`artifact_run_id`); its config holds the experiment's labels (sweep, variant,
        model, corpus, seed, paper row: `spec.runtime["labels"]`), which W&B groups and filters runs by."""
        config = {"labels": spec.runtime.get("labels") or {}, "stage": spec.stage, "key": spec.key, **spec.config}
        return cls(spec.out / METRICS, job=spec.stage, logger_cfg=spec.logger, run_dir=spec.run_dir, config=config,
                   enabled=rank == 0, run_id=artifact_run_id(spec.out))

    @property
    def wandb_id(self) -> str | None:
        return self._wandb_run.id if self._wandb_run is not None else None

    def _jsonl(self, record: dict[str, Any]) -> None:
        if self.jsonl_path is not None:
            append_jsonl(self.jsonl_path, {"job": self.job, **record, "time": now_iso()})

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        self._jsonl({"step": step, **metrics})
        if self._wandb_run is not None:
            named = {wandb_name(self.job, k): v for k, v in metrics.items()}
            if self._step_axis and step is not None:
                named[STEP_METRIC] = step
            self._wandb_run.log(named, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._jsonl({"summary": True, **metrics})
        if self._wandb_run is not None:
            for k, v in metrics.items():
                self._wandb_run.summary[wandb_name(self.job, k)] = v

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        if not self.enabled:
            return
        self._jsonl({"table": name, "columns": columns, "data": rows})
        if self._wandb_run is not None:
            import wandb

            self._wandb_run.log({wandb_name(self.job, name): wandb.Table(columns=columns, data=rows)})

    def image(self, name: str, path: str | Path) -> None:
        """A picture (a report's PNG): its path in the jsonl, the image itself in W&B."""
        if not self.enabled:
            return
        self._jsonl({"image": name, "path": str(path)})
        if self._wandb_run is not None:
            import wandb

            self._wandb_run.log({name: wandb.Image(str(path))})

    def close(self) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


def _init_wandb(cfg: dict[str, Any], job: str, run_dir: Path, config: dict[str, Any] | None, run_id: str,
                step_axis: bool):
    try:
        import wandb
    except ImportError:  # the vLLM environment: jsonl only
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    if _INHERITED_WANDB_SERVICE and os.environ.get(WANDB_SERVICE_ENV) == _INHERITED_WANDB_SERVICE:
        del os.environ[WANDB_SERVICE_ENV]
    run_dir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        project=cfg.get("project", "proxlab"),
        entity=cfg.get("entity") or None,
        group=cfg.get("group") or None,
        job_type=job,
        name=f"{cfg.get('name_prefix', '')}{job}",
        tags=list(cfg.get("tags", [])),
        mode=cfg.get("mode", "offline"),
        dir=str(run_dir),
        id=run_id,
        resume="allow",
        config=config,
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    # After a SIGKILL, the killed process's wandb-core service holds the run id until it notices its parent is gone
    # ("run ID ... is in use"); a resume right away must wait for it rather than fail or start another run.
    import time

    for attempt in range(30):
        try:
            run = wandb.init(**kwargs)
            break
        except Exception as e:  # wandb raises its own ServerResponseError type
            if "is in use" not in str(e) or attempt == 29:
                raise
            log.info(f"W&B run {kwargs['id']} still held by a previous process; retrying")
            time.sleep(2.0)
    if step_axis:  # loss, accuracy and FLOPs curves against the training step, whatever W&B's own _step is
        run.define_metric(STEP_METRIC)
        for prefix in ("train", "eval", "flops"):
            run.define_metric(f"{prefix}/*", step_metric=STEP_METRIC)
    return run
