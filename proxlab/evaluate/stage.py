"""The ``evaluate`` stage: evaluate a pretrain artifact's final checkpoint (and, with ``checkpoints: all``, every
intermediate ``step-XXXXXXXX`` checkpoint) on an eval suite with lm-eval.

Input ``checkpoint``: a pretrain artifact directory with ``final/`` and ``step-XXXXXXXX/`` LitGPT checkpoint dirs.
``config.model`` set: evaluate that model (LitGPT dir, HF dir/id, ``smollm2``) instead of the input.

Outputs under the artifact dir:
  ``results.json``                      results of the final checkpoint (format: ``proxlab.evaluate.runner``)
  ``by_step/step-XXXXXXXX.json``        results of each intermediate checkpoint (``checkpoints: all``)
  ``samples/<checkpoint>/<task>.jsonl`` per-sample contexts, log-likelihoods / generations, predictions, scores
  ``metrics.jsonl``                     ``eval/<task>`` and ``eval/avg`` per step, a table per checkpoint, a summary
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from proxlab.experiments.spec import StageResult, StageSpec, atomic_write_text, stage_cli
from proxlab.experiments.tracking import MetricsLogger

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^step-(\d+)$")


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


def _device(spec: StageSpec) -> str:
    want = str(spec.runtime.get("device", "cpu"))
    if want.startswith(("cuda", "gpu")):
        import torch

        if torch.cuda.is_available():
            return "cuda" if want == "gpu" else want
        log.warning("runtime device %s requested but CUDA is not available: evaluating on CPU", want)
    return "cpu"


def _log_results(logger: MetricsLogger, results: dict[str, Any], step: int | None) -> None:
    from proxlab.evaluate.runner import results_table

    metrics = {f"eval/{name}": e[e["metric"]] for name, e in results["tasks"].items()}
    metrics["eval/avg"] = results["average"]
    logger.log(metrics, step=step)
    cols, rows = results_table(results)
    logger.table(f"eval/table/{results['checkpoint']}", cols, rows)


def main(spec: StageSpec) -> StageResult:
    from proxlab.evaluate.litgpt_lm import LitGPTLM, checkpoint_step
    from proxlab.evaluate.runner import format_table, make_lm, normalize_cfg, resolve_model_path, run_suite

    cfg = normalize_cfg(spec.config)
    data_dir = spec.runtime.get("data_dir")
    device = _device(spec)
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    if cfg["checkpoints"] not in ("final", "all"):
        raise ValueError(f"eval.checkpoints must be 'final' or 'all', got {cfg['checkpoints']!r}")

    logger = MetricsLogger.for_stage(spec)
    all_results: list[dict[str, Any]] = []
    try:
        if cfg["model"]:
            kind, loc = resolve_model_path(cfg["model"])
            lm = make_lm(cfg["model"], batch_size=cfg["batch_size"], device=device)
            step = checkpoint_step(lm.checkpoint_dir, lm.meta) if kind == "litgpt" else None
            final_res = run_suite(lm, cfg, data_dir, out / "samples" / "final", "final", step, loc)
        else:
            artifact = spec.input("checkpoint")
            final_dir, steps = list_checkpoints(artifact)
            if final_dir is None:
                raise FileNotFoundError(f"{artifact}: no final/ checkpoint (lit_model.pth) to evaluate")
            final_lm = LitGPTLM(final_dir, batch_size=cfg["batch_size"], device=device)
            final_step = checkpoint_step(final_dir, final_lm.meta)
            final_res = None
            if cfg["checkpoints"] == "all":
                for step, d in steps:
                    label = d.name
                    if step == final_step:  # same training step as final/: evaluate once
                        final_res = run_suite(final_lm, cfg, data_dir, out / "samples" / "final", "final",
                                              final_step, str(final_dir))
                        res = {**final_res, "checkpoint": label, "samples_dir": final_res.get("samples_dir")}
                    else:
                        lm = LitGPTLM(d, batch_size=cfg["batch_size"], device=device)
                        res = run_suite(lm, cfg, data_dir, out / "samples" / label, label, step, str(d))
                        del lm
                    atomic_write_text(out / "by_step" / f"{label}.json",
                                      json.dumps(res, indent=2, sort_keys=True, default=str))
                    _log_results(logger, res, step)
                    all_results.append(res)
                    print(format_table(res), flush=True)
            if final_res is None:
                final_res = run_suite(final_lm, cfg, data_dir, out / "samples" / "final", "final", final_step,
                                      str(final_dir))
        atomic_write_text(out / "results.json", json.dumps(final_res, indent=2, sort_keys=True, default=str))
        if not (all_results and final_res["step"] is not None and final_res["step"] == all_results[-1]["step"]):
            _log_results(logger, final_res, final_res["step"])
        logger.summary({f"eval/final/{k}": e[e["metric"]] for k, e in final_res["tasks"].items()}
                       | {"eval/final/avg": final_res["average"]})
        print(format_table(final_res), flush=True)
    finally:
        logger.close()
    others = [r for r in all_results if r["step"] is None or r["step"] != final_res["step"]]
    total = final_res["n_samples"] + sum(r["n_samples"] for r in others)
    return StageResult(counts={"tasks": len(final_res["tasks"]), "samples": total, "checkpoints": 1 + len(others)},
                       flops={}, extra={"results": final_res})


if __name__ == "__main__":
    stage_cli(main)
