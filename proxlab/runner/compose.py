"""Composing the experiment config with Hydra: the schemas registered as the base of `conf/config.yaml`, and the
config outside a Hydra app (`proxlab plan`/`evaluate`/`submit`, tests)."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from proxlab.core.config import ExperimentConfig
from proxlab.core.paths import REPO_ROOT

CONF_DIR = str(REPO_ROOT / "conf")


def register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="proxlab_schema", node=ExperimentConfig)


def compose_config(overrides: list[str]):
    """The experiment config outside a Hydra app, with Hydra's runtime node set so `${hydra:...}` resolves."""
    from hydra.core.hydra_config import HydraConfig

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg
