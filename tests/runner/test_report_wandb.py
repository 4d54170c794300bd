"""The report's tables and plots in W&B (offline, in the sweep's group), and `proxlab wandb-sync`, which uploads
offline runs: discovery and the command it runs, and a clear failure without network (no server is reachable here)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from proxlab.cli import main as proxlab
from proxlab.core.paths import REPO_ROOT
from proxlab.report.sweep import build_report, report_logger_cfg
from proxlab.report.wandb_sync import find_offline_runs


@pytest.fixture
def logged_report(table2_sweep):
    out = build_report(table2_sweep, log_wandb=True, logger_cfg=report_logger_cfg("table2", "offline", "proxlab", None))
    return table2_sweep, out


def test_report_logs_tables_and_plots_to_wandb(logged_report):
    sweep, out = logged_report
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    images = {r["image"]: r["path"] for r in records if "image" in r}
    assert set(images) == {"report/plot/accuracy_vs_flops", "report/plot/paper/table2",
                           "report/plot/accuracy_by_step", "report/plot/flops"}
    assert images["report/plot/flops"] == str(out / "flops.png")
    tables = {r["table"]: r for r in records if "table" in r}
    assert {"report/table", "report/paper/table2", "report/avg_by_step", "report/flops"} <= set(tables)
    assert tables["report/flops"]["columns"][-3:] == ["train to target", "total to target", "vs raw"]
    [run] = find_offline_runs(sweep.parent, "table2")  # the report's own run, beside the sweep's run directories
    assert run.parent == sweep / "wandb"
    media = {p.name.split("_")[0] for p in (run / "files" / "media" / "images" / "report" / "plot").rglob("*.png")}
    assert media == {"accuracy", "flops", "table2"}  # the PNGs themselves went into the W&B run
    [run_file] = run.glob("run-*.wandb")  # binary protobuf; the run's name and tags are plain strings in it
    assert b"table2/report" in run_file.read_bytes() and b"sweep:table2" in run_file.read_bytes()


def test_wandb_sync_finds_offline_runs_and_builds_the_command(tmp_path, capsys):
    runs = tmp_path / "runs"
    expected = [runs / "s1" / "raw-a" / "wandb" / "offline-run-20260101_000000-aaa",
                runs / "s1" / "wandb" / "offline-run-20260101_000001-bbb",
                runs / "s2" / "doc-b" / "wandb" / "offline-run-20260101_000002-ccc"]
    for d in expected:
        d.mkdir(parents=True)
    (runs / "s1" / "raw-a" / "wandb" / "run-20260101_000003-online").mkdir()  # an online run: nothing to upload
    (runs / ".hydra" / "x" / "wandb" / "offline-run-1").mkdir(parents=True)  # Hydra's own folder is no sweep
    assert find_offline_runs(runs, "s1") == sorted(expected[:2])
    assert find_offline_runs(runs) == sorted(expected)
    with pytest.raises(SystemExit) as exit_:
        proxlab(["wandb-sync", f"runs_dir={runs}", "sweep=s1", "dry_run=true"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "2 offline W&B run(s)" in out
    for d in expected[:2]:
        assert f"would run: {sys.executable} -m wandb sync {d}\n" in out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sync(runs_dir, env, *extra):
    return subprocess.run([sys.executable, "-m", "proxlab.cli", "wandb-sync", f"runs_dir={runs_dir}",
                           "sweep=table2", *extra], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          env=env)


def offline_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # a home without W&B credentials, and a server nobody listens on
    return {**env, "HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / ".config" / "wandb"),
            "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}", **extra}


def test_wandb_sync_without_network_fails_naming_the_run(logged_report, tmp_path):
    sweep, _ = logged_report
    [run] = find_offline_runs(sweep.parent, "table2")
    r = sync(sweep.parent, offline_env(tmp_path))
    assert r.returncode == 1
    assert f"wandb sync of {run} failed" in r.stderr and "No API key configured" in r.stderr
    # with a key, wandb retries the dead server for minutes: the timeout ends it and says why
    r = sync(sweep.parent, offline_env(tmp_path, WANDB_API_KEY="local-" + "0" * 40), "timeout_s=3")
    assert r.returncode == 1
    assert f"wandb sync of {run} timed out after 3 s" in r.stderr and "reachable" in r.stderr
    assert "1 of 1 run(s) not synced" in r.stderr
