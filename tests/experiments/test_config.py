"""Config errors fail fast and name what is wrong (issue: a typo fails within seconds, naming the key)."""

import subprocess
import sys
import time

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


def test_every_named_experiment_composes_and_plans():
    from proxlab.experiments.direct import compose_config
    from proxlab.experiments.graph import plan

    names = sorted(p.stem for p in (REPO_ROOT / "conf" / "exp").glob("*.yaml"))
    assert {"smoke", "table2", "fig5", "fig6", "table3", "table5_mistral", "prox_1b"} <= set(names)
    for name in names:
        cfg = compose_config([f"exp={name}"])
        assert cfg.name and "${" not in cfg.name, name
        assert plan(cfg, REPO_ROOT / "artifacts")[-1].name == "evaluate", name
