"""The two refiner-building data stages chained for real: `refiner.annotate` (rules teacher) writes what
`refiner.sft_data` reads, with no hand-written file in between; the SFT examples carry both labels and real chunk
programs in the refiner interface, parsed by the strict parser, and ids that end with EOS."""

from __future__ import annotations

import json
from dataclasses import asdict

from proxlab.core.config import SFTPromptConfig
from proxlab.core.stage import run_stage
from proxlab.refine.build import annotate, sft_data
from proxlab.refine.programs import parse_program
from tiny_model import make_spec, web_texts, write_doc_shards

CHUNK_TOKENS = 400


def test_annotate_then_sft_data(tmp_path, llama_dir, llama_tokenizer):
    texts = web_texts(24)
    docs = write_doc_shards(tmp_path / "docs", texts, per_shard=8)
    ann = make_spec("refiner.annotate", tmp_path / "annotations",
                    {"teacher": "rules", "num_docs": 24, "chunk_tokens": CHUNK_TOKENS}, docs=docs, tokenizer=llama_dir)
    assert run_stage(annotate.main, ann) is not None
    prompt = {**asdict(SFTPromptConfig()), "chunk_tokens": CHUNK_TOKENS}
    sft = make_spec("refiner.sft_data", tmp_path / "sft", {"doc": dict(prompt), "chunk": dict(prompt),
                                                            "val_size": 0.25},
                    annotations=ann.out, tokenizer=llama_dir)
    result = run_stage(sft_data.main, sft)
    assert result is not None
    rows = {level: [json.loads(line) for part in ("train", "val")
                    for line in (sft.out / level / f"{part}.jsonl").read_text().splitlines()]
            for level in ("doc", "chunk")}
    answers = {r["answer"] for r in rows["doc"]}
    assert answers <= {"keep_doc()", "drop_doc()"} and len(rows["doc"]) == 24 - result.counts.get("doc/excluded", 0)
    assert rows["chunk"], "the kept documents' chunks became examples"
    eos = llama_tokenizer.eos_token_id
    assert all(r["answer_ids"][-1] == eos for level in rows for r in rows[level])
    removing = [r for r in rows["chunk"] if "remove_lines(line_start=" in r["answer"]]
    assert removing, "the rules teacher's removals reach the SFT targets in the refiner interface"
    for r in rows["chunk"]:
        calls, errors = parse_program(r["answer"])
        assert calls and errors == 0, r["answer"]
    # keep_chunk_per_edit: every editing example stays, keep_chunk() examples are cut to that many per edit
    balanced = make_spec("refiner.sft_data", tmp_path / "balanced", {**sft.config, "keep_chunk_per_edit": 1.0},
                         annotations=ann.out, tokenizer=llama_dir)
    counts = run_stage(sft_data.main, balanced).counts
    rows_b = [json.loads(line) for part in ("train", "val")
              for line in (balanced.out / "chunk" / f"{part}.jsonl").read_text().splitlines()]
    edits = [r for r in rows["chunk"] if r["answer"] != "keep_chunk()"]
    keeps_b = [r for r in rows_b if r["answer"] == "keep_chunk()"]
    assert len(rows_b) - len(keeps_b) == len(edits) and len(keeps_b) == min(len(edits), len(rows["chunk"]) - len(edits))
    assert counts["chunk/keep_chunk_dropped"] == len(rows["chunk"]) - len(rows_b)
