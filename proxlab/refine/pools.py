"""The paper's pretraining pools (§B.2, Table 7) as file listings: which files of which dataset, in which dumps.

A *pool* names a dataset's document files in the dataset's own layout (the paths under a mirror root made with the
dataset's own download tools, or under the hub repository), the record fields, and the paper's split of those files
into dumps. `corpus.pool` selects one (conf/corpus/*.yaml); `corpus.dumps`, `corpus.num_dumps` and `corpus.dump_seed`
select the dumps; `proxlab.refine.prepare.input_files` lists them for the stage and for its key (one function).

How the pools were built (paper §B.2, Table 7; reference code GAIR-NLP/ProX, its README and `scripts/data_download/`):

- `redpajama_v2`: the reference code's 11,760 document files (84 snapshots × shard ids 0000–0069 × {en_head,
  en_middle}, `<snapshot>/<shard>/<partition>.json.gz`, in its listed order); 8 dumps; one dump is 62.5B tokens
  (Table 2, Fig. 5), two are 123.5B (Fig. 6).
- `fineweb`: `sample/350BT/*.parquet` of HuggingFaceFW/fineweb; 7 dumps, the first two used: 79.0B (Fig. 6).
- `c4`: `en/c4-train.NNNNN-of-01024.json.gz` of allenai/c4 (validation files excluded): 198.0B (Fig. 6, Table 3).
- `openwebmath`: `data/train-*.parquet` of open-web-math/open-web-math: 15.0B (Table 5).
- `fineweb_edu`: `sample/100BT/*.parquet` of HuggingFaceFW/fineweb-edu (our choice: Fig. 6 names no sample); not in
  Table 7.
- `dclm_baseline`: `global-shard_01_of_10/local-shard_*_of_10/shard_*_processed.jsonl.zst` of
  mlfoundations/dclm-baseline-1.0; not in Table 7.

Dumps follow the reference's `reshuffle_data.py`: the files are shuffled and file i of the shuffled order goes to dump
i mod N — a split at file level. The reference shuffled with `random.shuffle` and no seed, so its dumps cannot be
reproduced; here the shuffle is `random.Random(dump_seed)` over the pool's complete listing (never over what a mirror
happens to hold), so the same seed gives the same dumps on every machine, and a missing file never moves another file
into another dump.

Run `python -m proxlab.refine.pools list redpajama_v2 --dumps 0 [--urls]` to print a dump's files (or their download
URLs), e.g. to mirror only the dump a run needs.
"""

from __future__ import annotations

import argparse
import fnmatch
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

# ---------------------------------------------------------------------------------------------------------------------
# RedPajama-V2: the reference code's listing (scripts/data_download/redpj_sample_documents_urls.txt)

RPV2_SNAPSHOTS = (
    "2014-15", "2014-23", "2014-35", "2014-41", "2014-42", "2014-49", "2014-52", "2015-14", "2015-22", "2015-27",
    "2015-32", "2015-35", "2015-40", "2015-48", "2016-07", "2016-18", "2016-22", "2016-26", "2016-30", "2016-36",
    "2016-40", "2016-44", "2016-50", "2017-04", "2017-09", "2017-17", "2017-22", "2017-26", "2017-30", "2017-34",
    "2017-39", "2017-43", "2017-47", "2017-51", "2018-05", "2018-09", "2018-13", "2018-17", "2018-22", "2018-26",
    "2018-30", "2018-34", "2018-39", "2018-43", "2018-47", "2018-51", "2019-04", "2019-09", "2019-13", "2019-18",
    "2019-22", "2019-26", "2019-30", "2019-35", "2019-39", "2019-43", "2019-47", "2019-51", "2020-05", "2020-10",
    "2020-16", "2020-24", "2020-29", "2020-34", "2020-40", "2020-45", "2020-50", "2021-04", "2021-10", "2021-17",
    "2021-21", "2021-25", "2021-31", "2021-39", "2021-43", "2021-49", "2022-05", "2022-21", "2022-27", "2022-33",
    "2022-40", "2022-49", "2023-06", "2023-14",
)
RPV2_SHARDS = 70  # shard ids 0000-0069: the "70 file shards" of §B.2
RPV2_PARTITIONS = ("en_head", "en_middle")
RPV2_URL = "https://data.together.xyz/redpajama-data-v2/v1.0.0/documents"


def rpv2_listing(found: list[str] | None = None) -> list[str]:
    """The 11,760 document files in the reference's listed order: snapshot, then partition (en_head for all 70
    shards, then en_middle), then shard."""
    return [f"{snap}/{shard:04d}/{part}.json.gz" for snap in RPV2_SNAPSHOTS for part in RPV2_PARTITIONS
            for shard in range(RPV2_SHARDS)]


def c4_listing(found: list[str] | None = None) -> list[str]:
    return [f"en/c4-train.{i:05d}-of-01024.json.gz" for i in range(1024)]


_OF_N = re.compile(r"^(?P<dir>.*/)?(?P<stem>[^/]*?)-(?P<i>\d{5})-of-(?P<n>\d{5})(?P<rest>[^/]*)$")


def of_n_canonical(rel: str) -> str:
    """`data/train-00003-of-00114-<hash>.parquet` → `data/train-00003-of-00114*.parquet`: the file's place in the
    listing, whatever its hash suffix (a missing file's suffix is unknown)."""
    m = _OF_N.match(rel)
    return f"{m['dir'] or ''}{m['stem']}-{m['i']}-of-{m['n']}*.{rel.rsplit('.', 1)[-1]}" if m else rel


def of_n_listing(found: list[str]) -> list[str]:
    """Files named `<stem>-<i>-of-<n><rest>` (HF's parquet conversion): the n files 0..n-1 of each stem, by their
    canonical names (`of_n_canonical`)."""
    groups: set[tuple[str, str, int, str]] = set()
    out = set()
    for rel in found:
        m = _OF_N.match(rel)
        if not m:
            out.add(rel)
            continue
        groups.add((m["dir"] or "", m["stem"], int(m["n"]), rel.rsplit(".", 1)[-1]))
    for d, stem, n, ext in groups:
        out.update(f"{d}{stem}-{i:05d}-of-{n:05d}*.{ext}" for i in range(n))
    return sorted(out)


def contiguous_listing(pattern: str, keys: Callable[[re.Match], tuple[str, int]],
                       name: Callable[[str, int], str]) -> Callable[[list[str]], list[str]]:
    """For layouts whose file count is not written in the names (FineWeb's `<rank>_<index>.parquet`, DCLM's
    `shard_<index>_processed.jsonl.zst`): the files found plus every gap in an index sequence that starts at 0 (group,
    index) — a hole is detected, a lost *last* file of a sequence cannot be (docs/refine.md, "Pools")."""
    rx = re.compile(pattern)

    def listing(found: list[str]) -> list[str]:
        seqs: dict[str, set[int]] = {}
        out = set(found)
        for rel in found:
            m = rx.match(rel)
            if m:
                group, i = keys(m)
                seqs.setdefault(group, set()).add(i)
        for group, have in seqs.items():
            out.update(name(group, i) for i in range(max(have) + 1) if i not in have)
        return sorted(out)

    return listing


def fineweb_listing(sample: str) -> Callable[[list[str]], list[str]]:
    """FineWeb's sample folders hold `<rank:03d>_<index:05d>.parquet` (datatrove writer rank, file index): ranks 0..max
    and each rank's indices 0..max are expected."""
    inner = contiguous_listing(rf"^{re.escape(sample)}/(\d{{3}})_(\d{{5}})\.parquet$",
                               lambda m: (m[1], int(m[2])), lambda g, i: f"{sample}/{g}_{i:05d}.parquet")
    ranks = contiguous_listing(rf"^{re.escape(sample)}/(\d{{3}})_00000\.parquet$", lambda m: ("", int(m[1])),
                               lambda g, i: f"{sample}/{i:03d}_00000.parquet")
    return lambda found: ranks(inner(found))


def dclm_listing(found: list[str]) -> list[str]:
    """`global-shard_01_of_10/local-shard_<k>_of_10/shard_<index:08d>_processed.jsonl.zst`: local shards 0..9, each
    with indices 0..max."""
    base = "global-shard_01_of_10"
    inner = contiguous_listing(rf"^{base}/local-shard_(\d+)_of_10/shard_(\d{{8}})_processed\.jsonl\.zst$",
                               lambda m: (m[1], int(m[2])),
                               lambda g, i: f"{base}/local-shard_{g}_of_10/shard_{i:08d}_processed.jsonl.zst")
    out = set(inner(found))
    present = {int(m[1]) for rel in out if (m := re.match(rf"^{base}/local-shard_(\d+)_of_10/", rel))}
    out.update(f"{base}/local-shard_{k}_of_10/shard_00000000_processed.jsonl.zst" for k in range(10)
               if k not in present)
    return sorted(out)


# ---------------------------------------------------------------------------------------------------------------------
# The pools


@dataclass(frozen=True)
class Pool:
    name: str
    title: str
    hf_dataset: str  # the hub repository (for RedPajama-V2 the files themselves are on RPV2_URL)
    pattern: str  # the pool's files under the mirror root (fnmatch on the relative path; `*` crosses `/`)
    text_field: str
    id_field: Optional[str]  # None: the line / row number (the pool's files carry no unique id)
    num_dumps: int
    dump_seed: int
    dumps: tuple[int, ...]  # the dumps the paper used
    # The pool's complete listing given the files found: fixed for RedPajama-V2 and C4, inferred from the names
    # (n of "-of-n", index gaps) otherwise. Its order is the order the dumps are shuffled from.
    listing: Callable[[list[str]], list[str]]
    download: str  # how to make a local mirror with the dataset's own tools
    remote_url: Optional[str] = None  # where the files are when not on the HF hub
    note: str = ""
    # A found file's name in the listing (identity, except names with a hash suffix: `of_n_canonical`).
    canonical: Callable[[str], str] = lambda rel: rel

    def remote(self, revision: str) -> str:
        """The fsspec location of the pool's files for `corpus.source=hf`."""
        return self.remote_url or f"hf://datasets/{self.hf_dataset}@{revision}"


POOLS: dict[str, Pool] = {p.name: p for p in (
    Pool("redpajama_v2", "RedPajama-V2", "togethercomputer/RedPajama-Data-V2", "*/*/en_*.json.gz",
         "raw_content", None, 8, 1234, (0,), rpv2_listing,
         download=("python -m proxlab.refine.pools list redpajama_v2 --dumps 0 --urls > urls.txt; "
                   "wget -x -nH --cut-dirs=3 -i urls.txt -P <mirror>   (the dataset's URL list: "
                   f"{RPV2_URL}/<snapshot>/<shard>/<partition>.json.gz)"),
         remote_url=RPV2_URL,
         note=("The documents hold url, raw_content, title, digest, date_download, source_domain, language, "
               "perplexity, ... and no id: RedPajama's doc_id `<snapshot>/<shard>/<partition>.json.gz/<row>` "
               "(row from 0) is the line number, so a document's id here is `<snapshot>/<shard>/<partition>/<row + 1>`"
               ".")),
    Pool("fineweb", "FineWeb", "HuggingFaceFW/fineweb", "sample/350BT/*.parquet", "text", "id", 7, 1234, (0, 1),
         fineweb_listing("sample/350BT"),
         download=("hf download HuggingFaceFW/fineweb --repo-type dataset --include 'sample/350BT/*' "
                   "--local-dir <mirror>"),
         note="id is the WARC record id (unique)."),
    Pool("c4", "C4", "allenai/c4", "en/c4-train.*-of-01024.json.gz", "text", None, 1, 1234, (0,), c4_listing,
         download=("hf download allenai/c4 --repo-type dataset --include 'en/c4-train.*' --local-dir <mirror>"),
         note="Records hold text, timestamp, url; a url may repeat, so ids are line numbers (url stays in meta)."),
    Pool("openwebmath", "OpenWebMath", "open-web-math/open-web-math", "data/train-*.parquet", "text", None, 1, 1234,
         (0,), of_n_listing,
         download=("hf download open-web-math/open-web-math --repo-type dataset --include 'data/train-*' "
                   "--local-dir <mirror>"),
         canonical=of_n_canonical),
    Pool("fineweb_edu", "FineWeb-Edu", "HuggingFaceFW/fineweb-edu", "sample/100BT/*.parquet", "text", "id", 1, 1234,
         (0,), fineweb_listing("sample/100BT"),
         download=("hf download HuggingFaceFW/fineweb-edu --repo-type dataset --include 'sample/100BT/*' "
                   "--local-dir <mirror>"),
         note=("Fig. 6 trains on FineWeb-Edu but neither the paper nor the reference code says which part: "
               "sample-100BT is the smallest official sample above Fig. 6's 52.4B training tokens (raw < 1 epoch, "
               "as the other raw pools).")),
    Pool("dclm_baseline", "DCLM-baseline", "mlfoundations/dclm-baseline-1.0",
         "global-shard_01_of_10/local-shard_*_of_10/shard_*_processed.jsonl.zst", "text", None, 1, 1234, (0,),
         dclm_listing,
         download=("hf download mlfoundations/dclm-baseline-1.0 --repo-type dataset --include "
                   "'global-shard_01_of_10/*' --local-dir <mirror>"),
         note="zstd-compressed JSON lines (read with the zstandard package); no id field: ids are line numbers."),
)}


def get_pool(name: str) -> Pool:
    try:
        return POOLS[name]
    except KeyError:
        raise ValueError(f"corpus.pool={name!r}: unknown pool; known pools: {sorted(POOLS)}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Dumps and listings


def split_dumps(listing: list[str], num_dumps: int, seed: int) -> list[list[str]]:
    """The reference's reshuffle_data.py with a seed: shuffle the files, file i of that order into dump i mod N."""
    order = list(listing)
    random.Random(seed).shuffle(order)
    return [order[d::num_dumps] for d in range(num_dumps)]


@dataclass(frozen=True)
class PoolListing:
    pool: Pool
    dumps: tuple[int, ...]
    expected: list[str]  # the selected dumps' files (canonical relative paths), in the pool's listing order
    present: list[str]  # the files found of those (their actual relative paths), in the same order
    missing: list[str]  # those not found (canonical names, in listing order)
    complete_listing: int  # files in the whole pool

    def describe_missing(self, where: str, first: int = 5) -> str:
        head = ", ".join(self.missing[:first]) + (", ..." if len(self.missing) > first else "")
        return (f"pool {self.pool.name}: {len(self.missing):,} of the {len(self.expected):,} files of dumps "
                f"{list(self.dumps)} are missing under {where} (first: {head})")


def pool_settings(cfg: Any) -> tuple[Pool, tuple[int, ...], int, int]:
    """(pool, dumps, num_dumps, dump_seed) of a corpus config (CorpusConfig or a DictConfig node)."""
    pool = get_pool(cfg.pool)
    num_dumps = int(getattr(cfg, "num_dumps", None) or pool.num_dumps)
    seed = getattr(cfg, "dump_seed", None)
    seed = pool.dump_seed if seed is None else int(seed)
    dumps = getattr(cfg, "dumps", None)
    dumps = tuple(range(num_dumps)) if dumps is None else tuple(int(d) for d in dumps)
    bad = [d for d in dumps if not 0 <= d < num_dumps]
    if bad or not dumps or len(set(dumps)) != len(dumps):
        raise ValueError(f"corpus.dumps={list(dumps)}: expected distinct dump indices in [0, {num_dumps}) "
                         f"(corpus.num_dumps={num_dumps})")
    return pool, dumps, num_dumps, seed


def select(pool: Pool, found: list[str], dumps: tuple[int, ...], num_dumps: int, seed: int) -> PoolListing:
    """The files of `dumps` given the pool files `found` (relative paths matching the pool's pattern)."""
    complete = pool.listing(found)
    chosen = set()
    for d, files in enumerate(split_dumps(complete, num_dumps, seed)):
        if d in dumps:
            chosen.update(files)
    expected = [rel for rel in complete if rel in chosen]
    have = {pool.canonical(rel): rel for rel in found}
    return PoolListing(pool, dumps, expected, [have[r] for r in expected if r in have],
                       [r for r in expected if r not in have], len(complete))


def has_fixed_listing(pool: Pool) -> bool:
    """RedPajama-V2's and C4's complete listings are known without looking at any file."""
    return pool.listing in (rpv2_listing, c4_listing)


def matches(pool: Pool, rel: str) -> bool:
    return fnmatch.fnmatchcase(rel, pool.pattern)


def local_found(pool: Pool, root: Path) -> list[str]:
    """The pool's files under a mirror root (relative posix paths): the fixed listing's files that exist (a stat
    each), else every file matching the pattern."""
    if not root.is_dir():
        raise FileNotFoundError(f"pool {pool.name}: mirror root {root} is not a directory (corpus.path, or "
                                f"<data_dir>/pools/{pool.name}); make one with: {pool.download}")
    if has_fixed_listing(pool):
        return [rel for rel in pool.listing([]) if (root / rel).is_file()]
    parts = pool.pattern.split("/")
    fixed = []
    for part in parts:  # walk only below the literal leading folders of the pattern
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    base = root.joinpath(*fixed[:-1]) if len(fixed) == len(parts) else root.joinpath(*fixed)
    if not base.exists():
        return []
    return sorted(rel for p in base.rglob("*") if p.is_file()
                  and matches(pool, rel := p.relative_to(root).as_posix()))


def remote_filesystem(pool: Pool, revision: str) -> tuple[Any, str]:
    """(fsspec filesystem, base path) of the pool's files on its hub (the HF hub; RedPajama-V2: its URL)."""
    import fsspec

    url = pool.remote(revision)
    fs, base = fsspec.core.url_to_fs(url)
    return fs, (url if pool.remote_url else base).rstrip("/")


def remote_found(pool: Pool, fs: Any, base: str) -> list[str]:
    """The pool's files on the hub: the fixed listing (no request needed), else a glob of the pattern."""
    if has_fixed_listing(pool):
        return pool.listing([])
    return sorted(p[len(base) + 1:] for p in fs.glob(f"{base}/{pool.pattern}") if matches(pool, p[len(base) + 1:]))


# ---------------------------------------------------------------------------------------------------------------------
# Paper Table 7: pool sizes, effective training tokens and epochs per experiment (billions of tokens)


@dataclass(frozen=True)
class Table7Row:
    experiment: str  # the paper table the experiment reproduces (proxlab.report.paper.TABLES / exp paper_table)
    pool: str
    variant: str  # raw | rules | doc | prox
    description: str  # Table 7's words
    corpus_b: Optional[float]  # "Corpora size (B)"; None where Table 7 prints "-"
    train_b: float  # "Effective train tokens (B)"
    epochs: Optional[float]  # as printed (two rows differ from train / corpus: see NOTES)
    refiner: Optional[str] = None  # the refiner's size preset where Table 7 names one (Fig. 5 rows)
    models: Optional[tuple[str, ...]] = None  # the model presets of the row's block (Table 5: 1.1B vs 7B)
    dumps: Optional[tuple[int, ...]] = None  # RedPajama-V2: how many dumps the row's corpus holds


_7B = ("llama2_7b", "codellama_7b", "mistral_7b")
TABLE7: tuple[Table7Row, ...] = (
    Table7Row("table2", "redpajama_v2", "raw", "raw data size", 62.5, 26.2, 0.42, dumps=(0,)),
    Table7Row("table2", "redpajama_v2", "rules", "after rule-based filtering", 31.5, 26.2, 0.83, dumps=(0,)),
    Table7Row("table2", "redpajama_v2", "doc", "after ProX-D", 19.0, 26.2, 1.38, dumps=(0,)),
    Table7Row("table2", "redpajama_v2", "prox", "after ProX-D+C", 16.0, 26.2, 1.64, dumps=(0,)),
    Table7Row("table3", "c4", "raw", "random", None, 26.2, None),
    Table7Row("table3", "c4", "doc", "after ProX-D (GPT-NeoX tokens)", 41.5, 26.2, 0.63),
    Table7Row("fig5", "redpajama_v2", "raw", "raw data size", 62.5, 26.2, 0.42, dumps=(0,)),
    Table7Row("fig5", "redpajama_v2", "prox", "after ProX-D+C (using ProX-xs)", 14.5, 26.2, 1.80, "tlm_xs",
              dumps=(0,)),
    Table7Row("fig5", "redpajama_v2", "prox", "after ProX-D+C (using ProX-s)", 16.0, 26.2, 1.64, "tlm_s", dumps=(0,)),
    Table7Row("fig5", "redpajama_v2", "prox", "after ProX-D+C (using ProX-m)", 18.0, 26.2, 1.46, "tlm_m", dumps=(0,)),
    Table7Row("fig6", "c4", "raw", "raw data size", 198.0, 52.4, 0.53),
    Table7Row("fig6", "c4", "prox", "after ProX-D+C (using ProX-xs)", 44.5, 52.4, 1.18, "tlm_xs"),
    Table7Row("fig6", "redpajama_v2", "raw", "raw data size", 123.5, 52.4, 0.42, dumps=(0, 1)),
    Table7Row("fig6", "redpajama_v2", "prox", "after ProX-D+C (using ProX-xs)", 29.0, 52.4, 1.81, "tlm_xs",
              dumps=(0, 1)),
    Table7Row("fig6", "fineweb", "raw", "raw data size", 79.0, 52.4, 0.66),
    Table7Row("fig6", "fineweb", "prox", "after ProX-D+C (using ProX-xs)", 18.0, 52.4, 2.91, "tlm_xs"),
    Table7Row("table5", "openwebmath", "raw", "raw data size", 15.0, 15.7, 1.05, models=("tinyllama_1b",)),
    Table7Row("table5", "openwebmath", "rules", "after rule-based filtering", 6.5, 15.7, 2.40,
              models=("tinyllama_1b",)),
    Table7Row("table5", "openwebmath", "doc", "after ProX-D", 5.5, 15.7, 2.85, models=("tinyllama_1b",)),
    Table7Row("table5", "openwebmath", "prox", "after ProX-D+C", 4.7, 15.7, 3.49, models=("tinyllama_1b",)),
    Table7Row("table5", "openwebmath", "raw", "raw data size", 15.0, 10.5, 0.70, models=_7B),
    Table7Row("table5", "openwebmath", "doc", "after ProX-D", 5.5, 10.5, 1.91, models=_7B),
    Table7Row("table5", "openwebmath", "prox", "after ProX-D+C", 4.7, 10.5, 2.23, models=_7B),
)
TABLE7_NOTES = ("Table 7 prints C4 raw (Fig. 6) as 0.53 epochs, but 52.4 / 198.0 = 0.26; and OpenWebMath 1.1B "
                "after ProX-D+C as 3.49, but 15.7 / 4.7 = 3.34.")


def table7_rows(experiment: str | None, pool: str | None, variant: str, refiner: str | None = None,
                model: str | None = None, dumps: tuple[int, ...] | None = None) -> list[Table7Row]:
    """Table 7's rows for an experiment (its paper table), pool, variant, refiner size and model preset."""
    if not experiment or not pool:
        return []
    return [r for r in TABLE7 if r.experiment == experiment and r.pool == pool and r.variant == variant
            and (r.refiner is None or refiner is None or r.refiner == refiner)
            and (r.models is None or model in r.models)
            and (r.dumps is None or dumps is None or len(r.dumps) == len(dumps))]


# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proxlab.refine.pools", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("show", help="the pools")
    ls = sub.add_parser("list", help="a pool's files of some dumps (from its complete listing, or a mirror's)")
    ls.add_argument("pool", choices=sorted(POOLS))
    ls.add_argument("--dumps", type=int, nargs="*", default=None, help="default: the dumps the paper used")
    ls.add_argument("--num-dumps", type=int, default=None)
    ls.add_argument("--seed", type=int, default=None)
    ls.add_argument("--mirror", type=Path, default=None, help="list from a mirror (needed where the names do not "
                                                               "tell the complete listing)")
    ls.add_argument("--urls", action="store_true", help="print download URLs (RedPajama-V2's host, or the HF hub)")
    args = ap.parse_args(argv)
    if args.cmd == "show":
        for p in POOLS.values():
            print(f"{p.name:<14} {p.title:<14} {p.hf_dataset:<36} {p.pattern}  ({p.num_dumps} dumps, paper used "
                  f"{list(p.dumps)})")
        return 0
    pool = POOLS[args.pool]
    dumps = tuple(args.dumps) if args.dumps is not None else pool.dumps
    if not args.mirror and not has_fixed_listing(pool):
        ap.error(f"pool {pool.name}: its complete listing is read from the files' names: pass --mirror DIR (a mirror, "
                 f"e.g. from: {pool.download})")
    found = local_found(pool, args.mirror) if args.mirror else pool.listing([])
    listing = select(pool, found, dumps, args.num_dumps or pool.num_dumps,
                     pool.dump_seed if args.seed is None else args.seed)
    base = pool.remote_url or f"https://huggingface.co/datasets/{pool.hf_dataset}/resolve/main"
    for rel in listing.expected:
        print(f"{base}/{rel}" if args.urls else rel)
    if listing.missing and args.mirror:
        print(listing.describe_missing(str(args.mirror)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
