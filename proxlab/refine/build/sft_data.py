"""Stage `refiner.sft_data`: teacher annotations (a `refiner.annotate` artifact) become SFT examples for the doc- and
chunk-level refiners, in the refiners' program interface and in exactly the prompt format the refine stage sends.

Inputs: `annotations` (`doc-NNNNN.parquet`, `chunk-NNNNN.parquet`), `tokenizer` (a directory with the refiner's
`tokenizer.json`: the base model's, which the refiner keeps). Outputs:

    doc/train.jsonl  doc/val.jsonl  chunk/train.jsonl  chunk/val.jsonl  stats.json

one example per line: id, level, chunk (null at doc level), prompt, answer, text, prompt_ids, answer_ids.

* Doc level: the annotation's `label` when the teacher set one (rules teacher), else Eq. 2 on the teacher's scores
  (`labels.eq2_keep`); excluded and undecidable rows are counted and left out. Answer `keep_doc()` / `drop_doc()`.
* Chunk level: each noise program is parsed by the strict parser, checked against its chunk (line ranges inside the
  chunk, normalize sources present in it) and rejected whole on any error (counted per kind); the accepted programs
  of a chunk are merged (`merge`), re-emitted in the refiner interface (`remove_lines(line_start=, line_end=)`,
  `normalize(source_str=, target_str=)`, `keep_chunk()`), and capped by removal ratio.
* Prompts: `generate.PromptBuilder` with the level's chat format, truncation and chunk window, i.e. the refine stage's
  own code; the chunk text the annotation stored must give the same ids as the builder's own chunking of the document,
  else the stage fails (the annotation was chunked with another window or tokenizer).
* Split by document: hash(split_seed, id), so every chunk of a document is on one side.

The choices the paper leaves open are in docs/refiners.md ("SFT data: labels, merge, cap, split").
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from proxlab.core.config import GenerateConfig, SFTDataConfig, SFTPromptConfig, check_sft_data, load
from proxlab.core.formats import list_shards
from proxlab.core.logs import get_logger
from proxlab.core.sharding import ShardStats
from proxlab.core.stage import StageResult, StageSpec, atomic_write_text, stage_cli
from proxlab.refine.build.labels import eq2_keep
from proxlab.refine.programs import DEFAULT_MAX_PROGRAM_CHARS, FAILURE_KINDS, parse_program

logger = get_logger("refiner.sft_data")

DOC_SHARDS, CHUNK_SHARDS = "doc", "chunk"  # refiner.annotate's file prefixes
KEEP_DOC, DROP_DOC, KEEP_CHUNK = "keep_doc()", "drop_doc()", "keep_chunk()"
NOOP_CALLS = frozenset({"untouch_doc", "keep_chunk", "skip_chunk", "keep_doc"})
NOISE_ORDER = ("navigation", "url", "footer")  # the order of the paper's prompts (Figs. 10-12); others follow, sorted
COMPAT_UNSAFE = ('"', "\\", ",", ")", "=", "\n", "\r")  # what the reference executor misreads inside a string
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class Example:
    id: str
    level: str
    chunk: int | None
    prompt: str
    answer: str
    text: str
    prompt_ids: list[int]
    answer_ids: list[int]


# ---------------------------------------------------------------------------------------------------------------------
# Prompts and answers, encoded as the refine stage encodes them


class Encoder:
    """The refine stage's prompt builder for one level plus the answer encoding (ids + EOS)."""

    def __init__(self, prompt_cfg: SFTPromptConfig, level: str, tokenizer):
        from proxlab.refine.generate import PromptBuilder

        self.level = level
        self.tokenizer = tokenizer
        self.builder = PromptBuilder(GenerateConfig(**asdict(prompt_cfg)), level, tokenizer)
        self.eos = getattr(tokenizer, "eos_token_id", None)
        if self.eos is None:
            raise ValueError("refiner.sft_data: the tokenizer (input `tokenizer`) has no eos_token_id; answers "
                             "must end with it so the refiner learns to stop")

    def answer_ids(self, answer: str) -> list[int]:
        from proxlab.refine.prompts import encode_prompt

        return encode_prompt(answer, self.tokenizer) + [self.eos]


# ---------------------------------------------------------------------------------------------------------------------
# Doc level


def doc_label(row: dict[str, Any]) -> tuple[bool | None, str | None]:
    """(keep?, why not usable). The teacher's own label wins; else Eq. 2 on the scores."""
    if row.get("excluded"):
        return None, f"excluded/{row['excluded']}"
    label = row.get("label")
    if label is not None:
        if label not in ("keep", "drop"):
            return None, "bad_label"
        return label == "keep", None
    keep = eq2_keep(row.get("edu_score"), row.get("format_score"))
    return keep, None if keep is not None else "undecidable"


def doc_examples(rows: Iterable[dict[str, Any]], cfg: SFTDataConfig, enc: Encoder, counts: Counter) -> list[Example]:
    from proxlab.refine.prompts import render_doc_prompt_text

    out = []
    for row in rows:
        keep, why = doc_label(row)
        if keep is None:
            counts[f"doc/{why}"] += 1
            continue
        prompt_ids, truncated = enc.builder.doc_prompt(row["text"])
        if truncated:
            counts["doc/prompt_truncated"] += 1
            if cfg.doc_truncated == "skip":
                counts["doc/skipped_truncated"] += 1
                continue
        answer = KEEP_DOC if keep else DROP_DOC
        example = Example(row["id"], "doc", None, render_doc_prompt_text(row["text"], enc.tokenizer,
                                                                         enc.builder.chat_format),
                          answer, row["text"], prompt_ids, enc.answer_ids(answer))
        if len(example.prompt_ids) + len(example.answer_ids) > cfg.max_seq_len:
            counts["doc/skipped_too_long"] += 1
            continue
        counts[f"doc/label_{'keep' if keep else 'drop'}"] += 1
        out.append(example)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Chunk level: check, map, merge, cap


@dataclass
class ChunkProgram:
    """The accepted calls of one noise program, in the refiner interface's terms."""

    ranges: list[tuple[int, int]]  # remove_lines, global inclusive
    normalizations: list[tuple[str, str]]


def check_program(program: str | None, start: int, end: int, lines: list[str],
                  kinds: Counter) -> ChunkProgram | None:
    """Strict-parse a teacher program and check it against its chunk (lines start..end of the document); None when
    rejected, each failure kind counted in `kinds`. Comments and code fences are the parser's to skip."""
    if program is None or not program.strip():
        kinds["empty_program"] += 1
        return None
    parse_kinds = dict.fromkeys(FAILURE_KINDS, 0)
    calls, errors = parse_program(program, DEFAULT_MAX_PROGRAM_CHARS, parse_kinds)
    found = Counter({k: n for k, n in parse_kinds.items() if n})
    ranges, normalizations = [], []
    chunk_lines = lines[start: end + 1]
    for call in calls:
        name = call[0]
        if name in NOOP_CALLS:
            continue
        if name == "drop_doc":
            found["wrong_level"] += 1
        elif name == "remove_all":  # not in the teacher prompts: the whole chunk
            ranges.append((start, end))
        elif name == "remove_lines":
            if call[1] < start or call[2] > end:
                found["line_out_of_range"] += 1
            else:
                ranges.append((call[1], call[2]))
        elif name == "normalize":
            if not any(call[1] in line for line in chunk_lines):
                found["normalize_source_not_found"] += 1  # the paper's "non-existent target removal"
            else:
                normalizations.append((call[1], call[2]))
    if not calls and not errors:
        found["empty_program"] += 1
    if found:
        kinds.update(found)
        return None
    return ChunkProgram(ranges, normalizations)


def merge_union(programs: list[ChunkProgram]) -> ChunkProgram:
    """All calls: remove_lines ranges merged (overlapping and adjacent ones join), normalize calls in program order
    without repeats. No calls left: the chunk is kept (`keep_chunk()`)."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(r for p in programs for r in p.ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    normalizations = list(dict.fromkeys(n for p in programs for n in p.normalizations))
    return ChunkProgram(merged, normalizations)


def removal_ratio(program: ChunkProgram, start: int, end: int, lines: list[str], unit: str) -> float:
    """Share of the chunk (lines start..end, without their [NNN] numbers) that the program's removed lines hold."""
    def size(line: str) -> int:
        return len(line.split()) if unit == "words" else 1 if unit == "lines" else len(line)

    removed = {i for a, b in program.ranges for i in range(a, b + 1)}
    total = sum(size(lines[i]) for i in range(start, end + 1))
    gone = sum(size(lines[i]) for i in removed)
    if total == 0:
        return 1.0 if removed else 0.0
    return gone / total


def _literal(value: str) -> str:
    # JSON string syntax is a subset of Python's: always a valid double-quoted literal.
    return json.dumps(value, ensure_ascii=False)


def render_answer(program: ChunkProgram) -> str:
    """The refiner interface (docs/programs.md): one call per line, removals first."""
    calls = [f"remove_lines(line_start={a}, line_end={b})" for a, b in program.ranges]
    calls += [f"normalize(source_str={_literal(s)}, target_str={_literal(t)})" for s, t in program.normalizations]
    return "\n".join(calls) or KEEP_CHUNK


def _noise_rank(noise: str) -> tuple[int, str]:
    return (NOISE_ORDER.index(noise), "") if noise in NOISE_ORDER else (len(NOISE_ORDER), noise)


class ChunkBuilder:
    """Chunk examples of one document from its annotation rows."""

    def __init__(self, cfg: SFTDataConfig, enc: Encoder, counts: Counter, kinds: Counter, ratios: list[float]):
        self.cfg, self.enc, self.counts, self.kinds, self.ratios = cfg, enc, counts, kinds, ratios

    def __call__(self, doc_id: str, text: str, rows: list[dict[str, Any]], where: str) -> list[Example]:
        from proxlab.refine.prompts import render_chunk_prompt

        stage_rows, stage_prompts = self.enc.builder.rows([{"id": doc_id, "text": text}], ShardStats())
        by_index = {r["chunk_index"]: (r, p) for r, p in zip(stage_rows, stage_prompts) if p is not None}
        lines = text.split("\n")
        by_chunk: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_chunk[row["chunk"]].append(row)
        out = []
        for k in sorted(by_chunk):
            annotations = sorted(by_chunk[k], key=lambda r: _noise_rank(r["noise"]))
            if k not in by_index:
                raise RuntimeError(f"{where}: document {doc_id!r} chunk {k} does not exist when the refine stage "
                                   f"chunks it (chunk.chunk_tokens={self.enc.builder.chunk_tokens}, overlong_line="
                                   f"{self.enc.builder.overlong!r}): the annotations were chunked differently")
            stage_row, prompt_ids = by_index[k]
            chunk_text = annotations[0]["text"]
            prompt = render_chunk_prompt(chunk_text, self.enc.tokenizer, self.enc.builder.chat_format)
            if self.enc.builder.chunk_prompt_ids(prompt) != prompt_ids:
                raise RuntimeError(f"{where}: document {doc_id!r} chunk {k}: the annotation's chunk text does not "
                                   f"encode to the refine stage's prompt for that chunk (chunked with another window "
                                   f"or tokenizer?); training would drift from inference")
            example = self._example(doc_id, k, stage_row, lines, annotations, prompt, prompt_ids, chunk_text)
            if example is not None:
                out.append(example)
        return out

    def _example(self, doc_id, k, stage_row, lines, annotations, prompt, prompt_ids, chunk_text) -> Example | None:
        start, end = stage_row["start_line"], stage_row["end_line"]
        accepted = []
        for row in annotations:
            self.counts["chunk/programs"] += 1
            if row.get("excluded"):
                self.counts[f"chunk/excluded/{row['excluded']}"] += 1
                continue
            program = check_program(row.get("program"), start, end, lines, self.kinds)
            if program is None:
                self.counts["chunk/programs_rejected"] += 1
                continue
            if self.cfg.compat_safe_normalize:
                safe = [n for n in program.normalizations if not any(c in s for s in n for c in COMPAT_UNSAFE)]
                self.counts["chunk/normalize_unsafe_for_compat"] += len(program.normalizations) - len(safe)
                program.normalizations = safe
            accepted.append(program)
        if not accepted:
            self.counts["chunk/no_valid_program"] += 1
            return None
        merged = merge_union(accepted)
        ratio = removal_ratio(merged, start, end, lines, self.cfg.removal_unit)
        if self.cfg.max_removal_ratio is not None and ratio > self.cfg.max_removal_ratio:
            self.counts["chunk/over_cap"] += 1
            return None
        answer = render_answer(merged)
        calls, errors = parse_program(answer)
        if errors:  # our own rendering must pass the parser the refine stage applies it with
            raise AssertionError(f"refiner.sft_data rendered an answer the strict parser rejects: {answer!r}")
        example = Example(doc_id, "chunk", k, prompt, answer, chunk_text, prompt_ids, self.enc.answer_ids(answer))
        if len(prompt_ids) + len(example.answer_ids) > self.cfg.max_seq_len:
            self.counts["chunk/skipped_too_long"] += 1
            return None
        self.ratios.append(ratio)
        self.counts["chunk/keep_chunk" if answer == KEEP_CHUNK else "chunk/edits"] += 1
        self.counts["chunk/calls"] += len(calls)
        return example


# ---------------------------------------------------------------------------------------------------------------------
# Split and output


def split_key(seed: int, doc_id: str) -> float:
    """A document's place in [0, 1): the split depends on nothing but the seed and the id."""
    digest = hashlib.sha256(f"{seed}\x00{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def val_ids(examples: list[Example], val_size: float, seed: int) -> set[str]:
    """Validation documents: a fraction (< 1) of the documents, or the documents with the smallest keys until
    `val_size` examples are reached (all chunks of a document go together, so it may exceed it by a few)."""
    ids = sorted({e.id for e in examples}, key=lambda i: (split_key(seed, i), i))
    if val_size < 1:
        return {i for i in ids if split_key(seed, i) < val_size}
    per_doc = Counter(e.id for e in examples)
    chosen, n = set(), 0
    for doc_id in ids:
        if n >= val_size:
            break
        chosen.add(doc_id)
        n += per_doc[doc_id]
    return chosen


def write_jsonl(path: Path, examples: list[Example]) -> None:
    """Streamed to a temporary name, then renamed: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_rows(directory: Path, prefix: str) -> list[tuple[Path, list[dict[str, Any]]]]:
    return [(p, pq.read_table(p).to_pylist()) for p in list_shards(directory, prefix)]


def ratio_summary(ratios: list[float], unit: str) -> dict[str, Any]:
    if not ratios:
        return {"unit": unit, "n": 0}
    ordered = sorted(ratios)
    q = {f"p{round(x * 100)}": ordered[min(len(ordered) - 1, int(x * len(ordered)))] for x in QUANTILES}
    return {"unit": unit, "n": len(ratios), "mean": statistics.fmean(ratios), **q, "max": ordered[-1],
            "nonzero": sum(1 for r in ratios if r > 0)}


def balance_chunks(chunks: list[Example], per_edit: float | None, seed: int, counts: Counter) -> list[Example]:
    """Every chunk example that edits, and at most `per_edit` keep_chunk() examples for each: those with the smallest
    sha256(seed, id, chunk), so the choice is fixed by the data and the seed (counted `chunk/keep_chunk_dropped`)."""
    if per_edit is None:
        return chunks
    keeps = [e for e in chunks if e.answer == KEEP_CHUNK]
    room = int(per_edit * (len(chunks) - len(keeps)))
    chosen = {id(e) for e in sorted(keeps, key=lambda e: hashlib.sha256(f"{seed}:{e.id}:{e.chunk}".encode())
                                    .hexdigest())[:room]}
    counts["chunk/keep_chunk_dropped"] = len(keeps) - len(chosen)
    return [e for e in chunks if e.answer != KEEP_CHUNK or id(e) in chosen]


# ---------------------------------------------------------------------------------------------------------------------
# The stage


def main(spec: StageSpec) -> StageResult:
    from proxlab.refine.backends.base import load_tokenizer

    cfg = load(SFTDataConfig, spec.config, spec.runtime.get("settings"))
    check_sft_data(cfg)
    annotations = spec.input("annotations")
    doc_shards, chunk_shards = read_rows(annotations, DOC_SHARDS), read_rows(annotations, CHUNK_SHARDS)
    if not doc_shards:
        raise FileNotFoundError(f"refiner.sft_data: no {DOC_SHARDS}-NNNNN.parquet in the annotations {annotations}")
    tokenizer = load_tokenizer(str(spec.input("tokenizer")))
    counts: Counter = Counter()
    kinds: Counter = Counter()
    ratios: list[float] = []

    doc_rows = [r for _, rows in doc_shards for r in rows]
    docs = doc_examples(doc_rows, cfg, Encoder(cfg.doc, "doc", tokenizer), counts)

    texts = {r["id"]: r["text"] for r in doc_rows}
    build = ChunkBuilder(cfg, Encoder(cfg.chunk, "chunk", tokenizer), counts, kinds, ratios)
    chunks: list[Example] = []
    for path, rows in chunk_shards:
        by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_doc[row["id"]].append(row)
        for doc_id, doc_rows_of_chunks in by_doc.items():
            if doc_id not in texts:
                raise RuntimeError(f"{path}: chunk annotations of document {doc_id!r}, which no {DOC_SHARDS}-*.parquet "
                                   f"of {annotations} holds")
            chunks += build(doc_id, texts[doc_id], doc_rows_of_chunks, str(path))

    chunks = balance_chunks(chunks, cfg.keep_chunk_per_edit, cfg.split_seed, counts)
    stats: dict[str, Any] = {"config": asdict(cfg)}
    for level, examples in (("doc", docs), ("chunk", chunks)):
        val = val_ids(examples, cfg.val_size, cfg.split_seed)
        parts = {"train": [e for e in examples if e.id not in val], "val": [e for e in examples if e.id in val]}
        for part, items in parts.items():
            write_jsonl(spec.out / level / f"{part}.jsonl", items)
            counts[f"{level}/{part}"] = len(items)
            counts[f"{level}/{part}_tokens"] = sum(len(e.prompt_ids) + len(e.answer_ids) for e in items)
        if level == "doc":
            stats["doc"] = {part: dict(Counter("keep" if e.answer == KEEP_DOC else "drop" for e in items))
                            for part, items in parts.items()}
        else:
            stats["chunk"] = {part: dict(Counter("keep_chunk" if e.answer == KEEP_CHUNK else "edits" for e in items))
                              for part, items in parts.items()}
    n_chunks = counts["chunk/train"] + counts["chunk/val"]
    stats["removal_ratio"] = ratio_summary(ratios, cfg.removal_unit)
    stats["calls_per_chunk_example"] = counts["chunk/calls"] / n_chunks if n_chunks else 0.0
    stats["rejects"] = dict(sorted(kinds.items()))
    stats["counts"] = dict(sorted(counts.items()))
    atomic_write_text(spec.out / "stats.json", json.dumps(stats, indent=2, sort_keys=True))
    logger.info(f"refiner.sft_data: doc {counts['doc/train']} train + {counts['doc/val']} val "
                f"({counts['doc/label_keep']} keep, {counts['doc/label_drop']} drop); chunk {counts['chunk/train']} "
                f"train + {counts['chunk/val']} val; {counts['chunk/programs_rejected']} of "
                f"{counts['chunk/programs']} programs rejected, {counts['chunk/over_cap']} over the removal cap")
    result_counts = {k: float(v) for k, v in counts.items()}
    result_counts.update({f"reject/{k}": float(v) for k, v in kinds.items()})
    return StageResult(counts=result_counts, extra={"removal_ratio": stats["removal_ratio"]})


if __name__ == "__main__":
    stage_cli(main)
