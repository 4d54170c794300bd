"""Config errors fail fast and name what is wrong (issue: a typo fails within seconds, naming the key)."""

import subprocess
import sys
import time

from hydra import compose, initialize_config_dir

from proxlab.experiments.paths import REPO_ROOT
from proxlab.experiments.run import CONF_DIR  # noqa: F401  (registers the schemas)


def proxlab(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "proxlab.experiments.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def test_typo_in_override_fails_fast_naming_the_key():
    t0 = time.perf_counter()
    r = proxlab("run", "exp=smoke", "model.n_layr=2")
    assert r.returncode != 0
    assert "n_layr" in r.stderr + r.stdout
    assert time.perf_counter() - t0 < 30


def test_unknown_experiment_lists_known_ones():
    r = proxlab("run", "exp=no_such_experiment")
    assert r.returncode != 0
    out = r.stderr + r.stdout
    assert "exp/no_such_experiment" in out and "smoke" in out


def test_wrong_type_fails():
    r = proxlab("run", "exp=smoke", "train.max_steps=many")
    assert r.returncode != 0 and "max_steps" in r.stderr + r.stdout


def test_every_named_experiment_composes():
    names = sorted(p.stem for p in (REPO_ROOT / "conf" / "exp").glob("*.yaml"))
    assert "smoke" in names
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        for name in names:
            cfg = compose("config", overrides=[f"exp={name}"])
            assert cfg.name, name
