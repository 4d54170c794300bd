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

Seeds: runs that differ only by `train.seed` / `train.data_seed` (their saved config.yaml equal otherwise) are one
report row (`aggregate_seeds`): its accuracies are the means over the seeds, shown `mean ± sd across seeds (k seeds)`.
Its interval and a paired difference treat the seeds as fixed strata: items are resampled within each seed (a task's
strata are (seed, subject)), and a difference pairs each item with the same item of the baseline's run of the same
seed. The seeds themselves are not resampled: with the 2 to 5 seeds a sweep affords, a bootstrap over seeds has almost
no distinct resamples; the sd across seeds is printed beside it instead, so seed-to-seed spread stays visible.

Resampling n items with replacement and averaging draws each distinct score value a Multinomial(n, frequencies)
number of times, so the bootstrap means are drawn exactly that way: O(resamples × distinct values) per stratum instead
of O(resamples × n), for any n. Each stratum has its own generator, seeded from the seed and its name, so a task's
interval does not move when another task joins the report.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from proxlab.core.config import ExperimentConfig, ReportConfig, content_fields, without_optional
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
    n: int  # items behind it (paired: items both runs evaluated), over all seeds
    p: float | None = None  # two-sided p-value of a difference; None for an accuracy
    seeds: int = 1  # runs (seeds) it averages
    sd: float | None = None  # standard deviation of the per-seed values (seeds > 1)

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


def _nonempty(per_task: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Mapping[str, np.ndarray]]:
    return {t: st for t, st in per_task.items() if any(len(v) for v in st.values())}


def _estimates(per_task: Mapping[str, Mapping[str, np.ndarray]], options: ReportConfig, difference: bool
               ) -> dict[str, Interval]:
    """Each task's interval and AVG's (the mean over the tasks given), from per-task strata of item values."""
    per_task = _nonempty(per_task)
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


def point_estimates(per_task: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, float]:
    """`_estimates`' values without the resampling: each task's unweighted mean of its strata's means, and AVG."""
    out = {t: float(np.mean([np.mean(v) for v in st.values() if len(v)]))
           for t, st in sorted(_nonempty(per_task).items())}
    if out:
        out[AVG] = float(np.mean(list(out.values())))
    return out


def _values(scores: RunScores, tasks: list[str] | None) -> dict[str, dict[str, np.ndarray]]:
    return {t: {k: v for k, (_, v) in scores[t].items()} for t in (tasks or scores) if t in scores}


def _differences(a: RunScores, b: RunScores, tasks: list[str] | None) -> dict[str, dict[str, np.ndarray]]:
    """Per task and stratum: a − b item by item, over the items (doc_index) both evaluated."""
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
    return diffs


def accuracy(scores: RunScores, options: ReportConfig, tasks: list[str] | None = None) -> dict[str, Interval]:
    """Per task and for AVG (over `tasks`, default all): accuracy with its bootstrap SE and interval."""
    return _estimates(_values(scores, tasks), options, difference=False)


def paired(a: RunScores, b: RunScores, options: ReportConfig, tasks: list[str] | None = None) -> dict[str, Interval]:
    """Per task and for AVG (over the tasks both have, among `tasks`): a − b over the items both evaluated, with a
    paired bootstrap interval and p-value."""
    return _estimates(_differences(a, b, tasks), options, difference=True)


SeedScores = dict[str, RunScores]  # seed label -> that seed's run's scores


def merge_seeds(by_seed: SeedScores) -> RunScores:
    """One run's scores from several seeds' runs: each (seed, stratum) is a stratum of its own (`<seed>|<stratum>`),
    so the composites average over seeds the per-seed values, items are resampled within their seed, and a paired
    difference matches items only within the same seed."""
    out: RunScores = {}
    for seed, scores in by_seed.items():
        for task, strata in scores.items():
            out.setdefault(task, {}).update({f"{seed}|{k}": v for k, v in strata.items()})
    return out


def seeds_accuracy(by_seed: SeedScores, options: ReportConfig, tasks: list[str] | None = None
                   ) -> dict[str, Interval]:
    """`accuracy` over one or more seeds: the mean over seeds, items resampled within each seed, with the sd of the
    per-seed values."""
    if len(by_seed) == 1:
        return accuracy(next(iter(by_seed.values())), options, tasks)
    tasks = _in_every(by_seed.values(), tasks)
    ivs = accuracy(merge_seeds(by_seed), options, tasks) if tasks else {}
    return _with_spread(ivs, [point_estimates(_values(sc, tasks)) for sc in by_seed.values()])


def seeds_paired(a: SeedScores, b: SeedScores, options: ReportConfig, tasks: list[str] | None = None
                 ) -> dict[str, Interval]:
    """`paired` over seeds: each seed of `a` against the same seed of `b` (a run alone against a run alone whatever
    their seeds, as before seeds existed); the seeds neither shares are left out, so none when they share none."""
    if len(a) == 1 and len(b) == 1:
        return paired(next(iter(a.values())), next(iter(b.values())), options, tasks)
    common = [seed for seed in a if seed in b]
    if len(common) <= 1:
        return {} if not common else paired(a[common[0]], b[common[0]], options, tasks)
    tasks = _in_every([a[k] for k in common] + [b[k] for k in common], tasks)
    ivs = paired(merge_seeds({k: a[k] for k in common}), merge_seeds({k: b[k] for k in common}), options, tasks) \
        if tasks else {}
    return _with_spread(ivs, [point_estimates(_differences(a[k], b[k], tasks)) for k in common])


def _in_every(runs: Any, tasks: list[str] | None) -> list[str]:
    """The tasks (among `tasks`, default all) every one of the runs has samples of: a mean over seeds is over all of
    its seeds or not given."""
    runs = list(runs)
    have = set.intersection(*[set(sc) for sc in runs]) if runs else set()
    return [t for t in (tasks or sorted(have)) if t in have]


def _with_spread(ivs: dict[str, Interval], per_seed: list[dict[str, float]]) -> dict[str, Interval]:
    """The intervals, each with how many seeds have it and the sd of their values."""
    out = {}
    for key, iv in ivs.items():
        values = [p[key] for p in per_seed if key in p]
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
        out[key] = dataclasses.replace(iv, seeds=len(values), sd=sd)
    return out


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


# -- seeds: runs that differ only by train.seed / train.data_seed are one row ----------------------------------------

SEED_RUNS = "seed_runs"  # an aggregated row's key: {seed label: the summary of that seed's run}
SEED_KEYS = ("seed", "data_seed")  # in the `train` section
# Sections of the saved config that change no output: runs differing only here are the same experiment.
NOT_OUTPUTS = ("cluster", "logger", "paths", "report", "force", "stop_after", "dry_run", "notes", "hydra")
CONFIG_FILE = "config.yaml"  # a run directory's resolved config (runner.run)


def run_config(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's saved, resolved config (`<run_dir>/config.yaml`); None without one."""
    if not summary.get("run_dir"):
        return None
    path = Path(summary["run_dir"]) / CONFIG_FILE
    try:
        return _read_config(str(path), path.stat().st_mtime_ns)
    except OSError:
        return None


@functools.lru_cache(maxsize=1024)
def _read_config(path: str, mtime_ns: int) -> dict[str, Any] | None:  # mtime: a rewritten file is read again
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return cfg if isinstance(cfg, dict) else None


def seed_label(seed: Any, data_seed: Any = None) -> str:
    """`1`, or `1/data 7` when the data order has its own seed."""
    return str(seed) if data_seed is None else f"{seed}/data {data_seed}"


def _seed_sort(label: str) -> tuple:
    return tuple(int(x) if x.lstrip("-").isdigit() else x for x in label.replace("/data ", " ").split())


def _outputs_only(values: Any, schema: Any) -> Any:
    """The settings of a config section that change outputs: its schema's hashed fields, recursively (keys the schema
    does not know are kept: an unknown key may matter)."""
    if not isinstance(values, dict) or not dataclasses.is_dataclass(schema):
        return values
    types = typing.get_type_hints(schema)
    hashed = set(content_fields(schema))
    return {k: _outputs_only(v, without_optional(types.get(k))) for k, v in values.items() if k in hashed or k not in types}


def seed_group(cfg: Mapping[str, Any]) -> str:
    """What runs that differ only by seed have in common: every output-changing setting of the saved config except
    train.seed and train.data_seed."""
    kept = _outputs_only({k: v for k, v in cfg.items() if k not in NOT_OUTPUTS}, ExperimentConfig)
    kept["train"] = {k: v for k, v in (kept.get("train") or {}).items() if k not in SEED_KEYS}
    return json.dumps(kept, sort_keys=True, default=str)


def _mean_of(values: list[Any]) -> Any:
    """The mean of numbers that differ; the value itself when they agree, or when not all are numbers."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numbers or all(v == values[0] for v in values):
        return values[0]
    return float(np.mean(values))


def _mean_curve(members: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The accuracy-by-step curve averaged over seeds, at the steps every seed evaluated."""
    curves = [{p["step"]: p for p in m.get(BY_STEP) or []} for m in members]
    steps = sorted(set.intersection(*[set(c) for c in curves])) if curves else []
    out = []
    for step in steps:
        points = [c[step] for c in curves]
        tasks = [t for t in points[0].get("tasks", {}) if all(p.get("tasks", {}).get(t) is not None for p in points)]
        out.append({**{k: _mean_of([p.get(k) for p in points]) for k in points[0] if k != "tasks"},
                    "tasks": {t: float(np.mean([p["tasks"][t] for p in points])) for t in tasks}})
    return out


def seed_row(members: list[dict[str, Any]]) -> dict[str, Any]:
    """One report row for runs that differ only by seed: the first seed's labels and paths (its run directory names
    the row), each number the mean over the seeds where they differ (accuracies), the accuracy curve averaged, and
    the seeds' own summaries under SEED_RUNS."""
    by_seed = {seed_of(m): m for m in members}
    labels = sorted(by_seed, key=_seed_sort)
    ordered = [by_seed[label] for label in labels]
    row = {k: _mean_of([m.get(k) for m in ordered]) for k in ordered[0] if k != BY_STEP}
    if any(m.get(BY_STEP) for m in ordered):
        row[BY_STEP] = _mean_curve(ordered)
    row[SEED_RUNS] = {label: by_seed[label] for label in labels}
    return row


def seed_of(summary: Mapping[str, Any]) -> str | None:
    """The run's seed label from its saved config (`train.seed`, `train.data_seed`); None without a saved config."""
    train = (run_config(summary) or {}).get("train") or {}
    return seed_label(train["seed"], train.get("data_seed")) if "seed" in train else None


def aggregate_seeds(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's rows: runs whose saved configs differ only by train.seed / train.data_seed become one row
    (`seed_row`), in the place of the first of them; any other run stays a row of its own, unchanged. Runs with the
    same config and the same seed (the same experiment on other input files, which re-key its stages) are not seeds
    of each other: they stay apart."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in summaries:
        cfg = run_config(s)
        key = seed_group(cfg) if cfg is not None and seed_of(s) is not None else f"run:{s.get('run_dir')}"
        groups.setdefault(key, []).append(s)
    out: list[dict[str, Any]] = []
    for members in groups.values():
        distinct = len({seed_of(m) for m in members}) == len(members)
        out += [seed_row(members)] if len(members) > 1 and distinct else members
    return out


def seed_runs(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{seed label: summary} of a row's runs: its seeds, or the run itself (under its seed, "" when unknown)."""
    return summary.get(SEED_RUNS) or {seed_of(summary) or "": dict(summary)}


def seeds_note(summary: Mapping[str, Any]) -> str:
    """`seeds 1, 2, 3 (runs a, b, c)` for a row over several seeds; "" for a run alone."""
    runs = summary.get(SEED_RUNS)
    if not runs:
        return ""
    return (f"seeds {', '.join(runs)} (runs {', '.join(Path(m['run_dir']).name for m in runs.values())})")


# -- a sweep's statistics ----------------------------------------------------------------------------------------------

def _fewshot_key(summary: Mapping[str, Any]) -> tuple:
    entry = _evaluate_entry(summary)
    results = entry[1] if entry else {}
    return results.get("suite"), results.get("num_fewshot")


def _row_key(summary: Mapping[str, Any]) -> str:
    """A row's identity: its run directory, or its seeds' (a row over seeds carries its first seed's run_dir)."""
    runs = summary.get(SEED_RUNS)
    return "+".join(m["run_dir"] for m in runs.values()) if runs else summary["run_dir"]


@dataclass
class SweepStats:
    """The sweep's per-sample scores, read once, and the intervals the report's parts ask for (cached). `summaries`
    are the report's rows (`aggregate_seeds`): a row over several seeds is scored from each seed's run."""

    summaries: list[dict[str, Any]]
    options: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        check_options(self.options)
        self.scores: dict[str, SeedScores] = {
            _row_key(s): {seed: final_scores(m) for seed, m in seed_runs(s).items()} for s in self.summaries}
        self._cache: dict[tuple, dict] = {}

    def has_samples(self) -> bool:
        return any(sc for by_seed in self.scores.values() for sc in by_seed.values())

    def has_seeds(self) -> bool:
        """Some row averages several seeds."""
        return any(s.get(SEED_RUNS) for s in self.summaries)

    def _seed_scores(self, summary: Mapping[str, Any]) -> SeedScores:
        key = _row_key(summary)
        if key not in self.scores:  # a run that is not one of the rows (one seed of a row)
            self.scores[key] = {seed: final_scores(m) for seed, m in seed_runs(summary).items()}
        return self.scores[key]

    def accuracy(self, summary: Mapping[str, Any], tasks: list[str] | None = None) -> dict[str, Interval]:
        key = ("acc", _row_key(summary), tuple(tasks or ()))
        if key not in self._cache:
            self._cache[key] = seeds_accuracy(self._seed_scores(summary), self.options, tasks)
        return self._cache[key]

    def paired(self, a: Mapping[str, Any], b: Mapping[str, Any], tasks: list[str] | None = None
               ) -> dict[str, Interval]:
        key = ("paired", _row_key(a), _row_key(b), tuple(tasks or ()))
        if key not in self._cache:
            self._cache[key] = seeds_paired(self._seed_scores(a), self._seed_scores(b), self.options, tasks)
        return self._cache[key]

    def avg_by_step(self, summary: Mapping[str, Any]) -> dict[int, Interval]:
        """{step: AVG's interval} at each intermediate checkpoint whose own per-sample results (not the final
        checkpoint's) cover every task of that step's average; over a row's seeds, at the steps they all have."""
        key = ("by_step", _row_key(summary))
        if key not in self._cache:
            self._cache[key] = self._avg_by_step(summary)
        return self._cache[key]

    def _avg_by_step(self, summary: Mapping[str, Any]) -> dict[int, Interval]:
        per_seed = {seed: step_scores(m) for seed, m in seed_runs(summary).items()}
        steps = set.intersection(*[set(s) for s in per_seed.values()]) if per_seed else set()
        out = {}
        for step in sorted(steps):
            if not all(by_step[step] for by_step in per_seed.values()):  # some seed has no samples there
                continue
            ivs = seeds_accuracy({seed: by_step[step] for seed, by_step in per_seed.items()}, self.options)
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
        text = (f"bootstrap over items ({o.bootstrap_resamples} resamples, seed {o.bootstrap_seed}; MMLU resampled "
                f"within subjects, AVG within tasks), {100 * o.confidence_level:g}% percentile intervals")
        if self.has_seeds():
            text += ("; a row over k seeds shows the mean over its seeds ± their standard deviation (k seeds), and "
                     "its intervals and paired differences resample items within each seed, pairing each seed with "
                     "the baseline's run of the same seed (seeds fixed, not resampled)")
        return text


def pm(value: float | None, iv: Interval | None) -> str:
    """`43.5 ± 0.9` (percent, standard error), `43.5 ± 0.9 (3 seeds)` over seeds (± their standard deviation), or
    the value alone without an interval."""
    if value is None:
        return "–"
    if iv is not None and iv.seeds > 1 and iv.sd is not None:
        return f"{100 * value:.1f} ± {100 * iv.sd:.1f} ({iv.seeds} seeds)"
    return f"{100 * value:.1f}" + ("" if iv is None else f" ± {100 * iv.se:.1f}")


def signed(iv: Interval) -> str:
    """`+1.2*`: a difference in points, starred when its interval excludes 0."""
    return f"{100 * iv.value:+.1f}" + ("*" if iv.significant else "")


def span(iv: Interval) -> str:
    return f"[{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]"


def p_value(iv: Interval, resamples: int) -> str:
    return f"<{1 / resamples:.0e}" if iv.p == 0 else f"{iv.p:.3f}"
