"""Run a suite with lm-eval on one model and turn lm-eval's output into proxlab's results format.

``evaluate_model(model, suite_cfg, out_dir, data_dir)`` is the entry point for a CLI (``proxlab evaluate model=...
eval=general``): ``model`` is a LitGPT checkpoint dir (or pretrain output with ``final/``), a Hugging Face model dir
or hub id (offline: must be cached), or ``smollm2`` (the local SmolLM2-135M-Instruct, built on first use).

Results format (one checkpoint)::

    {"suite", "checkpoint", "step", "model", "num_fewshot", "limit", "metric",
     "tasks": {task: {"acc", "acc_norm" (None if the task has none), "n", "chance", "metric"}},
     "avg": unweighted mean over tasks of each task's reported metric,
     "skipped": {task: [missing files]}, "subtasks": {"mmlu": {subject: {...}}}, "runtime_s",
     "on_missing_task", "force_skip", "task_files",
     "data": {task: {"file", "split", "n_file", "n", "limit", "sample", "fewshot", "paper", "substitute", "note", ...}}}

A stage splits a suite into units (one task each) and merges their results with ``merge_results``: the merged dict is
the one ``run_suite`` returns for all those tasks at once. ``RequestCache`` is lm-eval's request cache for one unit,
saved request by request, with the stage's preemption check at each saved request.

``data`` records what each task scored (``proxlab.evaluate.tasks.splits.data_record``): the file relative to the data
directory, its split, the items it holds and the items scored, the sampling rule, the few-shot source, and how that
differs from the paper's data (``substitute``, empty when it is the paper's).

Accuracies are fractions in [0, 1]; ``chance`` is the expected accuracy of a uniform guess (mean of 1/#choices over
the scored docs; 0 for free-form math answers).

``suite_cfg`` / ``cfg`` is an ``EvalConfig`` (``proxlab.core.config``) or a mapping of its fields, loaded through the
schema: a key it omits takes the schema's default, a key the schema does not name fails. ``tasks`` empty = the whole
suite; ``task_limits`` ({task: n}) e.g. a smaller limit per MMLU subject; ``max_gen_toks`` overrides generation
length. How a Hugging Face model is run (``hf_impl``: ``shared`` | ``hflm``) is a parameter of ``make_lm`` and
``evaluate_model``, not an eval setting.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from proxlab.core.config import EvalConfig, load
from proxlab.core.paths import HUB_OFFLINE
from proxlab.evaluate.tasks.data import resolve_data_dir
from proxlab.evaluate.tasks.suites import SuiteDef, TaskDef, check_data, get_suite, resolve_tasks, task_config

log = logging.getLogger(__name__)

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m-instruct", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")


def set_offline_env() -> None:
    for k, v in HUB_OFFLINE.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def eval_config(cfg: EvalConfig | Mapping[str, Any] | None) -> EvalConfig:
    """The typed eval config: an ``EvalConfig`` as is; a mapping (a composed ``eval`` section, a test's dict) through
    the schema, whose defaults fill what it omits."""
    if isinstance(cfg, EvalConfig):
        return cfg
    return load(EvalConfig, dict(cfg or {}), where="eval")


# -- models -------------------------------------------------------------------------------------------------------------

def resolve_model_path(model: str | Path) -> tuple[str, str]:
    """(kind, location): kind is ``litgpt`` or ``hf``."""
    from proxlab.evaluate.lms.litgpt import is_litgpt_checkpoint

    s = str(model)
    if s in SMOLLM2_ALIASES:
        from proxlab.models.smollm2 import ensure_smollm2

        return "hf", str(ensure_smollm2())
    p = Path(s).expanduser()
    if p.exists():
        if is_litgpt_checkpoint(p):
            return "litgpt", str(p.resolve())
        if (p / "config.json").is_file():
            return "hf", str(p.resolve())
        raise FileNotFoundError(f"{p}: not a LitGPT checkpoint (lit_model.pth, or final/) nor an HF model (config.json)")
    return "hf", s  # a hub id; offline it must already be in the HF cache


def configure_threads(threads: int | None = None) -> None:
    """Set torch's intra-op threads from ``threads`` or ``$PROXLAB_EVAL_THREADS`` (unset: torch's default).

    On a small CPU shared with other jobs, 1 thread can be several times faster than 2: every OpenMP parallel region
    waits for its slowest thread, and a descheduled thread stalls each of the model's ~hundreds of ops per forward.
    """
    n = threads if threads is not None else os.environ.get("PROXLAB_EVAL_THREADS")
    if n:
        import torch

        torch.set_num_threads(int(n))


def make_lm(model: str | Path, batch_size: int = 16, device: str = "cpu", dtype: str = "float32",
            max_gen_toks: int | None = None, hf_impl: str = "shared"):
    """An lm-eval LM for ``model``: LitGPT checkpoint -> ``LitGPTLM``; otherwise a Hugging Face model through
    lm-eval's ``HFLM`` (``hf_impl="hflm"``) or its shared-context subclass (``"shared"``, default; same scores)."""
    set_offline_env()
    configure_threads()
    kind, loc = resolve_model_path(model)
    if kind == "litgpt":
        from proxlab.evaluate.lms.litgpt import LitGPTLM

        kw = {"max_gen_toks": max_gen_toks} if max_gen_toks else {}
        return LitGPTLM(loc, batch_size=int(batch_size), device=device, dtype=dtype, **kw)
    from lm_eval.models.huggingface import HFLM

    from proxlab.evaluate.lms.hf import SharedContextHFLM

    if hf_impl not in ("shared", "hflm"):
        raise ValueError(f"hf_impl must be 'shared' or 'hflm', got {hf_impl!r}")
    cls = SharedContextHFLM if hf_impl == "shared" else HFLM
    kw = {"max_gen_toks": max_gen_toks} if max_gen_toks else {}
    # add_bos_token is left to the tokenizer (HF add_special_tokens=True, as lighteval ran it)
    return cls(pretrained=loc, batch_size=int(batch_size), device=device, dtype=dtype, **kw)


# -- the request cache -------------------------------------------------------------------------------------------------

class Preempted(BaseException):
    """A preemption signal stopped the evaluation at a safe point: every finished request is in the cache. A
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` on its way up swallows it."""

    def __init__(self, signum: int | None = None):
        super().__init__(signum)
        self.signum = signum


class RequestCache:
    """lm-eval's request cache (``CachingLM``: sqlite ``<prefix>_rank<r>.db``) for one unit, saved request by request.

    ``CachingLM`` answers the requests it holds and stores the others only when the model returns them all (a whole
    task). Our models (``lms.litgpt``, ``lms.hf``, lm-eval's HFLM) also hand each finished request to
    ``cache_hook.add_partial``; this hook commits them every ``commit_s`` seconds (a commit per request would fsync tens
    of thousands of times per checkpoint), so a killed evaluation loses at most that much work. Each saved request is a
    safe point: when ``stop_requested()`` the hook commits and raises ``Preempted``.

    ``cached``: the entries the cache held when lm-eval opened it, i.e. the requests this attempt did not compute;
    ``computed``: the requests this attempt computed.
    """

    def __init__(self, prefix: Path, stop_requested: Callable[[], bool] = lambda: False, commit_s: float = 5.0):
        self.prefix = Path(prefix)
        self.stop_requested = stop_requested
        self.commit_s = float(commit_s)
        self.cached: int | None = None
        self.computed = 0
        self.dbdict = None  # the open cache (CacheHook's name for it)
        self._opened: list[Any] = []
        self._last_commit = time.monotonic()

    def attach(self, lm) -> None:
        """Make ``lm`` report its finished requests here: lm-eval's ``CachingLM`` gives the model its hook through
        ``lm.set_cache_hook``; this instance attribute hands it ours, on the database that ``CachingLM`` opened."""
        from lm_eval.api.model import LM

        lm.set_cache_hook = lambda hook: LM.set_cache_hook(lm, self._adopt(hook.dbdict))

    def detach(self, lm) -> None:
        from lm_eval.api.model import CacheHook

        lm.__dict__.pop("set_cache_hook", None)
        lm.set_cache_hook(CacheHook(None))
        for db in self._opened:
            db.close()
        self._opened.clear()
        self.dbdict = None

    def _adopt(self, dbdict) -> "RequestCache":
        dbdict.autocommit = False  # we commit (see above); CachingLM commits after each request type too
        self.dbdict = dbdict
        self._opened.append(dbdict)
        self._merge_other_ranks()
        if self.cached is None:
            self.cached = len(dbdict)
        return self

    def _merge_other_ranks(self) -> None:
        """lm-eval names the file after the process's local rank: a unit that a previous attempt ran on another rank
        left its requests under that rank's name."""
        from sqlitedict import SqliteDict

        mine = Path(self.dbdict.filename)
        for other in sorted(mine.parent.glob(f"{glob.escape(self.prefix.name)}_rank*.db")):
            if other == mine:
                continue
            with SqliteDict(str(other), flag="r") as old:
                for key, value in old.items():
                    self.dbdict[key] = value
            self.dbdict.commit()
            other.unlink()

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        """CacheHook's method: save one finished request, commit when due, stop here if a signal asked to."""
        from lm_eval.api.model import hash_args

        if self.dbdict is None:
            return
        self.dbdict[hash_args(attr, req)] = res
        self.computed += 1
        stop, now = self.stop_requested(), time.monotonic()
        if stop or now - self._last_commit >= self.commit_s:
            self.dbdict.commit()
            self._last_commit = now
        if stop:
            raise Preempted()


# -- running ------------------------------------------------------------------------------------------------------------

def _chance(task: TaskDef, samples: list[dict[str, Any]]) -> float:
    if task.kind == "gen":
        from proxlab.evaluate.tasks.math_docs import chance

        return chance(task.name)
    if not samples:
        return 0.0
    return round(sum(1.0 / len(s["doc"]["choices"]) for s in samples) / len(samples), 6)


def _metric(res: dict[str, Any], name: str) -> float | None:
    v = res.get(f"{name},none")
    return None if v is None or v == "N/A" else float(v)


def _sample_record(sample: dict[str, Any], task: TaskDef) -> dict[str, Any]:
    doc = dict(sample.get("doc", {}))
    rec: dict[str, Any] = {"doc_id": sample.get("doc_id"), "doc_index": doc.get("doc_index")}
    args = sample.get("arguments") or []
    if task.kind == "gen":
        from proxlab.evaluate.tasks.math_docs import score_generation

        generation = (sample.get("filtered_resps") or [""])[0]
        pred, correct = score_generation(generation, doc)
        rec.update({"prompt": args[0][0] if args else None, "generation": generation, "prediction": pred,
                    "gt": doc.get("gt"), "acc": float(correct)})
    else:
        lls = [r[0] if isinstance(r, (list, tuple)) else r for r in (sample.get("filtered_resps") or [])]
        rec.update({"context": args[0][0] if args else None, "continuations": [a[1] for a in args],
                    "loglikelihoods": [float(x) for x in lls], "gold": doc.get("gold"),
                    **{m: sample[m] for m in ("acc", "acc_norm") if m in sample}})
    rec["raw"] = doc.get("raw")
    return rec


def write_samples(samples: dict[str, list[dict[str, Any]]], tasks: list[TaskDef], out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for task in tasks:
        for lm_task in task.lm_tasks:
            rows = samples.get(lm_task, [])
            total += len(rows)
            with open(out_dir / f"{lm_task}.jsonl", "w", encoding="utf-8") as f:
                for s in sorted(rows, key=lambda s: s.get("doc_id", 0)):
                    f.write(json.dumps(_sample_record(s, task), ensure_ascii=False, default=str) + "\n")
    return total


def select_tasks(suite: SuiteDef, cfg: EvalConfig, data_root: Path) -> tuple[list[TaskDef], dict[str, list[str]]]:
    """The suite's tasks ``cfg`` asks for whose data is present, and the skipped ones with their missing files."""
    tasks, skipped = check_data(suite, resolve_tasks(suite, cfg.tasks), data_root, cfg.on_missing_task,
                                cfg.task_files)
    for name, files in skipped.items():
        log.warning("eval suite %s: skipping task %s, data missing: %s", suite.name, name, ", ".join(files))
    if not tasks:
        raise RuntimeError(f"suite {suite.name!r}: no task left to run (skipped: {sorted(skipped)})")
    return tasks, skipped


def check_suite_data(cfg: EvalConfig | Mapping[str, Any], data_dir: str | Path | None = None
                     ) -> tuple[list[TaskDef], dict[str, list[str]]]:
    """The data check, before any model is loaded: ``eval.task_files`` all present (else an error naming the task, the
    key and the path), and every task's files present or skipped per ``on_missing_task``."""
    cfg = eval_config(cfg)
    return select_tasks(get_suite(cfg.suite), cfg, resolve_data_dir(data_dir))


def data_records(suite: SuiteDef, tasks: list[TaskDef], cfg: EvalConfig, data_root: Path,
                 per_task: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task: the file, split and items it scored, compared with the paper's (``tasks.splits.data_record``)."""
    from proxlab.evaluate.tasks.splits import data_record

    task_limits = cfg.task_limits or {}
    return {t.name: data_record(suite.name, t.name, task_config(suite, t, cfg.task_files),
                                limit=task_limits.get(t.name, cfg.limit), num_fewshot=cfg.num_fewshot, seed=cfg.seed,
                                data_dir=data_root, n_scored=per_task.get(t.name, {}).get("n"),
                                overridden=t.name in (cfg.task_files or {}))
            for t in tasks}


def _limit_groups(tasks: list[TaskDef], cfg: EvalConfig) -> dict[Any, list[str]]:
    """lm-eval task names grouped by their sample limit (``task_limits`` over ``limit``): one lm-eval call per group."""
    task_limits = cfg.task_limits or {}
    groups: dict[Any, list[str]] = {}
    for t in tasks:
        groups.setdefault(task_limits.get(t.name, cfg.limit), []).extend(t.lm_tasks)
    return groups


def run_lm_eval(lm, suite: SuiteDef, tasks: list[TaskDef], cfg: EvalConfig, data_root: Path,
                cache: RequestCache | None = None) -> dict[str, Any] | None:
    """lm-eval's ``results``, ``n-samples`` and ``samples`` for ``tasks``, merged over the limit groups; None on the
    non-zero ranks of lm-eval's own distribution. ``cache``: answer the requests it holds, save the others to it."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(suite.include_path), include_defaults=False,
                     metadata={"data_dir": str(data_root), "task_files": dict(cfg.task_files or {})})
    seed = cfg.seed
    gen_kwargs = {"max_gen_toks": int(cfg.max_gen_toks)} if cfg.max_gen_toks else None
    out: dict[str, Any] = {"results": {}, "n-samples": {}, "samples": {}}
    if cache is not None:
        cache.attach(lm)
    try:
        for limit, names in _limit_groups(tasks, cfg).items():
            part = lm_eval.simple_evaluate(
                model=lm, tasks=names, num_fewshot=cfg.num_fewshot, limit=limit, log_samples=True,
                task_manager=tm, bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed, apply_chat_template=False, fewshot_as_multiturn=False, gen_kwargs=gen_kwargs,
                use_cache=None if cache is None else str(cache.prefix))
            if part is None:
                return None
            for key in out:
                out[key].update(part.get(key, {}))
    finally:
        if cache is not None:
            cache.detach(lm)
    return out


def _task_entry(task: TaskDef, suite: SuiteDef, out: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One task's results entry, and its per-subtask entries when it has several lm-eval tasks (MMLU)."""
    parts = {}
    for lm_task in task.lm_tasks:
        res = out["results"][lm_task]
        parts[lm_task] = {"acc": _metric(res, "acc"), "acc_norm": _metric(res, "acc_norm"),
                          "n": int(out["n-samples"][lm_task]["effective"]),
                          "chance": _chance(task, out["samples"].get(lm_task, []))}
    subtasks = None
    if len(parts) == 1:
        entry = dict(next(iter(parts.values())))
    else:  # MMLU: unweighted mean over subjects (lighteval's mmlu:_average)
        def _mean(key: str) -> float | None:
            vals = [p[key] for p in parts.values()]
            return None if any(v is None for v in vals) else float(sum(vals) / len(vals))

        entry = {"acc": _mean("acc"), "acc_norm": _mean("acc_norm"), "n": sum(p["n"] for p in parts.values()),
                 "chance": _mean("chance")}
        subtasks = {k.replace(f"{suite.task_dir}_{task.name}_", ""): v for k, v in parts.items()}
    entry["metric"] = task.metric
    return entry, subtasks


def suite_metric(suite: SuiteDef) -> str:
    """The metric a suite reports, as written in its results."""
    if suite.name in ("general", "tiny_mc"):
        return "acc_norm"
    return "acc" if suite.name == "math" else "acc_norm|acc"


def average(per_task: Mapping[str, Mapping[str, Any]]) -> float:
    """The results' ``avg``: the unweighted mean over tasks of each task's reported metric."""
    reported = [e[e["metric"]] for e in per_task.values()]
    return float(sum(reported) / len(reported))


def run_suite(lm, cfg: EvalConfig | Mapping[str, Any], data_dir: str | Path | None = None,
              samples_dir: Path | None = None, checkpoint: str = "final", step: int | None = None,
              model_name: str | None = None, cache: RequestCache | None = None) -> dict[str, Any]:
    """Evaluate ``lm`` on the suite ``cfg`` describes (an ``EvalConfig`` or a mapping of its fields); returns the
    results dict (empty on the non-zero ranks of lm-eval's own distribution). ``cache``: see ``run_lm_eval``."""
    set_offline_env()
    cfg = eval_config(cfg)
    t0 = time.perf_counter()
    suite = get_suite(cfg.suite)
    data_root = resolve_data_dir(data_dir)
    tasks, skipped = select_tasks(suite, cfg, data_root)
    out = run_lm_eval(lm, suite, tasks, cfg, data_root, cache)
    if out is None:
        return {}
    per_task: dict[str, Any] = {}
    subtasks: dict[str, Any] = {}
    for t in tasks:
        per_task[t.name], subs = _task_entry(t, suite, out)
        if subs is not None:
            subtasks[t.name] = subs
    results = {
        "suite": suite.name, "checkpoint": checkpoint, "step": step, "model": model_name,
        "num_fewshot": cfg.num_fewshot, "limit": cfg.limit, "task_limits": dict(cfg.task_limits or {}), "seed": cfg.seed,
        "metric": suite_metric(suite), "tasks": per_task, "avg": average(per_task),
        "skipped": skipped, "subtasks": subtasks, "data_dir": str(data_root),
        "on_missing_task": cfg.on_missing_task, "force_skip": bool(cfg.force_skip),
        "task_files": dict(cfg.task_files or {}), "data": data_records(suite, tasks, cfg, data_root, per_task),
    }
    if samples_dir is not None:
        results["samples_dir"] = str(samples_dir)
        results["n_samples"] = write_samples(out["samples"], tasks, Path(samples_dir))
    else:
        results["n_samples"] = sum(e["n"] for e in per_task.values())
    results["runtime_s"] = round(time.perf_counter() - t0, 2)
    return results


def merge_results(parts: list[dict[str, Any]], skipped: Mapping[str, list[str]]) -> dict[str, Any]:
    """One checkpoint's results from those of its units (``run_suite`` on some of the suite's tasks each, in the
    suite's order): the dict ``run_suite`` returns for all those tasks at once; ``skipped`` as the suite's data check
    found it. ``runtime_s`` is the units' sum."""
    merged = {**parts[0], "tasks": {}, "subtasks": {}, "data": {}, "skipped": dict(skipped)}
    for part in parts:
        for key in ("tasks", "subtasks", "data"):
            merged[key].update(part[key])
    merged["avg"] = average(merged["tasks"])
    merged["n_samples"] = sum(p["n_samples"] for p in parts)
    merged["runtime_s"] = round(sum(p["runtime_s"] for p in parts), 2)
    return merged


def results_table(results: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Rows for a W&B / console table: one per task plus the average (task ``avg``)."""
    cols = ["checkpoint", "step", "task", "metric", "value", "acc", "acc_norm", "n", "chance"]
    rows = []
    for name, e in results["tasks"].items():
        rows.append([results["checkpoint"], results["step"], name, e["metric"], e[e["metric"]], e["acc"],
                     e["acc_norm"], e["n"], e["chance"]])
    rows.append([results["checkpoint"], results["step"], "avg", results["metric"], results["avg"], None, None,
                 sum(e["n"] for e in results["tasks"].values()), None])
    return cols, rows


def format_table(results: dict[str, Any]) -> str:
    lines = [f"suite={results['suite']} checkpoint={results['checkpoint']} step={results['step']} "
             f"fewshot={results['num_fewshot']} limit={results['limit']}",
             f"{'task':<16}{'metric':<10}{'value':>8}{'chance':>8}{'acc':>8}{'acc_norm':>10}{'n':>7}"]
    for name, e in results["tasks"].items():
        an = "-" if e["acc_norm"] is None else f"{e['acc_norm']:.4f}"
        lines.append(f"{name:<16}{e['metric']:<10}{e[e['metric']]:>8.4f}{e['chance']:>8.4f}{e['acc']:>8.4f}"
                     f"{an:>10}{e['n']:>7}")
    lines.append(f"{'avg':<16}{results['metric']:<10}{results['avg']:>8.4f}")
    for name, files in (results.get("skipped") or {}).items():
        lines.append(f"skipped {name}: data missing ({', '.join(files)})")
    for name, d in (results.get("data") or {}).items():
        lines.append(f"data {name}: {d['note']}" + (f"  [differs from the paper: {'; '.join(d['substitute'])}]"
                                                     if d.get("substitute") else ""))
    return "\n".join(lines)


def evaluate_model(model: str, suite_cfg: EvalConfig | Mapping[str, Any], out_dir: Path,
                   data_dir: Path | None = None, device: str = "cpu", dtype: str = "float32",
                   hf_impl: str = "shared") -> dict[str, Any]:
    """Evaluate one model (LitGPT checkpoint, HF dir/id, or ``smollm2``) on a suite; writes
    ``<out_dir>/results.json`` and ``<out_dir>/samples/<task>.jsonl``; returns the results dict. ``hf_impl``: how a
    Hugging Face model is run (see ``make_lm``)."""
    from proxlab.core.stage import atomic_write_text

    cfg = eval_config(suite_cfg)
    check_suite_data(cfg, data_dir)  # before loading the model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind, loc = resolve_model_path(model)
    lm = make_lm(model, batch_size=cfg.batch_size, device=device, dtype=dtype, hf_impl=hf_impl)
    step = None
    if kind == "litgpt":
        from proxlab.evaluate.lms.litgpt import checkpoint_step

        step = checkpoint_step(lm.checkpoint_dir, lm.meta)
    results = run_suite(lm, cfg, data_dir, samples_dir=out_dir / "samples", checkpoint="final", step=step,
                        model_name=loc)
    results["model_kind"] = kind
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, sort_keys=True, default=str))
    return results
