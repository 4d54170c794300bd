"""The `prepare` stage at scale on this machine: memory, speed against a bare read, and ranks.

1. Generates a local corpus of --docs documents (default 1,000,000, about 2.1 GB of jsonl.gz at gzip level 1) in
   --files files: each text is a web document of the shared sample (`<data_dir>/web`, as the default corpus reads it)
   rotated at a random offset, so lengths follow the sample's distribution while no two documents are the same, with
   an id, a url, a date and a score as metadata. Generation runs on every core.
2. A bare read of the same files (`gzip.open` + `orjson.loads` per line, nothing kept) in a subprocess: the speed of
   the disk-and-parse floor, in documents per CPU-second (= per core).
3. `python -m proxlab.refine.prepare --spec` (num_docs: null, every document, docs_per_shard 100,000) as a subprocess
   on 1/10 of the files and on all of them: its peak RSS (`wait4`), documents per CPU-second, and its ratio to the bare
   read (target >= 0.5), so "the same memory at 10x the documents" is visible.
4. The same stage as 4 SPMD ranks (spec.runtime rank/world_size, 4 concurrent subprocesses): the same document ids
   (and the same shard bytes) as 1 task.

    .venv/bin/python benchmarks/bench_prepare.py [--docs 1000000] [--files 80] [--keep] [--dir DIR]

--dir reuses (or creates and keeps) a generated corpus there; --keep keeps the temporary directory. The tests run a
smoke version (--docs 2000).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PYTHON = sys.executable
MAX_RSS_MB = 1536  # the stage must stay under 1.5 GB at any corpus size

_POOL: list[str] | None = None


def web_texts() -> list[str]:
    import orjson

    from proxlab.core.paths import data_dir

    texts = []
    for path in sorted((data_dir() / "web").glob("*.jsonl")):
        if path.name.startswith("dclm_human_quality"):  # labels for refiner evaluation, not corpus text
            continue
        with open(path, "rb") as f:
            for line in f:
                text = orjson.loads(line).get("text")
                if isinstance(text, str) and text.strip():
                    texts.append(text)
    if not texts:
        raise FileNotFoundError(f"no web documents under {data_dir() / 'web'}")
    return texts


def generate_file(job: tuple[str, int, int, int]) -> int:
    """One jsonl.gz file of `n` documents; its size in bytes."""
    import gzip

    import orjson

    global _POOL
    path, index, n, seed = job
    if _POOL is None:
        _POOL = web_texts()
    rng = random.Random(seed * 1_000_003 + index)
    with gzip.open(path, "wb", compresslevel=1) as f:
        batch = []
        for i in range(n):
            text = _POOL[rng.randrange(len(_POOL))]
            k = rng.randrange(len(text))
            batch.append(orjson.dumps({
                "id": f"{index:04d}-{i:07d}-{rng.getrandbits(32):08x}", "text": text[k:] + "\n" + text[:k],
                "url": f"https://www.site{rng.randrange(10 ** 6)}.example/{rng.getrandbits(48):012x}.html",
                "date": f"2023-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:00:00Z",
                "language_score": round(rng.random(), 4)}))
            if len(batch) == 2000 or i == n - 1:
                f.write(b"\n".join(batch) + b"\n")
                batch = []
    return os.path.getsize(path)


def generate(directory: Path, docs: int, files: int, seed: int = 0) -> dict:
    from multiprocessing import Pool

    marker = directory / "bench_corpus.json"
    want = {"docs": docs, "files": files, "seed": seed}
    if marker.exists() and {k: json.loads(marker.read_text()).get(k) for k in want} == want:
        info = json.loads(marker.read_text())
        print(f"reusing the corpus in {directory}: {docs:,} documents, {info['bytes'] / 1e9:.2f} GB", flush=True)
        return info
    shutil.rmtree(directory / "corpus", ignore_errors=True)
    (directory / "corpus").mkdir(parents=True)
    per = [docs // files + (1 if i < docs % files else 0) for i in range(files)]
    jobs = [(str(directory / "corpus" / f"part-{i:04d}.jsonl.gz"), i, per[i], seed) for i in range(files)]
    t0 = time.perf_counter()
    with Pool(os.cpu_count() or 1) as pool:
        sizes = pool.map(generate_file, jobs, chunksize=1)
    info = {**want, "bytes": sum(sizes), "generate_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info))
    print(f"generated {docs:,} documents in {files} files: {info['bytes'] / 1e9:.2f} GB of jsonl.gz in "
          f"{info['generate_s']:.0f} s ({os.cpu_count()} processes)", flush=True)
    return info


# ---------------------------------------------------------------------------------------------------------------------
# Measured subprocesses


def measured(cmd: list[str], log: Path) -> dict:
    """Run `cmd`; its wall time, CPU time (user + sys) and peak RSS, from wait4 (this child only)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    return {"proc": proc, "t0": t0, "log": log}


def finish(run: dict) -> dict:
    _, status, ru = os.wait4(run["proc"].pid, 0)
    run["proc"].returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - run["t0"]
    if code != 0:
        raise RuntimeError(f"exit code {code}; log {run['log']}:\n{run['log'].read_text()[-3000:]}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}


BARE = """
import gzip, sys, orjson
n = 0
for path in sys.argv[1:]:
    with gzip.open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
            n += 1
print(n)
"""


def bare_read(files: list[Path], work: Path, name: str) -> dict:
    res = finish(measured([PYTHON, "-c", BARE, *map(str, files)], work / f"{name}.log"))
    res["docs"] = int((work / f"{name}.log").read_text().split()[-1])
    return res


def stage_spec(corpus: Path, out: Path, path: Path, rank: int, world: int, docs_per_shard: int) -> Path:
    from proxlab.core.stage import StageSpec

    config = {"name": "bench", "source": "local", "path": str(corpus), "include": ["*.jsonl.gz"], "exclude": [],
              "num_docs": None, "sample_fraction": None, "seed": 1, "docs_per_shard": docs_per_shard,
              "on_bad_line": "skip", "min_chars": 1}
    StageSpec(stage="prepare", key="bench", out_dir=str(out), config=config,
              runtime={"rank": rank, "world_size": world}).save(path)
    return path


def prepare(corpus: Path, out: Path, work: Path, name: str, tasks: int, docs_per_shard: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    runs = [measured([PYTHON, "-m", "proxlab.refine.prepare", "--spec",
                      str(stage_spec(corpus, out, work / f"{name}.rank{r}.json", r, tasks, docs_per_shard))],
                     work / f"{name}.rank{r}.log") for r in range(tasks)]
    results = [finish(r) for r in runs]
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall_s": max(r["wall_s"] for r in results), "cpu_s": sum(r["cpu_s"] for r in results),
            "rss_mb": max(r["rss_mb"] for r in results), "docs": manifest["counts"]["docs"],
            "read": manifest["counts"]["docs_read"], "shards": manifest["counts"]["shards"], "out": out}


def ids_and_digest(out: Path) -> tuple[set, str]:
    import hashlib

    from proxlab.core.formats import list_shards, read_ids

    digest = hashlib.sha256()
    for p in list_shards(out):
        digest.update(p.read_bytes())
    return set(read_ids(out)), digest.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000, help="documents in the generated corpus (default 1M)")
    ap.add_argument("--files", type=int, default=None,
                    help="jsonl.gz files (a multiple of 10; default: 80 at 1M documents, fewer for small corpora)")
    ap.add_argument("--tasks", type=int, default=4, help="SPMD ranks of the parallel run (default 4)")
    ap.add_argument("--docs-per-shard", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None, help="keep (and reuse) the generated corpus here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (corpus, outputs, logs)")
    args = ap.parse_args()
    files = args.files or max(10, min(80, args.docs // 12_500 // 10 * 10))
    if files % 10 or args.docs < files:
        ap.error("--files must be a multiple of 10 and at most --docs")
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    root.mkdir(parents=True, exist_ok=True)
    work = root / "work"
    work.mkdir(exist_ok=True)
    try:
        info = generate(root, args.docs, files)
        corpus = root / "corpus"
        all_files = sorted(corpus.glob("*.jsonl.gz"))
        tenth = root / "tenth"  # 1/10 of the files, linked
        shutil.rmtree(tenth, ignore_errors=True)
        tenth.mkdir()
        for p in all_files[: files // 10]:
            (tenth / p.name).symlink_to(p)

        rows = []
        bare_small = bare_read(all_files[: files // 10], work, "bare_tenth")
        small = prepare(tenth, work / "out_tenth", work, "tenth", 1, args.docs_per_shard)
        rows.append(("1/10", small, bare_small))
        shutil.rmtree(small["out"])
        bare = bare_read(all_files, work, "bare_all")
        full = prepare(corpus, work / "out_1", work, "one", 1, args.docs_per_shard)
        rows.append(("all", full, bare))
        ids_one, digest_one = ids_and_digest(full["out"])
        shutil.rmtree(full["out"])
        par = prepare(corpus, work / "out_n", work, "ranks", args.tasks, args.docs_per_shard)
        ids_par, digest_par = ids_and_digest(par["out"])
        shutil.rmtree(par["out"])

        print(f"\ncorpus: {info['docs']:,} documents, {files} files, {info['bytes'] / 1e9:.2f} GB jsonl.gz "
              f"(generated in {info.get('generate_s', 0):.0f} s); {os.cpu_count()} cores; docs_per_shard "
              f"{args.docs_per_shard:,}\n")
        print("| corpus | docs | prepare peak RSS | prepare wall s | prepare CPU s | prepare docs/s per core "
              "| bare gzip+orjson docs/s per core | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        ok = True
        for name, st, b in rows:
            rate, bare_rate = st["docs"] / st["cpu_s"], b["docs"] / b["cpu_s"]
            print(f"| {name} | {st['docs']:,} | {st['rss_mb']:.0f} MB | {st['wall_s']:.1f} | {st['cpu_s']:.1f} | "
                  f"{rate:,.0f} | {bare_rate:,.0f} | {rate / bare_rate:.2f} |")
            ok &= st["rss_mb"] <= MAX_RSS_MB and st["docs"] == b["docs"]
        print(f"\n{args.tasks} SPMD ranks (concurrent subprocesses): wall {par['wall_s']:.1f} s, CPU "
              f"{par['cpu_s']:.1f} s ({par['docs'] / par['cpu_s']:,.0f} docs/s per core), peak RSS per rank "
              f"{par['rss_mb']:.0f} MB")
        same = ids_par == ids_one and len(ids_one) == full["docs"]
        print(f"1 task vs {args.tasks} tasks: {len(ids_one):,} vs {len(ids_par):,} document ids, same set: {same}; "
              f"shard bytes identical: {digest_par == digest_one}")
        ok &= same and par["rss_mb"] <= MAX_RSS_MB
        print(f"peak RSS at 1/10 vs all: {small['rss_mb']:.0f} MB vs {full['rss_mb']:.0f} MB "
              f"(limit {MAX_RSS_MB} MB): {'ok' if max(small['rss_mb'], full['rss_mb']) <= MAX_RSS_MB else 'OVER'}")
        return 0 if ok else 1
    finally:
        if args.keep or args.dir:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
