"""`proxlab plan` from configs alone reproduces the paper's compute statements (§4.2)."""

import pytest

from proxlab.runner.compose import compose_config
from proxlab.runner.planning import describe_costs, refining_flops
from proxlab.runner.validate import typed


def compose(overrides: list[str]):
    return typed(compose_config(overrides))


def test_refining_redpajama_with_the_03b_refiners_costs_5e19():
    cfg = compose(["exp=table2", "refine=prox_xs"])
    _, refine = refining_flops(cfg)
    # 2·313.3M·(62.5B raw + 19B doc-kept) ≈ 5.1e19 ("C ≈ 5×10^19")
    assert refine == pytest.approx(5.1e19, rel=0.01)
    lines = describe_costs(cfg)
    more = next(line for line in lines if line.startswith("refining equals training"))
    assert float(more.split()[3]) == pytest.approx(12e9, rel=0.05)  # "an additional 12B tokens on TLM-S"


def test_same_cost_is_5b_tokens_at_17b():
    cfg = compose(["exp=table2", "refine=prox_xs", "model=tlm_m", "train=tlm_m_12k5"])
    more = next(line for line in describe_costs(cfg) if line.startswith("refining equals training"))
    assert float(more.split()[3]) == pytest.approx(5e9, rel=0.05)  # "and 5B tokens on TLM-M"


def test_raw_has_no_refining_cost_and_gpu_hours_are_printed():
    lines = describe_costs(compose(["exp=table2", "refine=raw"]))
    assert any("refine 0.000e+00" in line for line in lines)
    assert any("H100" in line for line in lines) and any("A100" in line for line in lines)


def test_sweep_total_counts_a_shared_refining_once():
    from proxlab.runner.planning import CostEstimate, describe_sweep_costs

    fig5 = [CostEstimate("xs_raw", 26.2e9, 4.9e19, 0.0, None, "p1"),
            CostEstimate("xs_prox", 26.2e9, 4.9e19, 5.1e19, "g1+g2", "p2"),
            CostEstimate("s_prox", 26.2e9, 1.1e20, 5.1e19, "g1+g2", "p3")]  # one refined corpus, two base sizes
    lines = describe_sweep_costs(fig5)
    assert "3 trainings over 7.86e+10 tokens; 1 distinct refinings for 2 refined experiments" in lines[0]
    assert lines[1] == "sweep FLOPs: refine 5.100e+19 + train 2.080e+20 = 2.590e+20"
    assert any(line.startswith("sweep GPU-hours at 40% MFU on H100") for line in lines)


def test_plan_of_a_sweep_prints_each_experiment_and_the_total(tmp_path):
    import subprocess
    import sys

    from proxlab.core.paths import REPO_ROOT

    r = subprocess.run([sys.executable, "-m", "proxlab.cli", "plan", "-m", "exp=fig5", "model=tlm_xs,tlm_s",
                        "refine=prox_xs", f"paths.runs_dir={tmp_path / 'runs'}",
                        f"paths.artifacts_dir={tmp_path / 'artifacts'}"],
                       capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line.removeprefix("[proxlab] ") for line in r.stdout.splitlines()]
    assert "FLOPs: refine 5.107e+19 + train 4.928e+19 = 1.004e+20" in lines  # TLM-XS on ProX-xs data
    assert "FLOPs: refine 5.107e+19 + train 1.116e+20 = 1.627e+20" in lines  # TLM-S on the same refined corpus
    assert "sweep FLOPs: refine 5.107e+19 + train 1.609e+20 = 2.120e+20" in lines  # refined once for both
    assert not (tmp_path / "artifacts").exists()  # planned, not run
