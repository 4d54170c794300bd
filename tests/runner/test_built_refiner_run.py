"""A refiner built inside the experiment graph, for real (exp=demo's path, smaller): the raw-corpus base, the rules
teacher, SFT data, LitGPT fine-tunes, selection by F1 and the exported refiners driving refine.doc / refine.chunk; the
ledger keeps the build's FLOPs apart from the experiment's own."""

import json
import subprocess
import sys
from pathlib import Path

from proxlab.core.paths import REPO_ROOT

SHORT = ["train.max_steps=6", "train.save_interval=3", "train.warmup_steps=1", "model.tokenizer.vocab_size=1024"]
SMALL = ["exp=demo", "refine=prox", "corpus.num_docs=120", "corpus.docs_per_shard=60", *SHORT, "eval.limit=8",
         "eval.tasks=[arc_easy,piqa]", *(f"refiner.base.{o}" for o in SHORT), "refiner.annotate.num_docs=60",
         "refiner.finetune.epochs=2", "refiner.select.limit=8", "refine.chunk.max_new_tokens=16"]


def test_demo_builds_its_refiners_and_refines_with_them(tmp_path):
    cmd = [sys.executable, "-m", "proxlab.cli", "run", *SMALL, f"paths.artifacts_dir={tmp_path / 'art'}",
           f"paths.runs_dir={tmp_path / 'runs'}"]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    (run_dir,) = (tmp_path / "runs" / "demo").glob("prox-*")
    plan = {s["stage"]: Path(s["out_dir"]) for s in json.loads((run_dir / "plan.json").read_text())}
    for level in ("doc", "chunk"):
        refiner = plan[f"refiner.select_{level}"] / "refiner"
        assert (refiner / "config.json").is_file() and (refiner / "model.safetensors").is_file()
        scores = json.loads((plan[f"refiner.select_{level}"] / "scores.json").read_text())
        assert len(scores["epochs"]) == 2 and scores["best_checkpoint"] in ("epoch-01", "epoch-02")
        # the refine stage loaded exactly that export
        generated = json.loads((plan[f"refine.generate_{level}"] / "manifest.json").read_text())["extra"]
        assert Path(generated["model_path"]) == refiner.resolve()
    # the base is a pretraining artifact like any (a raw run of these settings would reuse it)
    assert plan["refiner.pretrain"].parent.name == "pretrain" and plan["refiner.pretrain"] != plan["pretrain"]
    assert plan["refiner.tokenize"].parent.name == "tokenize" and "refiner.tokenizer" not in plan
    summary = json.loads((run_dir / "summary.json").read_text())
    own = json.loads((plan["pretrain"] / "manifest.json").read_text())["flops"]["train"]
    assert summary["flops/train"] == own  # the base's pretraining is not the experiment's training
    assert summary["flops/refiner_base"] == own and summary["flops/sft"] > 0 and summary["flops/teacher"] == 0
    # the doc refiner decided: its programs are what apply_doc executed
    kept = json.loads((plan["refine.apply_doc"] / "manifest.json").read_text())["counts"]
    assert kept["docs_in"] == 120 and 0 < kept["docs_out"] <= 120
