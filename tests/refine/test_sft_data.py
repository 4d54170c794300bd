"""Stage refiner.sft_data on hand-written refiner.annotate artifacts (real web documents, the Llama-2 tokenizer the
refiners keep): Eq. 2 and teacher labels, program checks and rejects per kind, the union merge, the removal cap, the
document-level split, the length rule, and prompts identical (text and ids) to the refine stage's own builder."""

from __future__ import annotations

import json
from dataclasses import asdict

import pyarrow as pa
import pytest

from proxlab.core.config import GenerateConfig, SFTPromptConfig
from proxlab.core.formats import shard_name, write_parquet
from proxlab.core.sharding import ShardStats
from proxlab.core.stage import run_stage
from proxlab.refine.build import sft_data
from proxlab.refine.chunking import chunk_document, hf_token_counter
from proxlab.refine.generate import PromptBuilder
from proxlab.refine.programs import run_chunk_programs
from proxlab.refine.prompts import render_doc_prompt_text
from tiny_model import make_spec, web_texts

# refiner.annotate's files (docs/refiners.md; the contract of issue 14)
DOC_ANN = pa.schema([("id", pa.string()), ("text", pa.string()), ("teacher", pa.string()), ("label", pa.string()),
                     ("edu_score", pa.int32()), ("format_score", pa.int32()), ("edu_raw", pa.string()),
                     ("format_raw", pa.string()), ("excluded", pa.string())])
CHUNK_ANN = pa.schema([("id", pa.string()), ("chunk", pa.int32()), ("text", pa.string()), ("noise", pa.string()),
                       ("teacher", pa.string()), ("program", pa.string()), ("excluded", pa.string())])
CHUNK_TOKENS = 200
NAV = "Home | News | Sport | Weather | Contact us"
FOOTER = ["Share this: Facebook Twitter Email", "Copyright 2019 The Daily Example. All rights reserved."]


def doc_row(i, text, label=None, edu=None, fmt=None, excluded=None, teacher="llm"):
    return {"id": f"doc-{i:04d}", "text": text, "teacher": teacher, "label": label, "edu_score": edu,
            "format_score": fmt, "edu_raw": None if edu is None else f"Educational score: {edu}",
            "format_raw": None if fmt is None else f"Format score: {fmt}", "excluded": excluded}


def chunks_of(text, tokenizer):
    return chunk_document(text, hf_token_counter(tokenizer), CHUNK_TOKENS, "own_chunk")


@pytest.fixture(scope="module")
def texts():
    bodies = web_texts(12, max_chars=1500)
    # navigation on top, footer below, short enough for one chunk (the other documents have several)
    noisy = "\n".join([NAV, *bodies[0][:400].split("\n"), *FOOTER])
    return [noisy, *bodies[1:]]


def write_annotations(directory, doc_rows, chunk_rows):
    write_parquet(directory / shard_name("doc", 0), doc_rows, DOC_ANN)
    write_parquet(directory / shard_name("chunk", 0), chunk_rows, CHUNK_ANN)
    return directory


def sft_config(**kw):
    prompt = {**asdict(SFTPromptConfig()), "chunk_tokens": CHUNK_TOKENS}
    return {"doc": dict(prompt), "chunk": dict(prompt), **kw}


def run(tmp_path, llama_dir, annotations, name="out", **kw):
    spec = make_spec("refiner.sft_data", tmp_path / name, sft_config(**kw), annotations=annotations,
                     tokenizer=llama_dir)
    return spec.out, run_stage(sft_data.main, spec)


def read(out, level):
    return {part: [json.loads(line) for line in (out / level / f"{part}.jsonl").read_text().splitlines()]
            for part in ("train", "val")}


def chunk_annotations(text, tokenizer, doc_id, programs_by_chunk):
    """Rows for every chunk of a document: {chunk index: [(noise, program, excluded)]}."""
    rows = []
    for k, chunk in enumerate(chunks_of(text, tokenizer)):
        for noise, program, excluded in programs_by_chunk.get(k, [("navigation", "untouch_doc()", None)]):
            rows.append({"id": doc_id, "chunk": k, "text": chunk.text, "noise": noise, "teacher": "llm",
                         "program": program, "excluded": excluded})
    return rows


@pytest.fixture(scope="module")
def built(tmp_path_factory, llama_dir, llama_tokenizer, texts):
    tmp = tmp_path_factory.mktemp("sft")
    docs = [doc_row(0, texts[0], edu=3, fmt=2), doc_row(1, texts[1], label="keep", teacher="rules"),
            doc_row(2, texts[2], label="drop", teacher="rules"), doc_row(3, texts[3], edu=2, fmt=4),
            doc_row(4, texts[4], edu=2, fmt=3), doc_row(5, texts[5], edu=2),
            doc_row(6, texts[6], edu=1, fmt=5), doc_row(7, texts[7], excluded="edu_no_score"),
            *[doc_row(i, texts[i], edu=4, fmt=4) for i in range(8, 12)]]
    chunks0 = chunks_of(texts[0], llama_tokenizer)
    n = len(texts[0].split("\n"))
    assert len(chunks0) == 1 and chunks0[0].lines[-1].endswith(FOOTER[1])
    word = texts[0].split("\n")[1].split()[0]  # a word of the first body line, for a normalize call
    chunk_rows = chunk_annotations(texts[0], llama_tokenizer, "doc-0000", {
        0: [("navigation", "```python\n# the whole line-[000] is navigation\nremove_lines(start=0, end=0)\n```", None),
            ("url", "untouch_doc()", None),
            ("footer", "remove_lines(start=0, end=", None),  # truncated: syntax error
            ("url", f'normalize(source_str="{word}", target_str="")', None),
            ("footer", f"# Remove the footer section\nremove_lines(start={n - 2}, end={n - 1})", None),
            ("footer", f"remove_lines(start={n - 2}, end={n + 5})", None),  # past the chunk
            ("url", 'normalize(source_str="http://not.in.the/chunk", target_str="")', None),
            ("navigation", None, "teacher_error"),
            ("url", "os.system('rm -rf /')", None)],
    })
    # doc 1 (rules teacher): its first chunk is removed entirely -> over the removal cap
    chunks1 = chunks_of(texts[1], llama_tokenizer)
    chunk_rows += chunk_annotations(texts[1], llama_tokenizer, "doc-0001", {
        0: [("rules", f"remove_lines(line_start={chunks1[0].start_line}, line_end={chunks1[0].end_line})", None)]})
    for i in (3, 8, 9, 10, 11):
        chunk_rows += chunk_annotations(texts[i], llama_tokenizer, f"doc-{i:04d}", {})
    annotations = write_annotations(tmp / "annotations", docs, chunk_rows)
    out, result = run(tmp, llama_dir, annotations, val_size=0.3)
    return {"out": out, "result": result, "annotations": annotations, "tmp": tmp, "chunks0": chunks0,
            "word": word, "n": n}


def test_doc_labels_eq2_teacher_label_and_exclusions(built):
    out, c = built["out"], built["result"].counts
    examples = {e["id"]: e for part in read(out, "doc").values() for e in part}
    assert {i: e["answer"] for i, e in examples.items()} == {
        "doc-0000": "keep_doc()", "doc-0001": "keep_doc()", "doc-0002": "drop_doc()", "doc-0003": "keep_doc()",
        "doc-0004": "drop_doc()", "doc-0006": "drop_doc()",
        **{f"doc-{i:04d}": "keep_doc()" for i in range(8, 12)}}
    assert (c["doc/undecidable"], c["doc/excluded/edu_no_score"]) == (1, 1)
    assert (c["doc/label_keep"], c["doc/label_drop"]) == (7, 3)
    stats = json.loads((out / "stats.json").read_text())
    assert sum(stats["doc"]["train"].values()) + sum(stats["doc"]["val"].values()) == 10


def test_chunk_programs_checked_mapped_merged_and_capped(built, llama_tokenizer):
    out, c, chunks0 = built["out"], built["result"].counts, built["chunks0"]
    examples = {(e["id"], e["chunk"]): e for part in read(out, "chunk").values() for e in part}
    first = examples[("doc-0000", 0)]
    # union: both removals (merged ranges), the accepted normalize; untouch_doc(), comments and fences gone
    n = built["n"]
    assert first["answer"] == (f'remove_lines(line_start=0, line_end=0)\nremove_lines(line_start={n - 2}, '
                               f'line_end={n - 1})\nnormalize(source_str="{built["word"]}", target_str="")')
    assert first["text"] == chunks0[0].text
    assert ("doc-0001", 0) not in examples and c["chunk/over_cap"] == 1  # the whole chunk removed: > 0.5 of its words
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rejects"] == {"syntax_error": 1, "line_out_of_range": 1, "normalize_source_not_found": 1,
                                "not_a_call": 1}
    assert c["chunk/programs_rejected"] == 4 and c["chunk/excluded/teacher_error"] == 1
    assert 0 < stats["removal_ratio"]["max"] <= 0.5 and stats["removal_ratio"]["unit"] == "words"
    # every answer ends with EOS after the answer's own ids
    for e in examples.values():
        assert e["answer_ids"][-1] == llama_tokenizer.eos_token_id
        assert e["answer_ids"][:-1] == llama_tokenizer.encode(e["answer"], add_special_tokens=False)
    assert c["chunk/edits"] == 1 and c["chunk/keep_chunk"] == len(examples) - 1


def test_answers_execute_alike_in_both_modes(built, texts):
    examples = [e for part in read(built["out"], "chunk").values() for e in part if e["id"] == "doc-0000"]
    outputs = [e["answer"] for e in examples]
    strict = run_chunk_programs(texts[0], outputs, mode="strict")
    compat = run_chunk_programs(texts[0], outputs, mode="compat")
    assert strict.errors == compat.errors == 0
    assert strict.text == compat.text and NAV not in strict.text and FOOTER[1] not in strict.text
    assert strict.removed_lines == [0, *range(len(texts[0].split("\n")) - 2, len(texts[0].split("\n")))]


def test_prompts_equal_the_refine_stage_builder(built, llama_tokenizer, texts):
    """The cannot-drift guarantee: text and ids as the refine stage's PromptBuilder makes them."""
    gen = GenerateConfig(**{**asdict(SFTPromptConfig()), "chunk_tokens": CHUNK_TOKENS})
    doc_builder = PromptBuilder(gen, "doc", llama_tokenizer)
    chunk_builder = PromptBuilder(gen, "chunk", llama_tokenizer)
    by_id = {f"doc-{i:04d}": t for i, t in enumerate(texts)}
    doc_examples = [e for part in read(built["out"], "doc").values() for e in part]
    for e in doc_examples:
        assert e["prompt"] == render_doc_prompt_text(by_id[e["id"]], llama_tokenizer, "auto")
        assert e["prompt_ids"] == doc_builder.doc_prompt(by_id[e["id"]])[0]
        assert e["prompt"].startswith("<s>[INST] <<SYS>>") and e["text"] == by_id[e["id"]]
    chunk_examples = [e for part in read(built["out"], "chunk").values() for e in part]
    assert len(chunk_examples) >= 6
    for e in chunk_examples:
        rows, prompts = chunk_builder.rows([{"id": e["id"], "text": by_id[e["id"]]}], ShardStats())
        assert e["prompt_ids"] == prompts[e["chunk"]]
        assert e["prompt_ids"] == llama_tokenizer.encode(e["prompt"], add_special_tokens=False)
        assert e["prompt"].endswith(f"[doc]\n{e['text']}\n[/doc] [/INST]")


def test_split_by_document_deterministic_and_sized(built, llama_dir):
    out = built["out"]
    for level in ("doc", "chunk"):
        parts = read(out, level)
        train, val = ({e["id"] for e in parts[p]} for p in ("train", "val"))
        assert train and val and not train & val  # all chunks of a document on one side
    assert {e["id"] for e in read(out, "doc")["val"]} & {e["id"] for e in read(out, "chunk")["val"]} == \
        {e["id"] for e in read(out, "chunk")["val"]}  # the same documents are validation at both levels
    again, _ = run(built["tmp"], llama_dir, built["annotations"], name="again", val_size=0.3)
    for level in ("doc", "chunk"):
        for part in ("train", "val"):
            assert (again / level / f"{part}.jsonl").read_bytes() == (out / level / f"{part}.jsonl").read_bytes()
    counted, result = run(built["tmp"], llama_dir, built["annotations"], name="count", val_size=3)
    assert 3 <= result.counts["doc/val"] <= 3 and result.counts["chunk/val"] >= 3


def test_length_rule_and_chunking_drift(built, llama_dir, llama_tokenizer, texts):
    lengths = sorted(len(e["prompt_ids"]) + len(e["answer_ids"])
                     for level in ("doc", "chunk") for part in read(built["out"], level).values() for e in part)
    limit = lengths[len(lengths) // 2]
    short, result = run(built["tmp"], llama_dir, built["annotations"], name="short", max_seq_len=limit)
    c = result.counts
    kept = [len(e["prompt_ids"]) + len(e["answer_ids"])
            for level in ("doc", "chunk") for part in read(short, level).values() for e in part]
    assert sorted(kept) == [n for n in lengths if n <= limit]  # exactly the longer examples are skipped, never cut
    assert c["doc/skipped_too_long"] + c.get("chunk/skipped_too_long", 0) == len(lengths) - len(kept) > 0
    # annotations chunked with another window: the stage fails, naming the document and the setting
    other = chunk_document(texts[8], hf_token_counter(llama_tokenizer), 60, "own_chunk")
    assert [c.text for c in other] != [c.text for c in chunks_of(texts[8], llama_tokenizer)]
    rows = [{"id": "doc-0008", "chunk": k, "text": ch.text, "noise": "navigation", "teacher": "llm",
             "program": "untouch_doc()", "excluded": None} for k, ch in enumerate(other)]
    bad = write_annotations(built["tmp"] / "bad_annotations", [doc_row(8, texts[8], edu=4, fmt=4)], rows)
    with pytest.raises(RuntimeError, match="doc-0008.* chunk"):
        run(built["tmp"], llama_dir, bad, name="bad")


def test_bad_config_names_the_key(tmp_path, llama_dir, built):
    with pytest.raises(ValueError, match="refiner.sft_data.removal_unit"):
        run(tmp_path, llama_dir, built["annotations"], removal_unit="tokens")
