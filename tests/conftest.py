"""Suite-wide settings: offline hubs, and an exit that cannot hang on a library's leftover threads."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

_exit_status = {"code": None}


def pytest_sessionfinish(session, exitstatus):
    _exit_status["code"] = int(exitstatus)


def pytest_unconfigure(config):
    # In-process W&B runs, vLLM/HTTP client pools and dataloader workers can leave non-daemon threads or atexit
    # handlers that keep the interpreter alive after the summary (seen: minutes, in CI's budget). Every result is
    # reported by now, so leave with pytest's own exit code.
    if _exit_status["code"] is not None and os.environ.get("PROXLAB_TEST_HARD_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])
