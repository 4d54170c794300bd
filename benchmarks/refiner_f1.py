"""A built refiner's validation F1 beside trivial baselines, and its doc-level F1 on DCLM's human labels.

    .venv/bin/python benchmarks/refiner_f1.py runs/demo/<run>          # a run that built refiners (its plan.json)
    .venv/bin/python benchmarks/refiner_f1.py runs/demo/<run> --dclm-limit 300

Prints, for each built level (refiner.select_<level> in the run's plan):
- doc: the best epoch's keep-class F1 (paper §A.3, Table 4) on the validation split, and on the same gold labels the
  baselines keep-all (every document kept) and majority label (the validation split's more frequent label);
- chunk: the best epoch's micro line F1, and remove-nothing (keep_chunk() for every chunk: the majority answer);
- doc: the exported refiner's keep F1 on DCLM's human quality labels (`proxlab refine eval`, the refine stage's own
  prompt settings: chat format, truncation and max_prompt_tokens from the run's config).
The numbers go in docs/refine.md ("A built refiner beside trivial baselines").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from proxlab.refine.refiner_metrics import doc_f1, line_f1_corpus


def select_dirs(run_dir: Path) -> dict[str, Path]:
    plan = json.loads((run_dir / "plan.json").read_text())
    return {s["stage"].rsplit("_", 1)[1]: Path(s["out_dir"]) for s in plan if s["stage"].startswith("refiner.select_")}


def best_predictions(select: Path) -> tuple[dict, list[dict]]:
    scores = json.loads((select / "scores.json").read_text())
    best = scores["best_checkpoint"]
    rows = [json.loads(line) for line in (select / "predictions" / f"{best}.jsonl").read_text().splitlines() if line]
    return scores, rows


def doc_rows(select: Path) -> list[tuple[str, float]]:
    scores, rows = best_predictions(select)
    gold = [bool(r["gold_keep"]) for r in rows]
    majority = sum(gold) * 2 >= len(gold)
    return [(f"built refiner ({scores['best_checkpoint']})", doc_f1([bool(r["pred_keep"]) for r in rows], gold)["f1"]),
            ("keep-all", doc_f1([True] * len(gold), gold)["f1"]),
            (f"majority label ({'keep' if majority else 'drop'})", doc_f1([majority] * len(gold), gold)["f1"])]


def chunk_rows(select: Path) -> list[tuple[str, float]]:
    scores, rows = best_predictions(select)
    built = line_f1_corpus((r["pred_removed"], r["gold_removed"]) for r in rows)["f1"]
    nothing = line_f1_corpus(([], r["gold_removed"]) for r in rows)["f1"]
    return [(f"built refiner ({scores['best_checkpoint']})", built), ("remove-nothing (majority)", nothing)]


def dclm_f1(run_dir: Path, select: Path, limit: int | None) -> dict:
    from proxlab.core.paths import data_dir
    from proxlab.refine.refiner_eval import DCLM_FILE, evaluate_refiner, model_decider

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    doc = cfg["refine"]["doc"]
    gen = {"backend": "hf", "model": str(select / "refiner"), "dtype": "float32", "max_new_tokens": doc["max_new_tokens"],
           "max_prompt_tokens": doc["max_prompt_tokens"], "chat_format": doc["chat_format"],
           "truncation": doc["truncation"], "batch_size": 16}
    root = data_dir(cfg["paths"]["data_dir"])
    return evaluate_refiner(root / DCLM_FILE, model_decider(gen, data_dir=str(root)), limit=limit)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a run directory (runs/<sweep>/<run>) whose plan built refiners")
    p.add_argument("--dclm-limit", type=int, default=None, help="first N DCLM-labelled documents (default: all)")
    args = p.parse_args(argv)
    selects = select_dirs(args.run_dir)
    if not selects:
        sys.exit(f"{args.run_dir}/plan.json has no refiner.select_* stage: this run built no refiner")
    print("| level | predictor | validation F1 |\n|---|---|---|")
    for level, rows in (("doc", doc_rows), ("chunk", chunk_rows)):
        if level in selects:
            for name, f1 in rows(selects[level]):
                print(f"| {level} | {name} | {100 * f1:.1f} |")
    if "doc" in selects:
        r = dclm_f1(args.run_dir, selects["doc"], args.dclm_limit)
        p_keep = r["gold_keep_ratio"]
        print(f"\nDCLM human labels (n={r['n']}): built doc refiner keep F1 {100 * r['f1']:.1f} (kept "
              f"{100 * r['kept_ratio']:.1f}%, macro F1 {100 * r['macro_f1']:.1f}); keep-all keep F1 "
              f"{100 * 2 * p_keep / (1 + p_keep):.1f} ({100 * p_keep:.1f}% labelled good)")

if __name__ == "__main__":
    main()
