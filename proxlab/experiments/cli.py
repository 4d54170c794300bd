"""The `proxlab` command: `run`, `report`, `plan`, `evaluate`, `submit`, `wandb-sync`, `stage`.

`run` (and `plan`, `evaluate`, `submit`) take Hydra overrides (`exp=smoke model.n_layer=2`, `-m` for sweeps);
`report` and `wandb-sync` take key=value options; `stage NAME --spec FILE` runs one stage by hand.
"""

from __future__ import annotations

import sys

USAGE = """usage: proxlab <command> [args]

commands:
  run [-m] exp=NAME [overrides]    run an experiment (or a Hydra multirun sweep) end to end
  plan [-m] exp=NAME [overrides]   print the stage graph and the planned tokens/FLOPs/GPU-hours, run nothing
                                   (-m: every experiment of the sweep, then the sweep's total)
  report [sweep=NAME] [runs_dir=]  tables and plots comparing the experiments of a sweep; options:
         [report.target_avg=41.6] [report.include_refiner_pretraining=true] [report.refiner_pretraining_flops=5.3e19]
         [wandb=true|false]        (default: the sweep's saved config)
  wandb-sync [runs_dir=runs] [sweep=NAME] [dry_run=true] [timeout_s=600]
                                   upload the offline W&B runs of a sweep (or of all sweeps)
  evaluate model=PATH eval=SUITE   evaluate a LitGPT checkpoint or HF model directly
  submit exp=NAME [overrides]      write and submit the sbatch command for an experiment
  stage MODULE --spec FILE         run one stage from its spec (e.g. proxlab.refine.rules)
  refine eval [--rules|--model]    doc-level keep/drop F1 of rules or refiners on labelled documents (--help)
"""


def _kv(args: list[str]) -> dict[str, str]:
    out = {}
    for a in args:
        if "=" not in a:
            raise SystemExit(f"proxlab: expected key=value, got {a!r}\n\n{USAGE}")
        k, v = a.split("=", 1)
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "run":
        from proxlab.experiments import run

        run.main(rest)
    elif command == "plan":
        from proxlab.experiments import run

        run.main([*rest, "dry_run=true"])
    elif command == "report":
        from pathlib import Path

        from proxlab.experiments.report import build_report

        from proxlab.experiments.report import sweep_settings

        kv = _kv(rest)
        sweep_dir = Path(kv.pop("runs_dir", "runs")).resolve() / kv.pop("sweep", "smoke")
        options, logger_cfg = sweep_settings(sweep_dir, kv)
        build_report(sweep_dir, log_wandb=logger_cfg is not None, logger_cfg=logger_cfg, options=options)
    elif command == "wandb-sync":
        from proxlab.experiments.wandb_sync import wandb_sync_main

        sys.exit(wandb_sync_main(_kv(rest)))
    elif command == "evaluate":
        from proxlab.experiments.direct import evaluate_main

        evaluate_main(rest)
    elif command == "submit":
        from proxlab.experiments.direct import submit_main

        submit_main(rest)
    elif command == "stage":
        import importlib

        if not rest:
            raise SystemExit("usage: proxlab stage MODULE --spec FILE")
        module = importlib.import_module(rest[0])
        from proxlab.experiments.spec import stage_cli

        stage_cli(module.main, rest[1:])
    elif command == "refine-eval" or (command == "refine" and rest[:1] == ["eval"]):
        from proxlab.refine import refiner_eval

        refiner_eval.main(rest if command == "refine-eval" else rest[1:])
    else:
        raise SystemExit(f"proxlab: unknown command {command!r}\n\n{USAGE}")


if __name__ == "__main__":
    main()
