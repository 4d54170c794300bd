"""The ``evaluate`` stage: evaluate a pretrain artifact's final checkpoint (and, with ``checkpoints: all``, every
intermediate ``step-XXXXXXXX`` checkpoint) on an eval suite with lm-eval.

Input ``checkpoint``: a pretrain artifact directory with ``final/`` and ``step-XXXXXXXX/`` LitGPT checkpoint dirs.
``config.model`` set: evaluate that model (LitGPT dir, HF dir/id, ``smollm2``) instead of the input.

Outputs under the artifact dir:
  ``results.json``                      results of the final checkpoint (format: ``proxlab.evaluate.runner``)
  ``by_step/step-XXXXXXXX.json``        results of each intermediate checkpoint (``checkpoints: all``)
  ``samples/<checkpoint>/<task>.jsonl`` per-sample contexts, log-likelihoods / generations, predictions, scores
  ``metrics.jsonl``                     ``eval/<task>`` and ``eval/avg`` per step, a table per checkpoint, a summary

Config: ``spec.config`` is the ``eval`` section, loaded once into an ``EvalConfig``; its data (``eval.task_files``
included) is checked before any checkpoint is loaded. Each results file records, per task, the file, split and items
scored and how they differ from the paper's (``data``; ``proxlab.evaluate.tasks.splits``). Device: ``spec.runtime
["accelerator"]`` (``cpu`` | ``gpu`` | ``auto``, the cluster's), mapped to a torch device by ``torch_device``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxlab.core.config import EvalConfig, load
from proxlab.core.stage import StageResult, StageSpec, accelerator_device, atomic_write_text, stage_cli
from proxlab.core.tracking import MetricsLogger

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^step-(\d+)$")
ACCELERATORS = ("cpu", "gpu", "auto")


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


@dataclass
class _Run:
    """What every checkpoint's evaluation in one stage run shares."""

    cfg: EvalConfig
    data_dir: str | None
    device: str
    out: Path
    logger: MetricsLogger

    def suite(self, lm, label: str, step: int | None, model_name: str) -> dict[str, Any]:
        """Results of ``lm`` on the suite, its samples under ``samples/<label>``."""
        from proxlab.evaluate.runner import run_suite

        return run_suite(lm, self.cfg, self.data_dir, self.out / "samples" / label, label, step, model_name)

    def log_results(self, results: dict[str, Any], step: int | None) -> None:
        from proxlab.evaluate.runner import results_table

        metrics = {f"eval/{name}": e[e["metric"]] for name, e in results["tasks"].items()}
        metrics["eval/avg"] = results["avg"]
        self.logger.log(metrics, step=step)
        cols, rows = results_table(results)
        self.logger.table(f"eval/table/{results['checkpoint']}", cols, rows)


def load_config(spec: StageSpec) -> EvalConfig:
    cfg = load(EvalConfig, spec.config, spec.runtime.get("settings"), where="eval")
    if cfg.checkpoints not in ("final", "all"):
        raise ValueError(f"eval.checkpoints must be 'final' or 'all', got {cfg.checkpoints!r}")
    return cfg


def evaluate_model_override(run: _Run) -> dict[str, Any]:
    """``config.model`` set: evaluate that model (LitGPT dir, HF dir/id, ``smollm2``) as the final checkpoint."""
    from proxlab.evaluate.lms.litgpt import checkpoint_step
    from proxlab.evaluate.runner import make_lm, resolve_model_path

    kind, loc = resolve_model_path(run.cfg.model)
    lm = make_lm(run.cfg.model, batch_size=run.cfg.batch_size, device=run.device)
    step = checkpoint_step(lm.checkpoint_dir, lm.meta) if kind == "litgpt" else None
    return run.suite(lm, "final", step, loc)


def evaluate_steps(run: _Run, steps: list[tuple[int, Path]], final_lm, final_dir: Path,
                   final_step: int | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Every intermediate checkpoint, ascending: ``by_step/<label>.json``, metrics and a table each. A step directory
    at final/'s own training step is evaluated once, as final; returns (final's results or None, all results)."""
    from proxlab.evaluate.lms.litgpt import LitGPTLM
    from proxlab.evaluate.runner import format_table

    final_res, all_results = None, []
    for step, d in steps:
        label = d.name
        if step == final_step:  # same training step as final/: evaluate once
            final_res = run.suite(final_lm, "final", final_step, str(final_dir))
            res = {**final_res, "checkpoint": label, "samples_dir": final_res.get("samples_dir")}
        else:
            lm = LitGPTLM(d, batch_size=run.cfg.batch_size, device=run.device)
            res = run.suite(lm, label, step, str(d))
            del lm
        atomic_write_text(run.out / "by_step" / f"{label}.json", json.dumps(res, indent=2, sort_keys=True, default=str))
        run.log_results(res, step)
        all_results.append(res)
        print(format_table(res), flush=True)
    return final_res, all_results


def evaluate_artifact(run: _Run, artifact: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pretrain artifact's ``final/`` and, with ``checkpoints: all``, its ``step-*`` checkpoints; returns (final's
    results, the intermediate checkpoints' results)."""
    from proxlab.evaluate.lms.litgpt import LitGPTLM, checkpoint_step

    final_dir, steps = list_checkpoints(artifact)
    if final_dir is None:
        raise FileNotFoundError(f"{artifact}: no final/ checkpoint (lit_model.pth) to evaluate")
    final_lm = LitGPTLM(final_dir, batch_size=run.cfg.batch_size, device=run.device)
    final_step = checkpoint_step(final_dir, final_lm.meta)
    final_res, all_results = None, []
    if run.cfg.checkpoints == "all":
        final_res, all_results = evaluate_steps(run, steps, final_lm, final_dir, final_step)
    if final_res is None:
        final_res = run.suite(final_lm, "final", final_step, str(final_dir))
    return final_res, all_results


def write_final(run: _Run, final_res: dict[str, Any], all_results: list[dict[str, Any]]) -> None:
    """``results.json``, final's metrics (unless its step's were logged already) and the run summary."""
    from proxlab.evaluate.runner import format_table

    atomic_write_text(run.out / "results.json", json.dumps(final_res, indent=2, sort_keys=True, default=str))
    if not (all_results and final_res["step"] is not None and final_res["step"] == all_results[-1]["step"]):
        run.log_results(final_res, final_res["step"])
    run.logger.summary({f"eval/final/{k}": e[e["metric"]] for k, e in final_res["tasks"].items()}
                       | {"eval/final/avg": final_res["avg"]})
    print(format_table(final_res), flush=True)


def stage_result(final_res: dict[str, Any], all_results: list[dict[str, Any]]) -> StageResult:
    others = [r for r in all_results if r["step"] is None or r["step"] != final_res["step"]]
    total = final_res["n_samples"] + sum(r["n_samples"] for r in others)
    return StageResult(counts={"tasks": len(final_res["tasks"]), "samples": total, "checkpoints": 1 + len(others)},
                       flops={}, extra={"results": final_res})


def check_data(cfg: EvalConfig, data_dir: str | None) -> None:
    """Before any checkpoint is loaded: ``eval.task_files`` all present (an error names the task, the key and the
    path) and every task's data present, or skipped as ``eval.on_missing_task`` says."""
    from proxlab.evaluate.runner import check_suite_data

    check_suite_data(cfg, data_dir)


def main(spec: StageSpec) -> StageResult:
    cfg = load_config(spec)
    check_data(cfg, spec.runtime.get("data_dir"))
    spec.out.mkdir(parents=True, exist_ok=True)
    run = _Run(cfg, spec.runtime.get("data_dir"), torch_device(spec.runtime.get("accelerator")), spec.out,
               MetricsLogger.for_stage(spec))
    try:
        if cfg.model:
            final_res, all_results = evaluate_model_override(run), []
        else:
            final_res, all_results = evaluate_artifact(run, spec.input("checkpoint"))
        write_final(run, final_res, all_results)
    finally:
        run.logger.close()
    return stage_result(final_res, all_results)


if __name__ == "__main__":
    stage_cli(main)
