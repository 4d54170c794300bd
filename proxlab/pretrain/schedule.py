"""Learning-rate schedules, as pure functions of the optimizer step `t` (0-based: the step about to be taken).

- cosine (reference code `train/pretrain/tinyllama.py` `get_lr`, paper Table 9): linear warmup from 0 over W steps,
  then cosine decay from `lr` to `min_lr` at `max_steps`; `min_lr` after that. Math CPT recipes use W = 0 and stop early
  (`early_stop_step`), so their cosine never finishes decaying -- the schedule still spans `max_steps`.
- wsd (paper Table 3's Pythia/MATES setting): with W warmup steps, stable until S, decay over D = max_steps - S:
      lr(t) = t/W · η                  t < W
      lr(t) = η                        W <= t < S
      lr(t) = 0.5^(4(t−S)/D) · η       S <= t < S + D
  The paper's constants (η 1e-3, min 6.25e-5 = 0.5^4 · η) make the exponential end exactly at min_lr; proxlab writes
  the decay as (min_lr/η)^((t−S)/D) · η, which is the paper's formula whenever min_lr = η/16, and reaches any other
  min_lr at t = S + D.
- constant: warmup, then η.

`lr_at(t, train)` picks the schedule of a typed `TrainConfig`; the three formulas are plain functions of numbers.
"""

from __future__ import annotations

import math

from proxlab.core.config import ConfigError, TrainConfig


def cosine_lr(t: int, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    if t < warmup_steps:
        return lr * t / warmup_steps
    if t >= max_steps:
        return min_lr
    decay_ratio = (t - warmup_steps) / max(1, max_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (lr - min_lr)


def wsd_lr(t: int, lr: float, min_lr: float, warmup_steps: int, stable_until: int, max_steps: int) -> float:
    if t < warmup_steps:
        return lr * t / warmup_steps
    if t < stable_until:
        return lr
    decay_steps = max(1, max_steps - stable_until)
    if t >= stable_until + decay_steps:
        return min_lr
    return lr * (min_lr / lr) ** ((t - stable_until) / decay_steps)


def constant_lr(t: int, lr: float, warmup_steps: int) -> float:
    return lr * t / warmup_steps if t < warmup_steps else lr


def lr_at(t: int, train: TrainConfig) -> float:
    """The learning rate of optimizer step `t` under `train` (its `schedule`, `lr`, `min_lr`, `warmup_steps`,
    `max_steps`, `wsd_stable_steps`). `check_train` validated these when the stage loaded them; a config built by hand
    that skipped it still fails here, naming the key."""
    if train.schedule == "cosine":
        return cosine_lr(t, train.lr, train.min_lr, train.warmup_steps, train.max_steps)
    if train.schedule == "wsd":
        stable = train.wsd_stable_steps
        if stable is None or not train.warmup_steps <= stable <= train.max_steps:
            raise ConfigError("train.wsd_stable_steps", stable, f"train.schedule=wsd needs it in [warmup_steps="
                                                                f"{train.warmup_steps}, max_steps={train.max_steps}]")
        return wsd_lr(t, train.lr, train.min_lr, train.warmup_steps, stable, train.max_steps)
    if train.schedule == "constant":
        return constant_lr(t, train.lr, train.warmup_steps)
    raise ConfigError("train.schedule", train.schedule, "expected cosine, wsd or constant")
