"""`proxlab wandb-sync [runs_dir=runs] [sweep=NAME] [dry_run=true] [timeout_s=600] [force=true]`: upload offline W&B
runs, each as one run with its whole history, once.

Runs log offline (conf/logger/wandb_offline.yaml) into `runs/<sweep>/<run>/wandb/offline-run-<time>-<id>/`, the sweep
report into `runs/<sweep>/wandb/`. One W&B run can have several such directories ("pieces"), all with its id: each
attempt of a stage requeued after preemption resumes its run (proxlab.core.tracking: the id follows from the
artifact), evaluation adds its accuracies to the pretrain run, a rebuilt report resumes the report run. `wandb sync`
of the pieces one by one uploads the last over the first (wandb/wandb#3841), so this command merges them first:

- the pieces of an id, from every sweep under `runs_dir` (evaluation may have resumed a pretrain run another sweep
  started), in the order they started;
- one `.wandb` file under `runs_dir/.wandb-sync/`: the first piece's run record, the others' config, metric
  definitions, summaries and files in order, one history row per step (rows of the same step are merged key by key,
  the later piece winning: a requeued attempt's steps replace the ones its predecessor logged after the checkpoint it
  resumed from, and evaluation's `eval/…` values join the pretrain row of their `train/step`), the last exit record;
  the pieces' `files/` (tables, images) are linked beside it; values an attempt's wandb service never wrote (a
  SIGKILL ends it before it flushes) are taken from the stage's metrics.jsonl, found through the run's plan.json;
- `python -m wandb sync <dir>` on it (a single-piece run: on its own directory), one run at a time with a timeout, so
  a failure names the run it concerns (wandb retries an unreachable server for minutes);
- `runs_dir/.wandb-sync/synced.json` records each uploaded run and the pieces (path, size, mtime) it held: a later
  call skips it, unless pieces were added or changed since; then the run is merged and uploaded again, whole.

The `.wandb` file is the LevelDB log format with W&B's header (`read_records`, `write_records`; the format of wandb's
former `wandb.sdk.internal.datastore`) holding `wandb.proto.wandb_internal_pb2.Record` messages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

DEFAULT_SERVER = "https://api.wandb.ai"
SYNC_DIR = ".wandb-sync"  # under runs_dir; a dot-name, so no sweep
LEDGER = "synced.json"
PIECE_RE = re.compile(r"^offline-run-(\d{8}_\d{6})-(.+)$")

# The transaction log: a 7-byte file header, then 32 KiB blocks of records, each with a 7-byte header (CRC32 over the
# type byte and the payload, payload length, type); a record that does not fit its block continues in the next.
HEADER = struct.Struct("<4sHB")
HEADER_IDENT, HEADER_MAGIC, HEADER_VERSION = b":W&B", 0xBEE1, 0
CHUNK = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    """A `.wandb` file that is not a W&B transaction log, or is cut short."""


def _crc(kind: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF


def read_records(path: str | Path) -> Iterator[Any]:
    """The records (`wandb_internal_pb2.Record`) of an offline run's `.wandb` file, in order. A record cut short by a
    killed writer ends the file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if len(data) < HEADER.size or HEADER.unpack_from(data)[:2] != (HEADER_IDENT, HEADER_MAGIC):
        raise WandbFileError(f"{path}: not a W&B run file (no ':W&B' header)")
    pos, parts = HEADER.size, []
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # block trailer
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding: the writer stopped here
            break
        payload = data[pos + CHUNK.size:pos + CHUNK.size + length]
        if len(payload) < length:
            break
        if crc != _crc(kind, payload):
            raise WandbFileError(f"{path}: bad checksum at byte {pos}")
        pos += CHUNK.size + length
        parts.append(payload)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def write_records(path: str | Path, records: Iterable[Any]) -> None:
    """Write records as a `.wandb` file (what `read_records` and `wandb sync` read), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(HEADER.pack(HEADER_IDENT, HEADER_MAGIC, HEADER_VERSION))
        pos = HEADER.size
        for record in records:
            data, first = record.SerializeToString(), True
            while True:
                left = BLOCK - pos % BLOCK
                if left < CHUNK.size:
                    f.write(b"\0" * left)
                    pos += left
                    left = BLOCK
                chunk, data = data[:left - CHUNK.size], data[left - CHUNK.size:]
                kind = (FULL if not data else FIRST) if first else (LAST if not data else MIDDLE)
                f.write(CHUNK.pack(_crc(kind, chunk), len(chunk), kind) + chunk)
                pos += CHUNK.size + len(chunk)
                first = False
                if not data:
                    break
    os.replace(tmp, path)


def read_run(run_dir: str | Path, wait_s: float = 0.0) -> list[Any]:
    """The records of an offline run directory's `.wandb` file. wandb's service writes the file after `finish()`
    returns: `wait_s` waits up to that long for its exit record (a run just closed)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        files = sorted(Path(run_dir).glob("*.wandb"))
        records = list(read_records(files[0])) if files else []
        if any(kind_of(r) == "exit" for r in records) or time.monotonic() >= deadline:
            return records
        time.sleep(0.2)


def kind_of(record: Any) -> str:
    return record.WhichOneof("record_type")


def history_rows(records: Iterable[Any]) -> dict[int, dict[str, Any]]:
    """{step: {metric: value}} of a run's history records (values JSON-decoded; nested keys joined by '/')."""
    rows: dict[int, dict[str, Any]] = {}
    for record in records:
        if kind_of(record) == "history":
            row = {_item_name(i): json.loads(i.value_json) for i in record.history.item}
            rows.setdefault(int(row.get("_step", record.history.step.num)), {}).update(row)
    return rows


def _item_name(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


# ---------------------------------------------------------------------------------------------------------------------
# Pieces of a run, and merging them


@dataclass(frozen=True)
class Piece:
    """One offline run directory: (part of) the W&B run `run_id`."""

    dir: Path
    run_id: str
    started: str  # YYYYMMDD_HHMMSS, from the directory name

    @property
    def file(self) -> Path | None:
        files = sorted(self.dir.glob("*.wandb"))
        return files[0] if files else None

    def fingerprint(self, root: Path) -> list:
        f = self.file
        st = f.stat() if f else None
        return [str(self.dir.relative_to(root)), st.st_size if st else 0, st.st_mtime_ns if st else 0]


def find_pieces(runs_dir: Path, sweep: str | None = None) -> dict[str, list[Piece]]:
    """{run id: its pieces in start order} of the runs with a piece in `sweep` (default: every sweep); the pieces
    themselves may lie in any sweep under `runs_dir`. A directory whose `.wandb` file holds nothing (its writer was
    killed before writing) is none."""
    runs_dir = Path(runs_dir)
    sweeps = sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    pieces: dict[str, list[Piece]] = {}
    for sweep_dir in sweeps:
        for d in [*sweep_dir.glob("wandb/offline-run-*"), *sweep_dir.glob("*/wandb/offline-run-*")]:
            m = PIECE_RE.match(d.name)
            if m and d.is_dir() and any(f.stat().st_size > HEADER.size for f in d.glob("*.wandb")):
                pieces.setdefault(m.group(2), []).append(Piece(d, m.group(2), m.group(1)))
    if sweep is not None:
        here = (runs_dir / sweep).resolve()
        pieces = {i: ps for i, ps in pieces.items() if any(here in p.dir.resolve().parents for p in ps)}
    return {i: sorted(ps, key=lambda p: (p.started, str(p.dir))) for i, ps in sorted(pieces.items())}


def merge_records(pieces: list[list[Any]], logged: dict[int, dict[str, Any]] | None = None) -> list[Any]:
    """One run's records from the records of its pieces (in start order): see the module's docstring. `logged`:
    {step: {W&B name: value}} the stage wrote to its metrics.jsonl (`stage_history`); where the pieces lack a value
    of a step, it is taken from there."""
    from wandb.proto import wandb_internal_pb2 as pb

    head: list[Any] = []
    body: list[Any] = []
    rows: dict[int, dict[str, Any]] = {}  # step -> item name -> HistoryItem
    exit_record = None
    for records in pieces:
        for record in records:
            kind = kind_of(record)
            if kind == "header":
                if not head:
                    head.append(record)
            elif kind == "run":
                if not any(kind_of(r) == "run" for r in head):
                    run = pb.Record()
                    run.CopyFrom(record)
                    run.run.resume = False  # one complete run: nothing on the server to resume from
                    run.run.resumed = False
                    head.append(run)
                else:  # a resumed piece: its init config (if any) updates the run's
                    updates = [u for u in record.run.config.update if u.key != "_wandb"]
                    if updates:
                        body.append(pb.Record(config=pb.ConfigRecord(update=updates)))
            elif kind == "history":
                items = {_item_name(item): item for item in record.history.item}
                step = int(json.loads(items["_step"].value_json)) if "_step" in items else record.history.step.num
                rows.setdefault(step, {}).update(items)
            elif kind == "exit":
                exit_record = record
            elif kind not in ("final", "footer", "request", "preempting"):
                body.append(record)
    if not any(kind_of(r) == "run" for r in head):
        raise WandbFileError("no run record in any piece")
    for step, values in (logged or {}).items():  # what a killed attempt's wandb service never wrote
        row = rows.setdefault(step, {})
        for name, value in {**values, "_step": step}.items():
            if name not in row:
                row[name] = pb.HistoryItem(nested_key=[name], value_json=json.dumps(value))
    head.sort(key=lambda r: kind_of(r) != "header")
    history = [pb.Record(history=pb.HistoryRecord(step=pb.HistoryStep(num=step), item=list(items.values())))
               for step, items in sorted(rows.items())]
    merged = head + body + history + ([exit_record] if exit_record is not None else [])
    for n, record in enumerate(merged, start=1):  # a fresh sequence, as one writer would have numbered them
        record.num = n
        record.ClearField("control")
    return merged


def stage_history(pieces: list[Piece], records: list[list[Any]]) -> dict[int, dict[str, Any]]:
    """{step: {W&B name: value}} from the metrics.jsonl of the stage whose run this is: the stage and artifact key
    its config names (MetricsLogger.for_stage), its artifact directory from the run directory's plan.json (the
    orchestrator's). A stage killed with SIGKILL takes with it what its wandb service had not yet written; the jsonl
    (written line by line, kept in step with the checkpoints) still has it. Empty when there is no such record."""
    from proxlab.core.stage import read_jsonl
    from proxlab.core.tracking import METRICS, STEP_METRIC, is_training, wandb_name

    config = {}
    for record in (r for piece in records for r in piece if kind_of(r) == "run"):
        config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
        break
    stage, key = config.get("stage"), config.get("key")
    plans = [p.dir.parent.parent / "plan.json" for p in pieces]
    entry = next((e for plan in plans if plan.is_file() for e in json.loads(plan.read_text())
                  if key and e.get("key") == key and e.get("stage") == stage), None)
    if entry is None:
        return {}
    history: dict[int, dict[str, Any]] = {}
    for line in read_jsonl(Path(entry["out_dir"]) / METRICS):
        if line.get("step") is None or {"summary", "table", "image"} & set(line):
            continue
        values = {wandb_name(stage, k): v for k, v in line.items()
                  if k not in ("job", "step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if is_training(stage) or stage == "evaluate":
            values[STEP_METRIC] = line["step"]
        history.setdefault(int(line["step"]), {}).update(values)
    return history


def merge_pieces(pieces: list[Piece], out_root: Path) -> Path:
    """Write the merged run of `pieces` as `out_root/offline-run-<first start>-<id>/` (replacing an earlier merge) with
    the pieces' files linked (or copied) into its `files/`; returns its directory."""
    run_id = pieces[0].run_id
    out = Path(out_root) / f"offline-run-{pieces[0].started}-{run_id}"
    if out.exists():
        shutil.rmtree(out)
    (out / "files").mkdir(parents=True)
    piece_records = [list(read_records(p.file)) for p in pieces]
    records = merge_records(piece_records, stage_history(pieces, piece_records))
    for piece in pieces:
        if (piece.dir / "files").is_dir():
            shutil.copytree(piece.dir / "files", out / "files", dirs_exist_ok=True, copy_function=_link_or_copy)
    write_records(out / f"run-{run_id}.wandb", records)
    return out


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.exists(dst):
        os.unlink(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ---------------------------------------------------------------------------------------------------------------------
# What to upload, uploading it, and the record of what was uploaded


@dataclass
class Upload:
    run_id: str
    pieces: list[Piece]
    fingerprint: list
    path: Path | None = None  # what `wandb sync` gets (set by prepare)


def load_ledger(runs_dir: Path) -> dict[str, Any]:
    path = Path(runs_dir) / SYNC_DIR / LEDGER
    return json.loads(path.read_text()) if path.exists() else {}


def record_uploaded(runs_dir: Path, upload: Upload) -> None:
    from proxlab.core.stage import atomic_write_text, now_iso

    ledger = load_ledger(runs_dir)
    ledger[upload.run_id] = {"pieces": upload.fingerprint, "uploaded": str(upload.path), "time": now_iso()}
    atomic_write_text(Path(runs_dir) / SYNC_DIR / LEDGER, json.dumps(ledger, indent=2, sort_keys=True))


def plan_uploads(runs_dir: Path, sweep: str | None = None, force: bool = False) -> tuple[list[Upload], list[str]]:
    """(the runs to upload, the ids of those already uploaded with the same pieces)."""
    runs_dir = Path(runs_dir)
    ledger = {} if force else load_ledger(runs_dir)
    todo, done = [], []
    for run_id, pieces in find_pieces(runs_dir, sweep).items():
        fingerprint = [p.fingerprint(runs_dir) for p in pieces]
        if ledger.get(run_id, {}).get("pieces") == fingerprint:
            done.append(run_id)
        else:
            todo.append(Upload(run_id, pieces, fingerprint))
    return todo, done


def prepare(runs_dir: Path, upload: Upload) -> Path:
    """The directory `wandb sync` uploads for this run: its only piece, or the pieces merged."""
    if len(upload.pieces) == 1:
        upload.path = upload.pieces[0].dir
    else:
        upload.path = merge_pieces(upload.pieces, Path(runs_dir) / SYNC_DIR)
    return upload.path


def sync_command(run_dir: Path, python: str = sys.executable, force: bool = False) -> list[str]:
    # --include-synced with force: wandb itself skips a file it has uploaded before (its `.wandb.synced` marker)
    return [python, "-m", "wandb", "sync", *(["--include-synced"] if force else []), str(run_dir)]


def sync_runs(runs_dir: Path, uploads: list[Upload], dry_run: bool = False, timeout_s: float = 600.0,
              force: bool = False, python: str = sys.executable) -> list[str]:
    """Merge and upload each run, recording each success; returns one message per failure (empty: all uploaded). Dry
    run: merge and print the commands."""
    failures = []
    server = os.environ.get("WANDB_BASE_URL", DEFAULT_SERVER)
    for upload in uploads:
        try:
            path = prepare(runs_dir, upload)
        except (WandbFileError, OSError) as e:
            failures.append(f"W&B run {upload.run_id}: cannot merge its {len(upload.pieces)} offline directories "
                            f"({', '.join(str(p.dir) for p in upload.pieces)}): {e}")
            continue
        pieces = f" ({len(upload.pieces)} offline directories merged)" if len(upload.pieces) > 1 else ""
        cmd = sync_command(path, python, force)
        print(("[proxlab] would run: " if dry_run else "[proxlab] ") + " ".join(cmd) + pieces, flush=True)
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
            stdout, stderr = proc.communicate()
            last = "\n".join((stdout + stderr).strip().splitlines()[-3:])
            failures.append(f"wandb sync of {path} timed out after {timeout_s:g} s: is the W&B server {server} "
                            "reachable from this machine? (sync from a machine with network access)"
                            + (f"; wandb's last words:\n{last}" if last else ""))
            continue
        output = (stdout + stderr).strip()
        if proc.returncode != 0:
            detail = "\n".join(output.splitlines()[-5:])
            failures.append(f"wandb sync of {path} failed (exit {proc.returncode}):\n{detail}")
            continue
        if output:
            print(output, flush=True)
        record_uploaded(runs_dir, upload)
    return failures


def wandb_sync_main(args: dict[str, str]) -> int:
    """The command: exit status 0 when every run synced (or dry run), 1 otherwise."""
    unknown = sorted(set(args) - {"runs_dir", "sweep", "dry_run", "timeout_s", "force"})
    if unknown:
        raise SystemExit(f"proxlab wandb-sync: unknown option(s) {unknown} "
                         "(runs_dir=PATH sweep=NAME dry_run=true|false timeout_s=SECONDS force=true|false)")
    runs_dir = Path(args.get("runs_dir", "runs")).resolve()
    if not runs_dir.is_dir():
        raise SystemExit(f"proxlab wandb-sync: no runs directory {runs_dir}")
    sweep = args.get("sweep")
    if sweep is not None and not (runs_dir / sweep).is_dir():
        raise SystemExit(f"proxlab wandb-sync: no sweep {sweep!r} under {runs_dir}")
    force = _flag(args, "force")
    uploads, done = plan_uploads(runs_dir, sweep, force)
    where = f"{runs_dir}/{sweep}" if sweep else str(runs_dir)
    print(f"[proxlab] {len(uploads) + len(done)} W&B run(s) under {where}: {len(uploads)} to upload"
          + (f", {len(done)} uploaded before with the same files (force=true uploads them again)" if done else ""),
          flush=True)
    failures = sync_runs(runs_dir, uploads, dry_run=_flag(args, "dry_run"), timeout_s=float(args.get("timeout_s", 600)),
                         force=force)
    for message in failures:
        print(f"[proxlab] {message}", file=sys.stderr, flush=True)
    if failures:
        print(f"[proxlab] {len(failures)} of {len(uploads)} run(s) not synced", file=sys.stderr, flush=True)
    return 1 if failures else 0


def _flag(args: dict[str, str], name: str) -> bool:
    value = args.get(name, "false").lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise SystemExit(f"proxlab wandb-sync: {name}={args[name]!r}: expected true or false")
    return value in ("1", "true", "yes")
