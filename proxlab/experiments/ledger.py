"""The run's ledger: which artifacts it used (fresh or reused), their counts and FLOPs, and the experiment's summary.

`ledger.json` sums the FLOPs of the artifacts a run used; an artifact shared with another run is counted in both runs
(each run's cost is what it would cost alone) and marked `reused` so a report can say what was shared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxlab.experiments.spec import MANIFEST, atomic_write_text, read_jsonl

LEDGER = "ledger.json"
SUMMARY = "summary.json"


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
        return float(sum(e.flops.get(kind, 0.0) for e in self.stages.values()))

    def save(self) -> None:
        payload = {
            "stages": {n: e.__dict__ for n, e in self.stages.items()},
            "totals": {"flops/refine": self.flops("refine"), "flops/train": self.flops("train"),
                       "flops/total": self.flops("refine") + self.flops("train"), "flops/eval": self.flops("eval")},
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
        out["train/epochs"] = pre.counts.get("epochs")
        out["train/final_loss"] = pre.extra.get("final_loss")
    out["flops/refine"] = ledger.flops("refine")
    out["flops/train"] = ledger.flops("train")
    out["flops/total"] = out["flops/refine"] + out["flops/train"]
    if "evaluate" in ledger.stages:
        results = ledger.stages["evaluate"].extra.get("results", {})
        for task, r in sorted(results.get("tasks", {}).items()):
            metric = r.get("metric", "acc_norm")
            out[f"eval/{task}"] = r.get(metric)
            out[f"eval/{task}/acc"] = r.get("acc")
        out["eval/avg"] = results.get("average")
        out["eval/metric"] = results.get("metric", "acc_norm")
    out["reused_stages"] = [n for n, e in ledger.stages.items() if e.reused]
    return out


def collect_stage_metrics(ledger: Ledger) -> list[dict[str, Any]]:
    """Every metric record of the artifacts this run used, tagged with stage and artifact, for the run's jsonl."""
    records = []
    for name, entry in ledger.stages.items():
        for rec in read_jsonl(Path(entry.out_dir) / "metrics.jsonl"):
            records.append({**rec, "stage": name, "artifact": entry.key, "reused": entry.reused})
    return records
