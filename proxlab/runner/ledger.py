"""The run's ledger: which artifacts it used (fresh or reused), their counts and FLOPs, and the experiment's summary.

`ledger.json` sums the FLOPs of the artifacts a run used; an artifact shared with another run is counted in both runs
(each run's cost is what it would cost alone) and marked `reused` so a report can say what was shared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxlab.core.stage import MANIFEST, atomic_write_text, read_jsonl

LEDGER = "ledger.json"
SUMMARY = "summary.json"
# summary.json key of the accuracy curve: one point per evaluated checkpoint (the evaluate stage's `by_step/*.json`,
# written with eval.checkpoints=all), with the training tokens and FLOPs spent up to that step. Not under `eval/`:
# those keys are one number per task.
BY_STEP = "eval_by_step"
REFINER_STAGES = "refiner."  # the stages that build refiners (runner.graph.build_refiners)


@dataclass
class StageEntry:
    name: str
    key: str
    out_dir: str
    reused: bool
    counts: dict[str, float] = field(default_factory=dict)
    flops: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, name: str, key: str, out_dir: Path, reused: bool) -> "StageEntry":
        m = json.loads((Path(out_dir) / MANIFEST).read_text())
        return cls(name, key, str(out_dir), reused, m.get("counts", {}), m.get("flops", {}), m.get("wall_s", 0.0),
                   m.get("extra", {}))


@dataclass
class Ledger:
    run_dir: Path
    stages: dict[str, StageEntry] = field(default_factory=dict)

    def add(self, entry: StageEntry) -> None:
        self.stages[entry.name] = entry
        self.save()

    def flops(self, kind: str) -> float:
        """The experiment's own FLOPs of `kind`: building its refiners (refiner.* stages) is counted apart."""
        return float(sum(e.flops.get(kind, 0.0) for n, e in self.stages.items() if not n.startswith(REFINER_STAGES)))

    def refiner_flops(self) -> dict[str, float]:
        """Building the refiners, apart from refining and training as the paper counts them (it leaves SFT out as
        negligible and the base's pretraining out by footnote): flops/refiner_base (the base's pretraining),
        flops/teacher (annotation), flops/sft (fine-tuning). Empty without built refiners."""
        kinds = {"refiner_base": "train", "teacher": "annotate", "sft": "sft"}
        built = [e for n, e in self.stages.items() if n.startswith(REFINER_STAGES)]
        if not built:
            return {}
        return {f"flops/{name}": float(sum(e.flops.get(kind, 0.0) for e in built)) for name, kind in kinds.items()}

    def save(self) -> None:
        payload = {
            "stages": {n: e.__dict__ for n, e in self.stages.items()},
            "totals": {"flops/refine": self.flops("refine"), "flops/train": self.flops("train"),
                       "flops/total": self.flops("refine") + self.flops("train"), "flops/eval": self.flops("eval"),
                       **self.refiner_flops()},
        }
        atomic_write_text(self.run_dir / LEDGER, json.dumps(payload, indent=2, sort_keys=True))


def corpus_stage(ledger: Ledger) -> StageEntry | None:
    """The stage that produced the variant the model trained on: the last refine stage, else prepare."""
    refine = [e for n, e in ledger.stages.items() if n.startswith("refine.apply") or n == "refine.rules"]
    return refine[-1] if refine else ledger.stages.get("prepare")


def experiment_summary(ledger: Ledger, labels: dict[str, Any]) -> dict[str, Any]:
    """The final numbers of one experiment: eval/<task>, eval/avg, flops/*, tokens/train, docs/kept, plus labels."""
    out: dict[str, Any] = dict(labels)
    corpus = corpus_stage(ledger)
    prepared = ledger.stages.get("prepare")
    if prepared:
        out["docs/raw"] = prepared.counts.get("docs")
    if corpus:
        out["docs/kept"] = corpus.counts.get("docs_out", corpus.counts.get("docs"))
    if "tokenize" in ledger.stages:
        out["tokens/variant"] = ledger.stages["tokenize"].counts.get("tokens")
    if "pretrain" in ledger.stages:
        pre = ledger.stages["pretrain"]
        out["tokens/train"] = pre.counts.get("tokens")
        out["train/steps"] = pre.counts.get("steps")
        out["train/epochs"] = pre.counts.get("epochs")
        out["train/final_loss"] = pre.extra.get("final_loss")
    out["flops/refine"] = ledger.flops("refine")
    out["flops/train"] = ledger.flops("train")
    out["flops/total"] = out["flops/refine"] + out["flops/train"]
    out.update(ledger.refiner_flops())
    if "evaluate" in ledger.stages:
        results = ledger.stages["evaluate"].extra.get("results", {})
        scores = task_scores(results)
        for task, r in sorted(results.get("tasks", {}).items()):
            out[f"eval/{task}"] = scores[task]
            out[f"eval/{task}/acc"] = r.get("acc")
        out["eval/avg"] = results.get("avg")
        out["eval/metric"] = results.get("metric", "acc_norm")
        out[BY_STEP] = accuracy_by_step(ledger)
    out["reused_stages"] = [n for n, e in ledger.stages.items() if e.reused]
    return out


def task_scores(results: dict[str, Any]) -> dict[str, float | None]:
    """Each task's reported metric (acc_norm or acc, per task) from an evaluate results dict."""
    return {task: r.get(r.get("metric", "acc_norm")) for task, r in results.get("tasks", {}).items()}


def accuracy_by_step(ledger: Ledger) -> list[dict[str, Any]]:
    """The run's accuracy curve from the evaluate artifact's `by_step/step-XXXXXXXX.json` files, ascending by step, with
    the final checkpoint appended when no step directory held it. Empty when only the final checkpoint was evaluated.

    Tokens and training FLOPs at step s are the pretrain stage's totals × s / steps (constant batch size)."""
    evaluate, pre = ledger.stages.get("evaluate"), ledger.stages.get("pretrain")
    if evaluate is None:
        return []
    files = sorted((Path(evaluate.out_dir) / "by_step").glob("step-*.json"))
    if not files:
        return []
    results = [json.loads(f.read_text()) for f in files]
    steps = pre.counts.get("steps") if pre else None
    final = evaluate.extra.get("results", {})
    final_step = final.get("step") if final.get("step") is not None else steps
    if final and final_step is not None and all(r.get("step") != final_step for r in results):
        results.append({**final, "step": final_step})
    points = []
    for r in sorted(results, key=lambda r: r["step"]):
        share = r["step"] / steps if steps else None
        points.append({
            "step": r["step"],
            "tokens": None if share is None else pre.counts.get("tokens", 0) * share,
            "flops/train": None if share is None else pre.flops.get("train", 0.0) * share,
            "avg": r.get("avg"),
            "tasks": task_scores(r),
        })
    return points


def collect_stage_metrics(ledger: Ledger) -> list[dict[str, Any]]:
    """Every metric record of the artifacts this run used, tagged with stage and artifact, for the run's jsonl."""
    records = []
    for name, entry in ledger.stages.items():
        for rec in read_jsonl(Path(entry.out_dir) / "metrics.jsonl"):
            records.append({**rec, "stage": name, "artifact": entry.key, "reused": entry.reused})
    return records
