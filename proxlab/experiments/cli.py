"""The `proxlab` command: `run`, `report`, `plan`, `evaluate`, `submit`, `stage`.

`run` (and `plan`, `evaluate`, `submit`) take Hydra overrides (`exp=smoke model.n_layer=2`, `-m` for sweeps);
`report` takes `sweep=NAME` and optional `runs_dir=PATH`; `stage NAME --spec FILE` runs one stage by hand.
"""

from __future__ import annotations

import sys

USAGE = """usage: proxlab <command> [args]

commands:
  run [-m] exp=NAME [overrides]    run an experiment (or a Hydra multirun sweep) end to end
  plan exp=NAME [overrides]        print the stage graph and the planned tokens/FLOPs, run nothing
  report [sweep=NAME] [runs_dir=]  tables and plot comparing the experiments of a sweep
  evaluate model=PATH eval=SUITE   evaluate a LitGPT checkpoint or HF model directly
  submit exp=NAME [overrides]      write and submit the sbatch command for an experiment
  stage MODULE --spec FILE         run one stage from its spec (e.g. proxlab.refine.rules)
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

        kv = _kv(rest)
        sweep = kv.get("sweep", "smoke")
        build_report(Path(kv.get("runs_dir", "runs")).resolve() / sweep)
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
    else:
        raise SystemExit(f"proxlab: unknown command {command!r}\n\n{USAGE}")


if __name__ == "__main__":
    main()
