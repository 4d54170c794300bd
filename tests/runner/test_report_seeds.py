"""Seeds in the report (proxlab.report.stats): runs that differ only by train.seed / train.data_seed are one row with
mean ± sd across seeds, paired within each seed against the baseline; each checkpoint's error bar comes from its own
per-sample results. Synthetic run directories as run.py writes them (ledger, summary, config.yaml, samples)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from proxlab.core.config import ReportConfig
from proxlab.report.stats import AVG, SEED_RUNS, SweepStats, aggregate_seeds, merge_seeds, paired
from proxlab.report.sweep import build_report, load_summaries
from proxlab.runner.ledger import SUMMARY, Ledger, StageEntry, experiment_summary

TASKS = ("arc_easy", "piqa")
N = 400
FINAL = 20  # steps; checkpoints evaluated at 10 and 20
SEEDS = ((1, None), (2, None), (1, 3))  # (train.seed, train.data_seed): "1", "2", "1/data 3"
FLIPPED = 12  # ProX = raw with this many more items right, in every seed and task: Δ = 3.0 points exactly


def _difficulty(task: str) -> np.ndarray:
    return np.random.default_rng(TASKS.index(task)).random(N)


def raw_scores(seed: int, level: float = 0.45) -> dict[str, np.ndarray]:
    """Items a run gets right: those easier than its level, each item's difficulty shared by all runs, plus noise
    of the seed's own (a seed also moves the level: 3 points apart)."""
    noise = np.random.default_rng(100 + seed).random((len(TASKS), N))
    return {t: (0.7 * _difficulty(t) + 0.3 * noise[i] < level + 0.03 * (seed - 1)).astype(float)
            for i, t in enumerate(TASKS)}


def flipped(scores: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """The same run with its first k wrong items (in item order) right."""
    out = {}
    for t, v in scores.items():
        v = v.copy()
        v[np.flatnonzero(v == 0)[:k]] = 1.0
        out[t] = v
    return out


def _results(scores: dict[str, np.ndarray], step: int, checkpoint: str) -> dict:
    tasks = {t: {"acc": float(v.mean()), "acc_norm": float(v.mean()), "metric": "acc_norm", "n": N}
             for t, v in scores.items()}
    return {"suite": "general", "checkpoint": checkpoint, "step": step, "metric": "acc_norm", "tasks": tasks,
            "avg": float(np.mean([v.mean() for v in scores.values()])), "n_samples": N * len(scores)}


def _write_samples(folder: Path, scores: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, v in scores.items():
        (folder / f"general_{t}.jsonl").write_text("".join(
            json.dumps({"doc_id": i, "doc_index": i, "acc": s, "acc_norm": s}) + "\n" for i, s in enumerate(v)))


def write_run(sweep: Path, variant: str, seed: int, data_seed: int | None, final: dict[str, np.ndarray],
              step10: dict[str, np.ndarray], step10_samples: bool = True, lr: float = 3e-3,
              paper_table: str | None = "table2") -> None:
    """A finished run: evaluate artifact (final and step-10 results with their samples), ledger, summary.json and
    config.yaml (whose runtime settings differ per seed, as a rerun on another machine would)."""
    key = f"{variant}-s{seed}-d{data_seed}-lr{lr}"
    evaluate = sweep.parent.parent / "artifacts" / "evaluate" / key
    _write_samples(evaluate / "samples" / "final", final)
    (evaluate / "by_step").mkdir(parents=True)
    (evaluate / "by_step" / "step-00000010.json").write_text(json.dumps(_results(step10, 10, "step-00000010")))
    if step10_samples:
        _write_samples(evaluate / "samples" / "step-00000010", step10)
    last = {**_results(final, FINAL, "step-00000020"), "samples_dir": str(evaluate / "samples" / "final")}
    (evaluate / "by_step" / "step-00000020.json").write_text(json.dumps(last))  # final's step: final's samples
    run_dir = sweep / f"{variant}-tiny-{key}"
    run_dir.mkdir(parents=True)
    ledger = Ledger(run_dir)
    ledger.add(StageEntry("pretrain", "p" + key, str(evaluate.parent / key), False, {"steps": FINAL, "tokens": 5120},
                          {"train": 1e12}))
    ledger.add(StageEntry("evaluate", key, str(evaluate), False, {"tasks": 2},
                          extra={"results": _results(final, FINAL, "final")}))
    labels = {"experiment": "seeds", "sweep": sweep.name, "variant": variant, "model": "tiny", "corpus": "sample_web",
              "run_dir": str(run_dir), "paper_table": paper_table, "report_row": f"tlm_s/{variant}"}
    (run_dir / SUMMARY).write_text(json.dumps(experiment_summary(ledger, labels)))
    config = {"name": "seeds", "sweep": None, "refine": {"variant": variant}, "model": {"preset": "tiny"},
              "train": {"seed": seed, "data_seed": data_seed, "lr": lr, "log_interval": 1 + seed},
              "cluster": {"devices": seed}, "paths": {"runs_dir": str(sweep.parent)}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def seed_sweep(tmp_path) -> tuple[Path, dict]:
    """raw and prox over three seeds; prox with another lr once (seed 1), its step-10 samples missing."""
    sweep = tmp_path / "runs" / "seeds"
    truth: dict = {"raw": {}, "prox": {}}
    for i, (seed, data_seed) in enumerate(SEEDS):
        raw, raw10 = raw_scores(i), raw_scores(i, level=0.30)
        write_run(sweep, "raw", seed, data_seed, raw, raw10)
        write_run(sweep, "prox", seed, data_seed, flipped(raw, FLIPPED), flipped(raw10, FLIPPED))
        truth["raw"][i], truth["prox"][i] = (raw, raw10), (flipped(raw, FLIPPED), flipped(raw10, FLIPPED))
    write_run(sweep, "prox", 1, None, flipped(raw_scores(0), 4), raw_scores(0, 0.3), step10_samples=False, lr=1e-3,
              paper_table=None)
    return sweep, truth


def _avg(scores: dict[str, np.ndarray]) -> float:
    return float(np.mean([v.mean() for v in scores.values()]))


def test_seeds_are_one_row_with_mean_sd_and_a_within_seed_paired_test(seed_sweep):
    sweep, truth = seed_sweep
    rows = aggregate_seeds(load_summaries(sweep))
    assert len(rows) == 3  # raw ×3, prox ×3, prox at another lr alone
    raw, prox = (next(r for r in rows if r["variant"] == v and r.get(SEED_RUNS)) for v in ("raw", "prox"))
    other = next(r for r in rows if not r.get(SEED_RUNS))
    assert list(raw[SEED_RUNS]) == ["1", "1/data 3", "2"]
    per_seed = [_avg(truth["raw"][i][0]) for i in range(3)]
    assert raw["eval/avg"] == pytest.approx(np.mean(per_seed))

    stats = SweepStats(rows, ReportConfig())
    acc = stats.accuracy(raw)[AVG]
    assert acc.seeds == 3 and acc.value == pytest.approx(np.mean(per_seed))
    assert acc.sd == pytest.approx(np.std(per_seed, ddof=1))  # the seeds' spread: their levels 3 points apart
    assert acc.sd > 3 * acc.se  # ... far beyond the item noise of the mean

    delta = stats.versus_baseline(prox)
    assert stats.baseline(prox) is raw
    assert delta[AVG].value == pytest.approx(FLIPPED / N) and delta[AVG].seeds == 3
    assert delta[AVG].sd == pytest.approx(0.0, abs=1e-12) and delta[AVG].significant
    assert delta[AVG].n == 3 * N * len(TASKS)
    # Pairing across seeds instead (prox's seed i against raw's seed i+1) keeps Δ but loses the pairing: wider.
    a, b = stats.scores["+".join(m["run_dir"] for m in prox[SEED_RUNS].values())], stats._seed_scores(raw)
    labels = list(a)
    crossed = paired(merge_seeds(a), merge_seeds({labels[i]: b[labels[(i + 1) % 3]] for i in range(3)}),
                     ReportConfig())
    assert crossed[AVG].value == pytest.approx(delta[AVG].value)
    assert crossed[AVG].half_width > 2 * delta[AVG].half_width

    # A single-seed run against the three-seed baseline: paired with the baseline's run of its own seed only.
    alone = stats.versus_baseline(other)
    assert alone[AVG].seeds == 1 and alone[AVG].sd is None and alone[AVG].value == pytest.approx(4 / N)


def test_each_checkpoint_gets_its_own_interval_from_its_own_samples(seed_sweep):
    sweep, truth = seed_sweep
    rows = aggregate_seeds(load_summaries(sweep))
    raw = next(r for r in rows if r["variant"] == "raw")
    other = next(r for r in rows if not r.get(SEED_RUNS))
    stats = SweepStats(rows, ReportConfig())
    by_step = stats.avg_by_step(raw)
    step10 = [_avg(truth["raw"][i][1]) for i in range(3)]
    assert by_step[10].value == pytest.approx(np.mean(step10)) and by_step[10].seeds == 3
    assert by_step[FINAL].value == pytest.approx(stats.accuracy(raw)[AVG].value)
    assert by_step[10].value < by_step[FINAL].value - 0.1  # step 10's own items, not the final checkpoint's
    assert [p["step"] for p in raw["eval_by_step"]] == [10, FINAL]
    assert raw["eval_by_step"][0]["avg"] == pytest.approx(np.mean(step10))
    assert sorted(stats.avg_by_step(other)) == [FINAL]  # no samples at step 10: no interval there, none borrowed
    # One seed's step-10 samples gone: the mean over seeds has no interval there (not one over the other two seeds).
    evaluate = Path(json.loads((Path(raw[SEED_RUNS]["2"]["run_dir"]) / "ledger.json").read_text())
                    ["stages"]["evaluate"]["out_dir"])
    shutil.rmtree(evaluate / "samples" / "step-00000010")
    assert sorted(SweepStats(rows, ReportConfig()).avg_by_step(raw)) == [FINAL]


def test_report_of_a_sweep_over_seeds(seed_sweep):
    sweep, _ = seed_sweep
    out = build_report(sweep)
    main = (out / "table.md").read_text()
    raw_line = next(line for line in main.splitlines() if line.startswith("| raw | tiny |"))
    assert raw_line.count("(3 seeds)") == len(TASKS) + 1
    other_line = next(line for line in main.splitlines() if line.startswith("| prox | tiny |") and "seeds" not in line)
    assert "±" in other_line  # the single run keeps its standard errors
    assert "raw (tiny): mean over seeds 1, 1/data 3, 2 (runs raw-tiny-raw-s1-dNone" in main
    assert "a row over k seeds shows the mean over its seeds ± their standard deviation" in main

    with open(out / "table.csv") as f:
        table = list(csv.reader(f))
    assert table[0][-2:] == ["seeds", "avg sd"] and sorted(r[-2] for r in table[1:]) == ["1", "3", "3"]
    with open(out / "seeds.csv") as f:
        seeds = list(csv.DictReader(f))
    assert len(seeds) == 6 and {r["seed"] for r in seeds} == {"1", "2", "1/data 3"}

    comparisons = (out / "comparisons.md").read_text()
    assert "| prox | tiny | raw (3 seeds) | +3.0* [" in comparisons
    with open(out / "comparisons.csv") as f:
        long = list(csv.DictReader(f))
    assert {r["seeds"] for r in long} == {"3", "1"}

    paper = (out / "table2.md").read_text()  # the paper's layout: one row per seed group, its Δ paired by seed
    cells = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in paper.splitlines()
             if line.startswith("| ProX-D+C")}  # (label with its refiner, source) -> the line
    ours = [line for (label, source), line in cells.items() if source == "ours"]
    delta = [line for (label, source), line in cells.items() if source == "Δ Raw"]
    assert len(ours) == 1 and ours[0].count("(3 seeds)") == 3  # ARC-E, PIQA, AVG
    assert len(delta) == 1 and delta[0].count("+3.0*") == 3

    by_step = (out / "accuracy_by_step.md").read_text()
    assert "± the standard error of that checkpoint's AVG" in by_step
    raw_steps = next(line for line in by_step.splitlines() if line.startswith("| Raw | ours |"))
    assert "(3 seeds)" in raw_steps and raw_steps.count("±") == 2
    with open(out / "accuracy_by_step.csv") as f:
        steps = list(csv.DictReader(f))
    assert [r["seed"] for r in steps if r["row"] == "Raw"] == ["mean", "mean", "1", "1", "1/data 3", "1/data 3",
                                                                "2", "2"]
    assert (out / "accuracy_by_step.png").stat().st_size > 10_000


def test_composed_configs_are_seeds_of_one_row_only_when_outputs_agree():
    """On configs as `proxlab run` saves them: seeds, runtime settings and the cluster do not split a row; a hashed
    setting (the learning rate, the eval limit) does."""
    from omegaconf import OmegaConf, open_dict

    from proxlab.report.stats import seed_group
    from proxlab.runner.compose import compose_config

    def group(*overrides: str) -> str:
        cfg = compose_config(["exp=smoke", "refine=prox", *overrides])
        with open_dict(cfg):
            del cfg["hydra"]  # run.py's config.yaml is written inside the Hydra job, without it
        return seed_group(yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True)))

    base = group("train.seed=1")
    assert group("train.seed=2", "train.log_interval=3", "cluster.devices=2", "refine.doc.threads=3") == base
    assert group("train.data_seed=4") == base
    assert group("train.lr=1e-3") != base and group("eval.limit=3") != base
