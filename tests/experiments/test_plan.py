"""`proxlab plan` from configs alone reproduces the paper's compute statements (§4.2)."""

import pytest

from proxlab.experiments.direct import compose_config
from proxlab.experiments.planning import describe_costs, refining_flops


def test_refining_redpajama_with_the_03b_refiners_costs_5e19():
    cfg = compose_config(["exp=table2", "refine=prox_xs"])
    _, refine = refining_flops(cfg)
    # 2·313.3M·(62.5B raw + 19B doc-kept) ≈ 5.1e19 ("C ≈ 5×10^19")
    assert refine == pytest.approx(5.1e19, rel=0.01)
    lines = describe_costs(cfg)
    more = next(line for line in lines if line.startswith("refining equals training"))
    assert float(more.split()[3]) == pytest.approx(12e9, rel=0.05)  # "an additional 12B tokens on TLM-S"


def test_same_cost_is_5b_tokens_at_17b():
    cfg = compose_config(["exp=table2", "refine=prox_xs", "model=tlm_m", "train=tlm_m_12k5"])
    more = next(line for line in describe_costs(cfg) if line.startswith("refining equals training"))
    assert float(more.split()[3]) == pytest.approx(5e9, rel=0.05)  # "and 5B tokens on TLM-M"


def test_raw_has_no_refining_cost_and_gpu_hours_are_printed():
    lines = describe_costs(compose_config(["exp=table2", "refine=raw"]))
    assert any("refine 0.000e+00" in line for line in lines)
    assert any("H100" in line for line in lines) and any("A100" in line for line in lines)
