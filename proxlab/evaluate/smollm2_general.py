"""Run the general suite on SmolLM2-135M-Instruct (HF, offline, CPU) with a sample limit and print each task's score
beside its chance level.

    python -m proxlab.evaluate.smollm2_general [--limit 100] [--mmlu-limit 4] [--threads 1] [--out DIR]

``--limit`` caps every task (after the seed-42 shuffle), ``--mmlu-limit`` each of the 57 MMLU subjects. Writes
``<out>/results.json`` and per-sample files, and exits non-zero if ARC-Easy, PIQA, SciQ or HellaSwag is not above
chance (acc_norm). Used for the evaluation docs' SmolLM2 numbers; the slow test ``test_smollm2_general`` runs it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MUST_BEAT_CHANCE = ("arc_easy", "piqa", "sciq", "hellaswag")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--mmlu-limit", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: $PROXLAB_EVAL_THREADS or "
                                                              "torch's default)")
    ap.add_argument("--hf-impl", default="shared", choices=["shared", "hflm"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="default <repo>/.cache/eval/smollm2_general")
    args = ap.parse_args(argv)

    from proxlab.core.paths import REPO_ROOT
    from proxlab.evaluate.runner import configure_threads, evaluate_model, format_table
    from proxlab.evaluate.tasks.suites import get_suite
    from proxlab.models.smollm2 import ensure_smollm2

    configure_threads(args.threads)
    out = Path(args.out) if args.out else REPO_ROOT / ".cache" / "eval" / "smollm2_general"
    t0 = time.perf_counter()
    model_dir = ensure_smollm2()
    cfg = {"suite": "general", "tasks": list(get_suite("general").tasks), "limit": args.limit,
           "task_limits": {"mmlu": args.mmlu_limit}, "batch_size": args.batch_size, "seed": 1234}
    res = evaluate_model(str(model_dir), cfg, out, data_dir=args.data_dir, dtype=args.dtype, hf_impl=args.hf_impl)
    wall = time.perf_counter() - t0
    print(format_table(res))
    print(f"wall time {wall:.0f} s (lm-eval {res['runtime_s']:.0f} s); results in {out / 'results.json'}")
    bad = [t for t in MUST_BEAT_CHANCE if res["tasks"][t]["acc_norm"] <= res["tasks"][t]["chance"]]
    if bad:
        print(f"NOT above chance: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
