"""The proxlab logger under many ranks: rank 0 talks, others warn with their rank; periodic progress lines off a
terminal; the run's log file; lm-eval's notice flood dropped (with real lm-eval task building)."""

from __future__ import annotations

import io
import logging
import re

import pytest

from proxlab.core.logs import get_logger, progress, progress_line, setup_logging


@pytest.fixture(autouse=True)
def _restore_proxlab_logger():
    logger = logging.getLogger("proxlab")
    state = (list(logger.handlers), logger.level, logger.propagate)
    yield
    setup_logging(rank=0, console=False)  # drop what the test installed
    logger.handlers[:] = state[0]
    logger.setLevel(state[1])
    logger.propagate = state[2]


def test_rank_zero_logs_info_others_only_warnings_with_their_rank(tmp_path):
    lines = {}
    for rank in (0, 5):
        out = io.StringIO()
        setup_logging(rank=rank, log_file=tmp_path / "run.log", stream=out)
        get_logger("refine.apply").info("kept 10/12 documents")
        get_logger("refine.apply").warning("2 programs did not parse")
        lines[rank] = out.getvalue().splitlines()
    assert lines[0] == ["[proxlab] kept 10/12 documents", "[proxlab] WARNING: 2 programs did not parse"]
    assert lines[5] == ["[proxlab rank 5] WARNING: 2 programs did not parse"]
    # both processes appended to the one run log, in order
    assert (tmp_path / "run.log").read_text().splitlines() == lines[0] + lines[5]


def test_setup_twice_replaces_its_handlers_instead_of_doubling_lines():
    out = io.StringIO()
    setup_logging(rank=0, stream=out)
    setup_logging(rank=0, stream=out)
    get_logger().info("once")
    assert out.getvalue() == "[proxlab] once\n"


def test_progress_off_a_terminal_is_periodic_lines_with_rate_and_eta():
    out = io.StringIO()
    setup_logging(rank=0, stream=out)
    assert list(progress(range(5), desc="generate_doc", unit="docs", every_s=3600, rank=0)) == list(range(5))
    lines = out.getvalue().splitlines()
    # first and last item only (every_s is long): a file gets two lines, not a bar's carriage returns
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert re.fullmatch(r"\[proxlab\] generate_doc: 1/5 docs \(20%\), \S+ docs/s, ETA \d+ (s|min|h)", lines[0]), lines[0]
    assert lines[1].startswith("[proxlab] generate_doc: 5/5 docs (100%)") and lines[1].endswith("ETA 0 s")


def test_progress_on_other_ranks_is_silent_but_yields_everything():
    out = io.StringIO()
    setup_logging(rank=3, stream=out)
    assert sum(progress(range(100), desc="x", rank=3, every_s=0)) == sum(range(100))
    assert out.getvalue() == ""


def test_progress_line_eta_and_units():
    assert progress_line("tokenize", 40, 100, 4.0, "docs") == "tokenize: 40/100 docs (40%), 10 docs/s, ETA 6 s"
    assert progress_line("eval", 1, 1000, 1.0, "items").endswith("ETA 17 min")
    assert progress_line("eval", 3, None, 1.0, "items") == "eval: 3 items, 3 items/s"


def test_lm_eval_custom_kwargs_flood_is_dropped_but_other_lm_eval_warnings_stay(caplog):
    setup_logging(rank=0, stream=io.StringIO())
    task_logger = logging.getLogger("lm_eval.api.task")
    with caplog.at_level(logging.WARNING, logger="lm_eval.api.task"):
        # the exact text lm-eval 0.4.13 logs for every task with a custom_dataset (lm_eval/api/task.py)
        task_logger.warning("general_arc_easy: Custom kwargs can be passed to `--metadata` in console (as json "
                            "string) or to the TaskManager.\nFor example --metadata='{\"max_seq_lengths\":[4096]}'.")
        task_logger.warning("general_arc_easy: a real problem")
    messages = [r.getMessage() for r in caplog.records if r.name == "lm_eval.api.task"]
    assert messages == ["general_arc_easy: a real problem"]


def test_building_proxlab_tasks_in_lm_eval_logs_no_custom_kwargs_notices(caplog):
    """The flood for real: lm-eval builds proxlab's tasks (local files through `custom_dataset`), which logs the
    notice once per task; with setup_logging's filter none reaches a handler. Without it (the control) they do."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from proxlab.evaluate.tasks.data import resolve_data_dir
    from proxlab.evaluate.tasks.suites import SUITES

    suite = SUITES["tiny_mc"]
    names = [n for t in suite.tasks.values() for n in t.lm_tasks]

    def notices() -> int:
        caplog.clear()
        tm = TaskManager(include_path=str(suite.include_path), include_defaults=False,
                         metadata={"data_dir": str(resolve_data_dir()), "task_files": {}})
        with caplog.at_level(logging.INFO):
            get_task_dict(names, tm)
        return sum("Custom kwargs can be passed" in r.getMessage() for r in caplog.records)

    task_logger = logging.getLogger("lm_eval.api.task")
    saved = list(task_logger.filters)
    task_logger.filters.clear()
    try:
        assert notices() >= len(names)  # the control: lm-eval really logs one per task
        setup_logging(rank=0, stream=io.StringIO())
        assert notices() == 0
    finally:
        task_logger.filters[:] = saved
