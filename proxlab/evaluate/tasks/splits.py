"""Which data each eval task scores, set beside the data the paper scored: the one place that states the paper's split
per task, what each shared file holds, and the per-task record every results file carries.

``PAPER[protocol][task]`` is the paper's data (paper §C.1, §C.2, Table 3; lighteval's task table and seeded sampling,
``src/lighteval/tasks/tasks_table.jsonl`` and ``lighteval_task.py`` at ``a3d1eea1``; the math-evaluation-harness's
``scripts/run_eval.sh``, ``data_loader.py`` and ``data/<task>/test.jsonl`` at ``8e2c3ccc``; the lm-eval 0.4 task
YAMLs): the split it scored, its size, how it sampled, where its few-shot exemplars came from.
``FILES`` is what the shared data folder holds (``shared/data/SOURCES.md``): each file's split, the full split's size
(the folder lacks the ~20% held-out items) and, where the file is a fixed subset of a split, which one.

``data_record`` says what one task of one evaluation ran on: the file (relative to the data directory), its split,
its item count, which items were scored (limit, lighteval's seeded shuffle or the first N), the few-shot source, and
``substitute``, the ways it differs from the paper's data (empty when it is the paper's). The results JSON holds these
records under ``data``; reports print ``note`` per task and footnote ``substitute`` (reports may not import this
package, so the record carries its own text).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TEST_SPLIT = "test"  # the dataset split name every shipped task YAML scores (``test_split: test``)


@dataclass(frozen=True)
class FileFacts:
    """What a shared data file holds."""

    split: str  # the dataset split it is a copy of
    n_total: int  # items in that whole split (the shared copy lacks the held-out ~20%)
    subset: str | None = None  # the fixed subset of the split the file is, if it is one


@dataclass(frozen=True)
class PaperData:
    """The data the paper scored for one task."""

    dataset: str  # the dataset (and subset) the paper's harness loaded
    split: str
    n: int  # items in that split (or subset)
    sample: str  # which of them were scored
    fewshot: str  # where the exemplars came from ("none (0-shot)": the protocol is 0-shot)
    subset: str | None = None  # the fixed subset of the split the paper's harness scored, if any


# Subsets, named once so the paper's and the files' descriptions compare equal.
MATH500 = "MATH-500 (the PRM800K 500-problem subset of MATH test)"
MATHQA_1000 = "the harness's fixed 1000-item subset of MathQA test"
MMLU_STEM = "the 18 STEM subjects of MMLU test"
TABMWP_HARNESS = "the harness's seed-0 random 1000 of the 7686 test problems"
TABMWP_TEST1K = "PromptPG's test1k, another 1000 of the 7686 test problems (121 in common with the harness's)"
HARNESS_PROMPT = "the math-evaluation-harness's cot prompt exemplars"
ZERO_SHOT = "none (0-shot)"

FILES: dict[str, FileFacts] = {
    "eval/arc_challenge_test.jsonl": FileFacts("test", 1172),
    "eval/arc_challenge_validation.jsonl": FileFacts("validation", 299),
    "eval/arc_easy_test.jsonl": FileFacts("test", 2376),
    "eval/arc_easy_validation.jsonl": FileFacts("validation", 570),
    "eval/commonsenseqa_validation.jsonl": FileFacts("validation", 1221),
    "eval/hellaswag_validation.jsonl": FileFacts("validation", 10042),
    "eval/mmlu_test.jsonl": FileFacts("test", 14042),
    "eval/mmlu_validation.jsonl": FileFacts("validation", 1531),
    "eval/mmlu_dev_fewshot.jsonl": FileFacts("dev", 285),
    "eval/openbookqa_test.jsonl": FileFacts("test", 500),
    "eval/openbookqa_validation.jsonl": FileFacts("validation", 500),
    "eval/piqa_validation.jsonl": FileFacts("validation", 1838),
    "eval/siqa_validation.jsonl": FileFacts("validation", 1954),
    "eval/winogrande_xl_validation.jsonl": FileFacts("validation", 1267),
    "eval/sciq_validation.jsonl": FileFacts("validation", 1000),
    "eval/boolq_validation.jsonl": FileFacts("validation", 3270),
    "eval/copa_validation.jsonl": FileFacts("validation", 100),
    "math_eval/gsm8k_test.jsonl": FileFacts("test", 1319),
    "math_eval/math_test.jsonl": FileFacts("test", 5000),
    "math_eval/math500_test.jsonl": FileFacts("test", 500, MATH500),
    "math_eval/svamp_test.jsonl": FileFacts("test", 1000),
    "math_eval/asdiv_test.jsonl": FileFacts("test", 2215),
    "math_eval/mawps_test.jsonl": FileFacts("test", 2065),
    "math_eval/tabmwp_test1k.jsonl": FileFacts("test", 1000, TABMWP_TEST1K),
    "math_eval/mathqa_test.jsonl": FileFacts("test", 1000, MATHQA_1000),
    "math_eval/mmlu_stem_test.jsonl": FileFacts("test", 3018, MMLU_STEM),
    "math_eval/sat_math_test.jsonl": FileFacts("test", 32),
    "math_eval/agieval_sat_math.jsonl": FileFacts("test", 220, "AGIEval SAT-Math (not the harness's 32 items)"),
    **{f"math_eval/fewshot/{t}.jsonl": FileFacts("fewshot", n, HARNESS_PROMPT)
       for t, n in (("gsm8k", 8), ("svamp", 8), ("asdiv", 8), ("mawps", 8), ("tabmwp", 8), ("math", 4),
                    ("mathqa", 4), ("mmlu_stem", 4), ("sat_math", 4))},
}

_LIGHTEVAL = "lighteval's seed-42 shuffle, first 1000"
_LMEVAL_FEWSHOT = "train"  # lm-eval draws exemplars from training_split when a task has one
_HARNESS_ALL = "all (--num_test_sample -1, file order)"

# protocol -> task -> the paper's data. general: Table 2 (lighteval 0-shot); selection: Table 3 (lm-eval 0/2-shot,
# which scores test_split when a task has one, else validation, and draws exemplars from train); math: Table 5.
PAPER: dict[str, dict[str, PaperData]] = {
    "general": {
        "arc_challenge": PaperData("ai2_arc ARC-Challenge", "test", 1172, _LIGHTEVAL, ZERO_SHOT),
        "arc_easy": PaperData("ai2_arc ARC-Easy", "test", 2376, _LIGHTEVAL, ZERO_SHOT),
        "commonsense_qa": PaperData("commonsense_qa", "validation", 1221, _LIGHTEVAL, ZERO_SHOT),
        "hellaswag": PaperData("hellaswag", "validation", 10042, _LIGHTEVAL, ZERO_SHOT),
        "mmlu": PaperData("lighteval/mmlu (57 subjects)", "test", 14042, _LIGHTEVAL + " per subject", ZERO_SHOT),
        "openbookqa": PaperData("openbookqa main", "validation", 500, _LIGHTEVAL, ZERO_SHOT),
        "piqa": PaperData("piqa plain_text", "validation", 1838, _LIGHTEVAL, ZERO_SHOT),
        "siqa": PaperData("lighteval/siqa", "validation", 1954, _LIGHTEVAL, ZERO_SHOT),
        "winogrande": PaperData("winogrande winogrande_xl", "validation", 1267, _LIGHTEVAL, ZERO_SHOT),
        "sciq": PaperData("sciq", "test", 1000, _LIGHTEVAL, ZERO_SHOT),
    },
    "selection": {
        "arc_challenge": PaperData("allenai/ai2_arc ARC-Challenge", "test", 1172, "all", _LMEVAL_FEWSHOT),
        "arc_easy": PaperData("allenai/ai2_arc ARC-Easy", "test", 2376, "all", _LMEVAL_FEWSHOT),
        "hellaswag": PaperData("Rowan/hellaswag", "validation", 10042, "all", _LMEVAL_FEWSHOT),
        "logiqa": PaperData("EleutherAI/logiqa", "test", 651, "all", _LMEVAL_FEWSHOT),
        "openbookqa": PaperData("allenai/openbookqa main", "test", 500, "all", _LMEVAL_FEWSHOT),
        "piqa": PaperData("baber/piqa", "validation", 1838, "all", _LMEVAL_FEWSHOT),
        "winogrande": PaperData("allenai/winogrande winogrande_xl", "validation", 1267, "all", _LMEVAL_FEWSHOT),
        "sciq": PaperData("allenai/sciq", "test", 1000, "all", _LMEVAL_FEWSHOT),
    },
    "math": {
        "gsm8k": PaperData("harness data/gsm8k", "test", 1319, _HARNESS_ALL, HARNESS_PROMPT),
        "math": PaperData("harness data/math_oai", "test", 500, _HARNESS_ALL, HARNESS_PROMPT, MATH500),
        "svamp": PaperData("harness data/svamp", "test", 1000, _HARNESS_ALL, HARNESS_PROMPT),
        "asdiv": PaperData("harness data/asdiv", "test", 2215, _HARNESS_ALL, HARNESS_PROMPT),
        "mawps": PaperData("harness data/mawps", "test", 2065, _HARNESS_ALL, HARNESS_PROMPT),
        "tabmwp": PaperData("harness data/tabmwp", "test", 1000, _HARNESS_ALL, HARNESS_PROMPT, TABMWP_HARNESS),
        "mathqa": PaperData("harness data/mathqa", "test", 1000, _HARNESS_ALL, HARNESS_PROMPT, MATHQA_1000),
        "mmlu_stem": PaperData("harness data/mmlu_stem", "test", 3018, _HARNESS_ALL, HARNESS_PROMPT, MMLU_STEM),
        "sat_math": PaperData("harness data/sat_math", "test", 32, _HARNESS_ALL, HARNESS_PROMPT),
    },
}

# suite -> the paper protocol its tasks reproduce (tiny_mc runs the general suite's formats on five of its tasks)
PROTOCOL = {"tiny_mc": "general", "general": "general", "selection": "selection", "selection_2shot": "selection",
            "math": "math"}

_SPLIT_IN_NAME = re.compile(r"(?:^|[_\-.])(test|validation|valid|val|dev|train)(?:\d+k?)?(?:$|[_\-.])")
_SPLIT_ALIASES = {"valid": "validation", "val": "validation"}


def file_facts(rel: str) -> tuple[FileFacts | None, str, str]:
    """(facts, split, where the split came from) of a data file given relative to the data directory: a shared file's
    split from ``FILES``; any other file's from its name (``sciq_test.jsonl`` -> test), else ``unknown``."""
    key = Path(rel).as_posix()
    facts = FILES.get(key)
    if facts is not None:
        return facts, facts.split, "shared data (SOURCES.md)"
    m = _SPLIT_IN_NAME.search(Path(key).stem)
    if m:
        return None, _SPLIT_ALIASES.get(m.group(1), m.group(1)), "file name"
    return None, "unknown", "unknown"


def paper_data(suite: str, task: str) -> PaperData | None:
    return PAPER.get(PROTOCOL.get(suite, suite), {}).get(task)


def _count_items(path: Path) -> int | None:
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def _sample_text(limit: int | None, shuffle_seed: int | None, max_samples: int | None, per_subject: bool) -> str:
    if shuffle_seed is not None:
        text = f"lighteval's seed-{shuffle_seed} shuffle, first {max_samples}" if max_samples else \
            f"lighteval's seed-{shuffle_seed} shuffle"
        text += " per subject" if per_subject else ""
        return text + (f", then the first {limit}" if limit is not None else "")
    if max_samples is not None:
        text = f"first {max_samples if limit is None else min(limit, max_samples)} in file order"
    else:
        text = "all" if limit is None else f"first {limit} in file order"
    return text + (" per subject" if per_subject and limit is not None else "")


def data_record(suite: str, task: str, task_config: dict[str, Any], *, limit: int | None,
                num_fewshot: int | None, seed: int, data_dir: Path, n_scored: int | None,
                overridden: bool = False) -> dict[str, Any]:
    """What one task ran on, compared with the paper's data.

    ``task_config``: the task's YAML (its first lm-eval task for MMLU) with ``dataset_kwargs.files`` set to the files
    that ran (``eval.task_files`` applied); ``limit``: the task's sample cap; ``num_fewshot``: ``eval.num_fewshot``
    (None: the YAML's); ``n_scored``: items scored (per MMLU subject summed)."""
    kwargs = task_config.get("dataset_kwargs") or {}
    files = dict(kwargs.get("files") or {})
    test_split = task_config.get("test_split", TEST_SPLIT)
    rel = files[test_split]
    facts, split, split_from = file_facts(rel)
    per_subject = "subject" in kwargs
    shuffle_seed, max_samples = kwargs.get("shuffle_seed"), kwargs.get("max_samples")
    shots = task_config.get("num_fewshot", 0) if num_fewshot is None else num_fewshot
    shots = int(shots or 0)
    fewshot, ours_fewshot = None, ZERO_SHOT
    if shots > 0:
        fs_split = task_config.get("fewshot_split")
        fs_rel = files.get(fs_split) if fs_split else None
        sampler = (task_config.get("fewshot_config") or {}).get("sampler") or "default"
        fewshot = {"num_fewshot": shots, "file": fs_rel, "split": None,
                   "sampler": "first_n (file order)" if sampler == "first_n" else f"seeded random (seed {seed})",
                   "same_as_scored": fs_rel is not None and fs_split == test_split}
        if fs_rel is None:
            ours_fewshot = "lm-eval's fallback (the task names no few-shot split)"
        else:
            fs_facts, fewshot["split"], _ = file_facts(fs_rel)
            ours_fewshot = fs_facts.subset if fs_facts and fs_facts.subset else fewshot["split"]
    paper = paper_data(suite, task)
    substitute: list[str] = []
    if paper is not None:
        if split != paper.split:
            substitute.append(f"{split} split (paper: {paper.split})")
        if facts is not None and facts.subset != paper.subset:  # a file we know: is it the paper's subset?
            substitute.append(f"{facts.subset or 'the whole ' + split + ' split'} "
                              f"(paper: {paper.subset or 'the whole ' + paper.split + ' split'})")
        if shots > 0 and ours_fewshot != paper.fewshot:
            substitute.append(f"{shots}-shot exemplars from {ours_fewshot} (paper: {paper.fewshot})")
    n_file = _count_items(Path(data_dir) / rel)
    sample = _sample_text(limit, shuffle_seed, max_samples, per_subject)
    items = (f"{n_file} of {facts.n_total} items" if facts and n_file is not None and n_file != facts.n_total
             else f"{n_file} items")
    fs_text = ZERO_SHOT if fewshot is None else (
        f"{shots} from {fewshot['file'] or ours_fewshot} [{ours_fewshot}], {fewshot['sampler']}"
        + (", never the scored doc itself" if fewshot["same_as_scored"] else ""))
    note = f"{rel} [{split}, {items}]; scored {n_scored}: {sample}; few-shot: {fs_text}"
    return {
        "file": rel, "split": split, "split_from": split_from, "subset": facts.subset if facts else None,
        "n_file": n_file, "n_split": facts.n_total if facts else None, "n": n_scored,
        "limit": limit, "shuffle_seed": shuffle_seed, "max_samples": max_samples, "sample": sample,
        "num_fewshot": shots, "fewshot": fewshot,
        "override": f"eval.task_files.{task}" if overridden else None,
        "paper": asdict(paper) if paper is not None else None,
        "substitute": substitute, "note": note,
    }
