"""Uncertainty of the report's accuracies, from the per-sample results the evaluate stage writes
(`samples/<checkpoint>/<lm-eval task>.jsonl`, one line per item with its `acc` and `acc_norm`).

Every number is a bootstrap over items (not lm-eval's stderr: evaluation runs with `bootstrap_iters=0`, and the
composites need the items anyway), with `report.bootstrap_resamples` resamples (2000) from `report.bootstrap_seed`:

- a task's accuracy: the mean of its items' scores (its reported metric, acc_norm or acc); MMLU, like the paper, is
  the unweighted mean of its 57 subjects, so its items are resampled within each subject;
- AVG: the unweighted mean over tasks, each task's items resampled within the task (strata are independent);
- a paired difference (variant − baseline): the mean over the items both runs evaluated of the per-item difference,
  resampled item by item (the same items in both), within subjects and tasks as above.

The interval is the percentile interval at `report.confidence_level` (95%); the standard error is the bootstrap
distribution's standard deviation. A difference's two-sided p-value is 2·min(P*(Δ ≤ 0), P*(Δ ≥ 0)) over the
resamples, so p < 0.05 where the 95% interval excludes 0 (up to the resolution 1/resamples).

Resampling n items with replacement and averaging draws each distinct score value a Multinomial(n, frequencies)
number of times, so the bootstrap means are drawn exactly that way: O(resamples × distinct values) per stratum instead
of O(resamples × n), for any n. Each stratum has its own generator, seeded from the seed and its name, so a task's
interval does not move when another task joins the report.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from proxlab.core.config import ReportConfig
from proxlab.runner.ledger import BY_STEP, LEDGER

AVG = "avg"

# task -> stratum (MMLU subject, or the task itself) -> (item ids, scores): both 1-D arrays in the same order
RunScores = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Interval:
    """An estimate (a fraction, or a difference of fractions) with its bootstrap standard error and interval."""

    value: float
    se: float
    low: float
    high: float
    n: int  # items behind it (paired: items both runs evaluated)
    p: float | None = None  # two-sided p-value of a difference; None for an accuracy

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (meaningful for differences)."""
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


# -- the bootstrap (pure numpy) ----------------------------------------------------------------------------------------

def resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `resamples` bootstrap resamples of `values` (drawn as multinomial counts of its distinct values)."""
    values = np.asarray(values, dtype=float)
    distinct, counts = np.unique(values, return_counts=True)
    draws = rng.multinomial(len(values), counts / len(values), size=resamples)
    return draws @ distinct / len(values)


def stratum_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def composite(strata: Mapping[str, np.ndarray], resamples: int, seed: int, prefix: str = ""
              ) -> tuple[float, np.ndarray]:
    """(point estimate, bootstrap means) of the unweighted mean over strata of each stratum's mean, each stratum's
    items resampled on their own."""
    names = sorted(k for k, v in strata.items() if len(v))
    point = float(np.mean([np.mean(strata[k]) for k in names]))
    draws = np.mean([resampled_means(strata[k], resamples, stratum_rng(seed, f"{prefix}{k}")) for k in names], axis=0)
    return point, draws


def interval(point: float, draws: np.ndarray, n: int, level: float, difference: bool = False) -> Interval:
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    p = None
    if difference:
        p = float(min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))))
    return Interval(point, float(np.std(draws, ddof=1)), float(low), float(high), n, p)


def _estimates(per_task: Mapping[str, Mapping[str, np.ndarray]], options: ReportConfig, difference: bool
               ) -> dict[str, Interval]:
    """Each task's interval and AVG's (the mean over the tasks given), from per-task strata of item values."""
    per_task = {t: s for t, s in per_task.items() if any(len(v) for v in s.values())}
    out: dict[str, Interval] = {}
    draws = []
    points = []
    for task in sorted(per_task):
        point, task_draws = composite(per_task[task], options.bootstrap_resamples, options.bootstrap_seed, f"{task}/")
        n = sum(len(v) for v in per_task[task].values())
        out[task] = interval(point, task_draws, n, options.confidence_level, difference)
        draws.append(task_draws)
        points.append(point)
    if draws:
        out[AVG] = interval(float(np.mean(points)), np.mean(draws, axis=0), sum(i.n for i in out.values()),
                            options.confidence_level, difference)
    return out


def accuracy(scores: RunScores, options: ReportConfig, tasks: list[str] | None = None) -> dict[str, Interval]:
    """Per task and for AVG (over `tasks`, default all): accuracy with its bootstrap SE and interval."""
    chosen = {t: {k: v for k, (_, v) in scores[t].items()} for t in (tasks or scores) if t in scores}
    return _estimates(chosen, options, difference=False)


def paired(a: RunScores, b: RunScores, options: ReportConfig, tasks: list[str] | None = None) -> dict[str, Interval]:
    """Per task and for AVG (over the tasks both have, among `tasks`): a − b over the items both evaluated, with a
    paired bootstrap interval and p-value."""
    diffs: dict[str, dict[str, np.ndarray]] = {}
    for task in (tasks or a):
        if task not in a or task not in b:
            continue
        for stratum, (ids_a, va) in a[task].items():
            if stratum not in b[task]:
                continue
            ids_b, vb = b[task][stratum]
            _, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
            diffs.setdefault(task, {})[stratum] = va[ia] - vb[ib]
    return _estimates(diffs, options, difference=True)


# -- reading the per-sample results of a run ---------------------------------------------------------------------------

def check_options(options: ReportConfig) -> None:
    if not isinstance(options.bootstrap_resamples, int) or options.bootstrap_resamples < 100:
        raise ValueError(f"report.bootstrap_resamples={options.bootstrap_resamples!r}: need an integer ≥ 100")
    if not 0 < options.confidence_level < 1:
        raise ValueError(f"report.confidence_level={options.confidence_level!r}: need a fraction in (0, 1)")


def _read_file(path: Path, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    ids, values = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{line_no}: not a JSON line ({e})") from None
            if rec.get(metric) is None:
                return None  # the task has no such metric per item (e.g. acc_norm of a generation task)
            ids.append(rec["doc_index"] if rec.get("doc_index") is not None else rec["doc_id"])
            values.append(float(rec[metric]))
    return np.asarray(ids, dtype=np.int64), np.asarray(values, dtype=float)


def _task_file(stems: list[str], suffix: str) -> str | None:
    """The sample file of an lm-eval task `<suite dir>_<suffix>`: the shortest stem ending in `_<suffix>`."""
    found = [s for s in stems if s.endswith(f"_{suffix}")]
    return min(found, key=len) if found else None


def read_scores(results: Mapping[str, Any], samples_dir: Path) -> RunScores:
    """Per task (its reported metric) and stratum (MMLU's subjects, as `results['subtasks']` names them): item ids and
    scores from one checkpoint's sample files. Tasks without sample files are left out."""
    if not samples_dir.is_dir():
        return {}
    stems = sorted(p.stem for p in samples_dir.glob("*.jsonl"))
    out: RunScores = {}
    for task, entry in (results.get("tasks") or {}).items():
        metric = entry.get("metric") or results.get("metric") or "acc_norm"
        subjects = (results.get("subtasks") or {}).get(task)
        wanted = {s: f"{task}_{s}" for s in subjects} if subjects else {task: task}
        strata = {}
        for stratum, suffix in wanted.items():
            stem = _task_file(stems, suffix)
            read = _read_file(samples_dir / f"{stem}.jsonl", metric) if stem else None
            if read is None:
                strata = {}
                break
            strata[stratum] = read
        if strata:
            out[task] = strata
    return out


def _evaluate_entry(summary: Mapping[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    run_dir = summary.get("run_dir")
    try:
        ledger = json.loads((Path(run_dir) / LEDGER).read_text()) if run_dir else {}
    except (OSError, ValueError):
        return None
    evaluate = (ledger.get("stages") or {}).get("evaluate")
    if not evaluate:
        return None
    return Path(evaluate["out_dir"]), (evaluate.get("extra") or {}).get("results") or {}


def _samples_dir(out_dir: Path, results: Mapping[str, Any]) -> Path:
    """The checkpoint's sample folder inside the evaluate artifact (where it is now, wherever it was written)."""
    recorded = results.get("samples_dir")
    return out_dir / "samples" / (Path(recorded).name if recorded else results.get("checkpoint") or "final")


def final_scores(summary: Mapping[str, Any]) -> RunScores:
    entry = _evaluate_entry(summary)
    return read_scores(entry[1], _samples_dir(*entry)) if entry else {}


def step_scores(summary: Mapping[str, Any]) -> dict[int, RunScores]:
    """{step: scores} of every intermediate checkpoint the evaluate stage wrote (`by_step/*.json`)."""
    entry = _evaluate_entry(summary)
    if entry is None:
        return {}
    out = {}
    for path in sorted((entry[0] / "by_step").glob("*.json")):
        res = json.loads(path.read_text())
        if res.get("step") is not None:
            out[res["step"]] = read_scores(res, _samples_dir(entry[0], res))
    return out


# -- a sweep's statistics ----------------------------------------------------------------------------------------------

def _fewshot_key(summary: Mapping[str, Any]) -> tuple:
    entry = _evaluate_entry(summary)
    results = entry[1] if entry else {}
    return results.get("suite"), results.get("num_fewshot")


@dataclass
class SweepStats:
    """The sweep's per-sample scores, read once, and the intervals the report's parts ask for (cached)."""

    summaries: list[dict[str, Any]]
    options: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        check_options(self.options)
        self.scores = {s["run_dir"]: final_scores(s) for s in self.summaries}
        self._cache: dict[tuple, dict[str, Interval]] = {}

    def has_samples(self) -> bool:
        return any(self.scores.values())

    def accuracy(self, summary: Mapping[str, Any], tasks: list[str] | None = None) -> dict[str, Interval]:
        key = ("acc", summary["run_dir"], tuple(tasks or ()))
        if key not in self._cache:
            self._cache[key] = accuracy(self.scores.get(summary["run_dir"], {}), self.options, tasks)
        return self._cache[key]

    def paired(self, a: Mapping[str, Any], b: Mapping[str, Any], tasks: list[str] | None = None
               ) -> dict[str, Interval]:
        key = ("paired", a["run_dir"], b["run_dir"], tuple(tasks or ()))
        if key not in self._cache:
            self._cache[key] = paired(self.scores.get(a["run_dir"], {}), self.scores.get(b["run_dir"], {}),
                                      self.options, tasks)
        return self._cache[key]

    def avg_by_step(self, summary: Mapping[str, Any]) -> dict[int, Interval]:
        """{step: AVG's interval} of the run's intermediate checkpoints that have samples for every task."""
        out = {}
        for step, scores in step_scores(summary).items():
            ivs = accuracy(scores, self.options)
            point = next((p for p in summary.get(BY_STEP, []) if p["step"] == step), None)
            if AVG in ivs and point is not None and all(t in ivs for t in point.get("tasks", {})):
                out[step] = ivs[AVG]
        return out

    def baseline(self, summary: Mapping[str, Any]) -> dict[str, Any] | None:
        """The run of `report.baseline_variant` with the same model, corpus, training tokens and evaluation (suite,
        few-shot); None for a baseline run itself or when the sweep has none."""
        if summary.get("variant") == self.options.baseline_variant:
            return None
        match = ("model", "corpus", "tokens/train")
        for s in self.summaries:
            if (s.get("variant") == self.options.baseline_variant and all(s.get(k) == summary.get(k) for k in match)
                    and _fewshot_key(s) == _fewshot_key(summary)):
                return s
        return None

    def versus_baseline(self, summary: Mapping[str, Any], tasks: list[str] | None = None) -> dict[str, Interval]:
        base = self.baseline(summary)
        return {} if base is None else self.paired(summary, base, tasks)

    def describe(self) -> str:
        """How the intervals were computed, for the footnotes."""
        o = self.options
        return (f"bootstrap over items ({o.bootstrap_resamples} resamples, seed {o.bootstrap_seed}; MMLU resampled "
                f"within subjects, AVG within tasks), {100 * o.confidence_level:g}% percentile intervals")


def pm(value: float | None, iv: Interval | None) -> str:
    """`43.5 ± 0.9` (percent, standard error), or the value alone without an interval."""
    if value is None:
        return "–"
    return f"{100 * value:.1f}" + ("" if iv is None else f" ± {100 * iv.se:.1f}")


def signed(iv: Interval) -> str:
    """`+1.2*`: a difference in points, starred when its interval excludes 0."""
    return f"{100 * iv.value:+.1f}" + ("*" if iv.significant else "")


def span(iv: Interval) -> str:
    return f"[{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]"


def p_value(iv: Interval, resamples: int) -> str:
    return f"<{1 / resamples:.0e}" if iv.p == 0 else f"{iv.p:.3f}"
