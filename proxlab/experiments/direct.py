"""`proxlab evaluate` and `proxlab submit`: commands that use the experiment config without running the stage graph."""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from proxlab.experiments.config import register_schemas
from proxlab.experiments.paths import REPO_ROOT, data_dir


def compose_config(overrides: list[str]):
    """The experiment config outside a Hydra app, with Hydra's runtime node set so `${hydra:...}` resolves."""
    from hydra.core.hydra_config import HydraConfig

    register_schemas()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def evaluate_main(args: list[str]) -> None:
    """`proxlab evaluate model=<checkpoint dir | HF dir | HF id> eval=<suite> [eval.limit=N ...] [out=DIR]`."""
    model = next((a.split("=", 1)[1] for a in args if a.startswith("model=")), None)
    out = next((a.split("=", 1)[1] for a in args if a.startswith("out=")), None)
    if not model:
        raise SystemExit("usage: proxlab evaluate model=<checkpoint dir | HF model dir or id> eval=<suite> [eval.*=...]")
    overrides = [a for a in args if not a.startswith(("model=", "out="))]
    cfg = compose_config(overrides)
    from proxlab.evaluate.runner import evaluate_model

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.strip("/"))[-80:]
    out_dir = Path(out) if out else Path(cfg.paths.runs_dir).resolve() / "evaluate" / name / cfg.eval.suite
    results = evaluate_model(model, OmegaConf.to_container(cfg.eval, resolve=True), out_dir,
                             data_dir(cfg.paths.data_dir))
    print(f"[proxlab] results in {out_dir}: average {results.get('average')}", flush=True)


def submit_main(args: list[str]) -> None:
    """`proxlab submit exp=NAME [overrides] [--dry-run]`: write and submit the sbatch command for the experiment."""
    dry = "--dry-run" in args
    overrides = [a for a in args if a != "--dry-run"]
    if not any(a.split("=", 1)[0].lstrip("+") == "cluster" for a in overrides):
        overrides = ["cluster=slurm", *overrides]  # submitting means Slurm unless the user picked a cluster config
    cfg = compose_config(overrides)
    from proxlab.experiments.slurm import submit

    submit(OmegaConf.to_container(cfg.cluster, resolve=True), overrides, dry_run=dry)
