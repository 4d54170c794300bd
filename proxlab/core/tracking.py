"""Log metrics twice: to W&B (offline by default) and to plain `metrics.jsonl` files that reports and tests can read.

W&B's offline run file is binary protobuf with no reader in wandb 0.31, so nothing in proxlab ever reads W&B back;
`metrics.jsonl` is the source of truth. W&B is imported lazily: the vLLM environment may not have it, and then only
the jsonl side logs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from proxlab.core.logs import get_logger
from proxlab.core.stage import StageSpec, append_jsonl, now_iso

log = get_logger("tracking")

METRICS = "metrics.jsonl"

# wandb hands its service's address to child processes in this variable, so a stage started by a process that had
# already logged (the orchestrator's report, a test runner) would log through the parent's long-lived service. When
# such a stage is SIGKILLed, that service keeps its run open and the resumed stage fails with "run ID ... is in use".
# Each stage process starts its own service instead: one inherited at import time is dropped before the first init.
WANDB_SERVICE_ENV = "WANDB_SERVICE"
_INHERITED_WANDB_SERVICE = os.environ.get(WANDB_SERVICE_ENV)


def wandb_run_id(run_dir: str | Path, job: str) -> str:
    """A W&B run id that is the same every time this run's `job` is (re)started, so a requeued job continues its run."""
    return hashlib.sha1(f"{Path(run_dir).resolve()}::{job}".encode()).hexdigest()[:16]


class MetricsLogger:
    """One logger per stage process (or per report): `log({...}, step)` and `summary({...})`, then `close()`."""

    def __init__(self, jsonl_path: Path, job: str, logger_cfg: dict[str, Any] | None = None,
                 run_dir: str | Path | None = None, config: dict[str, Any] | None = None, enabled: bool = True):
        self.jsonl_path = Path(jsonl_path)
        self.job = job
        self.enabled = enabled
        self._wandb_run = None
        cfg = logger_cfg or {}
        if enabled and cfg.get("backend", "wandb") == "wandb" and cfg.get("mode", "offline") != "disabled" and run_dir:
            self._wandb_run = _init_wandb(cfg, job, Path(run_dir), config)

    @classmethod
    def for_stage(cls, spec: StageSpec, rank: int = 0) -> "MetricsLogger":
        """Metrics of a stage go to its artifact directory; the orchestrator copies them into each run that uses it."""
        return cls(spec.out / METRICS, job=spec.stage, logger_cfg=spec.logger, run_dir=spec.run_dir,
                   config={"stage": spec.stage, "key": spec.key, **spec.config}, enabled=rank == 0)

    @property
    def wandb_id(self) -> str | None:
        return self._wandb_run.id if self._wandb_run is not None else None

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self.enabled:
            return
        append_jsonl(self.jsonl_path, {"job": self.job, "step": step, "time": now_iso(), **metrics})
        if self._wandb_run is not None:
            self._wandb_run.log(metrics, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.jsonl_path, {"job": self.job, "summary": True, "time": now_iso(), **metrics})
        if self._wandb_run is not None:
            for k, v in metrics.items():
                self._wandb_run.summary[k] = v

    def table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.jsonl_path, {"job": self.job, "table": name, "columns": columns, "data": rows,
                                       "time": now_iso()})
        if self._wandb_run is not None:
            import wandb

            self._wandb_run.log({name: wandb.Table(columns=columns, data=rows)})

    def image(self, name: str, path: str | Path) -> None:
        """A picture (a report's PNG): its path in the jsonl, the image itself in W&B."""
        if not self.enabled:
            return
        append_jsonl(self.jsonl_path, {"job": self.job, "image": name, "path": str(path), "time": now_iso()})
        if self._wandb_run is not None:
            import wandb

            self._wandb_run.log({name: wandb.Image(str(path))})

    def close(self) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None


def _init_wandb(cfg: dict[str, Any], job: str, run_dir: Path, config: dict[str, Any] | None):
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
        id=wandb_run_id(run_dir, job),
        resume="allow",
        config=config,
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    # After a SIGKILL, the killed process's wandb-core service holds the run id until it notices its parent is gone
    # ("run ID ... is in use"); a resume right away must wait for it rather than fail or start another run.
    import time

    for attempt in range(30):
        try:
            return wandb.init(**kwargs)
        except Exception as e:  # wandb raises its own ServerResponseError type
            if "is in use" not in str(e) or attempt == 29:
                raise
            log.info(f"W&B run {kwargs['id']} still held by a previous process; retrying")
            time.sleep(2.0)
