"""Learning-rate schedules: cosine with warmup (reference code), the Pythia WSD formula (paper Table 3), constant."""

from __future__ import annotations

import math

import pytest

from proxlab.core.config import TrainConfig
from proxlab.pretrain.schedule import cosine_lr, lr_at, wsd_lr


def test_cosine_matches_reference_shape():
    train = TrainConfig(schedule="cosine", lr=5e-4, min_lr=5e-5, warmup_steps=500, max_steps=12500)
    assert lr_at(0, train) == 0.0
    assert lr_at(250, train) == pytest.approx(2.5e-4)
    assert lr_at(500, train) == pytest.approx(5e-4)
    mid = 500 + (12500 - 500) // 2
    assert lr_at(mid, train) == pytest.approx((5e-4 + 5e-5) / 2)
    assert lr_at(12500, train) == pytest.approx(5e-5)
    assert lr_at(20000, train) == pytest.approx(5e-5)
    lrs = [lr_at(t, train) for t in range(500, 12501, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_cosine_without_warmup_starts_at_peak_and_early_stop_leaves_it_undecayed():
    train = TrainConfig(schedule="cosine", lr=8e-5, min_lr=8e-6, warmup_steps=0, max_steps=15000, early_stop_step=10000)
    assert lr_at(0, train) == pytest.approx(8e-5)
    assert lr_at(9999, train) > 8e-6 * 2  # stopped at 10k of 15k: still well above min_lr


def test_pythia_wsd_formula():
    eta, W, S, D = 1e-3, 2000, 50000, 200
    train = TrainConfig(schedule="wsd", lr=eta, min_lr=6.25e-5, warmup_steps=W, wsd_stable_steps=S, max_steps=S + D)
    for t in (0, 1, 999, 1999):
        assert lr_at(t, train) == pytest.approx(t / W * eta)
    for t in (2000, 30000, 49999):
        assert lr_at(t, train) == pytest.approx(eta)
    for t in (50000, 50050, 50100, 50199):
        assert lr_at(t, train) == pytest.approx(0.5 ** (4 * (t - S) / D) * eta)  # the paper's formula
    assert lr_at(S + D, train) == pytest.approx(6.25e-5)


def test_wsd_general_min_lr_and_errors():
    assert wsd_lr(110, 1.0, 0.01, 10, 100, 120) == pytest.approx(0.1)  # halfway in log space between 1 and 0.01
    with pytest.raises(ValueError, match="wsd_stable_steps"):
        lr_at(5, TrainConfig(schedule="wsd", lr=1.0, max_steps=10))
    with pytest.raises(ValueError, match="cosine, wsd or constant"):
        lr_at(5, TrainConfig(schedule="linear", lr=1.0, max_steps=10))


def test_constant():
    train = TrainConfig(schedule="constant", lr=2e-3, warmup_steps=4, max_steps=10)
    assert [lr_at(t, train) for t in (0, 2, 4, 9)] == pytest.approx([0, 1e-3, 2e-3, 2e-3])
    assert math.isclose(cosine_lr(5, 1.0, 0.1, 0, 10), 0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
