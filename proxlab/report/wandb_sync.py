"""`proxlab wandb-sync [runs_dir=runs] [sweep=NAME] [dry_run=true] [timeout_s=600]`: upload offline W&B runs.

Runs log offline (conf/logger/wandb_offline.yaml) into `runs/<sweep>/<run>/wandb/offline-run-*`, the sweep report into
`runs/<sweep>/wandb/offline-run-*`. This finds them and runs `python -m wandb sync <dir>` on each, one at a time, so a
failure names the run directory it concerns. wandb retries an unreachable server for minutes, so each sync has a
timeout. `wandb sync` skips runs it has already uploaded (it leaves a `.synced` marker beside the run file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

DEFAULT_SERVER = "https://api.wandb.ai"


def find_offline_runs(runs_dir: Path, sweep: str | None = None) -> list[Path]:
    """The offline W&B run directories of one sweep (or of every sweep) under `runs_dir`, sorted."""
    sweeps = [Path(runs_dir) / sweep] if sweep else sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()
                                                           and not p.name.startswith("."))
    found: list[Path] = []
    for sweep_dir in sweeps:
        found += sweep_dir.glob("wandb/offline-run-*")  # the sweep's report
        found += sweep_dir.glob("*/wandb/offline-run-*")  # its runs
    return sorted(p for p in found if p.is_dir())


def sync_command(run_dir: Path, python: str = sys.executable) -> list[str]:
    return [python, "-m", "wandb", "sync", str(run_dir)]


def sync_runs(run_dirs: list[Path], dry_run: bool = False, timeout_s: float = 600.0) -> list[str]:
    """Sync each run directory; returns one message per failure (empty: all uploaded). Dry run: print the commands."""
    failures = []
    server = os.environ.get("WANDB_BASE_URL", DEFAULT_SERVER)
    for run_dir in run_dirs:
        cmd = sync_command(run_dir)
        print(("[proxlab] would run: " if dry_run else "[proxlab] ") + " ".join(cmd), flush=True)
        if dry_run:
            continue
        # stdin closed: without an API key wandb would otherwise wait for a login prompt to be answered. Its own
        # session, so that a timeout also ends the wandb-core service it starts.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            failures.append(f"wandb sync of {run_dir} timed out after {timeout_s:g} s: is the W&B server {server} "
                            "reachable from this machine? (sync from a machine with network access)")
            continue
        output = (stdout + stderr).strip()
        if proc.returncode != 0:
            detail = "\n".join(output.splitlines()[-5:])
            failures.append(f"wandb sync of {run_dir} failed (exit {proc.returncode}):\n{detail}")
        elif output:
            print(output, flush=True)
    return failures


def wandb_sync_main(args: dict[str, str]) -> int:
    """The command: exit status 0 when every run synced (or dry run), 1 otherwise."""
    unknown = sorted(set(args) - {"runs_dir", "sweep", "dry_run", "timeout_s"})
    if unknown:
        raise SystemExit(f"proxlab wandb-sync: unknown option(s) {unknown} "
                         "(runs_dir=PATH sweep=NAME dry_run=true|false timeout_s=SECONDS)")
    runs_dir = Path(args.get("runs_dir", "runs")).resolve()
    if not runs_dir.is_dir():
        raise SystemExit(f"proxlab wandb-sync: no runs directory {runs_dir}")
    sweep = args.get("sweep")
    run_dirs = find_offline_runs(runs_dir, sweep)
    where = f"{runs_dir}/{sweep}" if sweep else str(runs_dir)
    print(f"[proxlab] {len(run_dirs)} offline W&B run(s) under {where}", flush=True)
    failures = sync_runs(run_dirs, dry_run=args.get("dry_run", "false").lower() in ("1", "true", "yes"),
                         timeout_s=float(args.get("timeout_s", 600)))
    for message in failures:
        print(f"[proxlab] {message}", file=sys.stderr, flush=True)
    if failures:
        print(f"[proxlab] {len(failures)} of {len(run_dirs)} run(s) not synced", file=sys.stderr, flush=True)
    return 1 if failures else 0
