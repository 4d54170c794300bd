"""Stage refiner.annotate: the answer parsers, the rules teacher's line rules on real web documents, the stage with
the rules teacher (file contract, Eq. 2 / rules labels, chunking as the refine stage, seeds, resumption), and the LLM
teacher for real (SmolLM2-135M-Instruct, the paper's prompts, hf backend) including the excluded-fraction failure."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from proxlab.core.config import AnnotateConfig, RulesConfig
from proxlab.core.stage import is_complete, run_stage
from proxlab.refine.build import annotate
from proxlab.refine.build.prompts import CHUNK_PROMPTS, EDU_PROMPT, FORMAT_PROMPT, fill
from proxlab.refine.build.teachers import extract_program, line_noise, parse_score, rules_program
from proxlab.refine.chunking import Chunk, chunk_document, hf_token_counter
from tiny_model import WEB, make_spec, write_doc_shards

DOLMA = WEB / "dolma_cc_2019_30_html_extracted_sample.jsonl"


def dolma(i: int) -> str:
    with open(DOLMA) as f:
        for k, line in enumerate(f):
            if k == i:
                return json.loads(line)["text"]
    raise IndexError(i)


@pytest.mark.parametrize("answer,kind,expected", [
    ("The extract is basic. Educational score: 3", "edu", (3, None)),
    ("Justification ... Extraction Quality Score: **4**", "format", (4, None)),
    ("I would give it a total score of 2 points.", "edu", (2, None)),
    ("Score: 1 at first; after review, Educational score: 0", "edu", (0, None)),  # the last one counts
    ("Educational score: 7", "edu", (None, "edu_out_of_range")),
    ("Educational score: 3.5", "edu", (None, "edu_out_of_range")),
    ("Conclude with the score using the format: Educational score: <total points>", "edu", (None, "edu_no_score")),
    ("", "format", (None, "format_no_score")),
])
def test_parse_score(answer, kind, expected):
    assert parse_score(answer, kind) == expected


@pytest.mark.parametrize("answer,expected", [
    ("The doc has a link.\n```python\n# line 13 is http\nremove_lines(start=13, end=13)\n```\nDone.",
     ("# line 13 is http\nremove_lines(start=13, end=13)", None)),
    ("‘‘‘python\nuntouch_doc()\n‘‘‘", ("untouch_doc()", None)),  # the prompts' printed fence
    ("```python\nremove_lines(start=0, end=2)\n```\nAnother:\n```python\nuntouch_doc()\n```", ("untouch_doc()", None)),
    ("```python\nnormalize(source_str=\"http://a.b\", target_str=\"\")\nremove_lines(start=",  # cut at max_new_tokens
     ("normalize(source_str=\"http://a.b\", target_str=\"\")\nremove_lines(start=", "program_syntax_error")),
    ("remove_lines(start=1, end=1)", ("remove_lines(start=1, end=1)", None)),  # no fence: the whole answer
    ("This text has no navigation bar.", ("This text has no navigation bar.", "program_syntax_error")),
    ("```python\nprint('hello')\n```", ("print('hello')", "program_missing")),
    ("", ("", "program_missing")),
])
def test_extract_program(answer, expected):
    assert extract_program(answer) == expected


def test_prompts_are_the_papers():
    """Spot checks of the verbatim texts (the full comparison with the paper's Figs. 9-12 is how they were made)."""
    assert EDU_PROMPT.startswith("Below is an extract from a web page. Evaluate whether the page has a high")
    assert EDU_PROMPT.endswith("- Conclude with the score using the format: “Educational score: <total points>”")
    assert "if the extract highly relevant" in EDU_PROMPT  # the paper's missing "is"
    assert FORMAT_PROMPT.endswith('"Extraction Quality Score: <total points>"')
    assert list(CHUNK_PROMPTS) == ["navigation", "url", "footer"]
    assert "remove_lines(start=13, end=13)" in CHUNK_PROMPTS["url"] and "‘‘‘python" in CHUNK_PROMPTS["footer"]
    filled = fill(CHUNK_PROMPTS["navigation"], "[doc]\n[000]x\n[/doc]")
    assert "Example: [doc]\n[000]x\n[/doc].\nAfter examining the web text:" in filled


def _program(text: str) -> str:
    lines = text.split("\n")
    return rules_program(Chunk(0, len(lines) - 1, (), 0), lines, line_noise(lines))


def test_line_rules_on_real_documents():
    wiki = dolma(1)  # a DokuWiki page: "User Tools", "Site Tools" menus at the top, "Last modified" footer
    assert line_noise(wiki.split("\n")) == {4: "navigation", 6: "navigation", 31: "footer"}
    assert _program(wiki) == "remove_lines(start=4, end=6)\nremove_lines(start=31, end=31)"
    library = dolma(34)  # URL-only lines between the record's fields
    assert {i: k for i, k in line_noise(library.split("\n")).items()} == {14: "url", 17: "url"}
    assert _program(library) == "remove_lines(start=14, end=17)"  # the empty lines between join the ranges
    wikidot = dolma(47)  # "Search the site" menu, Creative Commons footer
    assert line_noise(wikidot.split("\n")) == {0: "navigation", 30: "footer"}
    skip = dolma(51)  # "Skip to main content", standalone buttons
    noise = line_noise(skip.split("\n"))
    assert noise[0] == "navigation" and noise[44] == "button"
    journal = dolma(59)  # a URL inside two sentences is cut out (once: normalize replaces every occurrence)
    assert _program(journal) == 'normalize(source_str="http://journal.um.ac.id/index.php/jip", target_str="")'
    blog = dolma(6)  # a clean blog post
    assert line_noise(blog.split("\n")) == {} and _program(blog) == "untouch_doc()"


def test_rules_program_uses_global_line_numbers():
    lines = ["Home | News | Sport | Weather", "A long first sentence of the article that has real content."] + [
        "More of the article text goes here, with enough words to count."] * 3 + ["© 2024 Example Corp."]
    noise = line_noise(lines)
    assert noise == {0: "navigation", 5: "footer"}
    assert rules_program(Chunk(0, 2, (), 0), lines, noise) == "remove_lines(start=0, end=0)"
    assert rules_program(Chunk(3, 5, (), 0), lines, noise) == "remove_lines(start=5, end=5)"


def spec_for(tmp_path, docs, tokenizer, name="out", **cfg):
    return make_spec("refiner.annotate", tmp_path / name, cfg, docs=docs, tokenizer=tokenizer)


def test_rules_teacher_stage(tmp_path, llama_dir):
    from proxlab.refine.backends.base import load_tokenizer
    from proxlab.refine.rules import apply_filters, build_filters

    texts = [dolma(i) for i in (0, 1, 6, 26, 34, 35, 47, 48)]
    docs = write_doc_shards(tmp_path / "docs", texts, per_shard=3)  # shards of 3, 3, 2
    spec = spec_for(tmp_path, docs, llama_dir, teacher="rules", num_docs=7, chunk_tokens=400)
    result = run_stage(annotate.main, spec)
    out = spec.out
    assert is_complete(out) and sorted(p.name for p in out.glob("*.parquet")) == [
        f"{kind}-{i:05d}.parquet" for kind in ("chunk", "doc") for i in range(3)]
    doc_rows = [r for i in range(3) for r in pq.read_table(out / f"doc-{i:05d}.parquet").to_pylist()]
    assert [r["id"] for r in doc_rows] == [f"doc-{i:04d}" for i in range(7)]  # the first num_docs seeds, in order
    assert pq.read_schema(out / "doc-00000.parquet").names == annotate.ANNOTATION_DOC_SCHEMA.names
    filters = build_filters(RulesConfig())
    for row, text in zip(doc_rows, texts):
        assert row["text"] == text and row["teacher"] == "rules" and row["excluded"] is None
        assert row["label"] == ("drop" if apply_filters(filters, text, row["id"])[1] else "keep")
        assert row["edu_score"] is None and row["edu_raw"] is None
    kept = [r["id"] for r in doc_rows if r["label"] == "keep"]
    assert 0 < len(kept) < 7

    chunk_rows = [r for i in range(3) for r in pq.read_table(out / f"chunk-{i:05d}.parquet").to_pylist()]
    assert sorted({r["id"] for r in chunk_rows}) == kept  # chunks of the kept documents only
    counter = hf_token_counter(load_tokenizer(str(llama_dir)))
    for doc_id in kept:
        chunks = chunk_document(texts[int(doc_id[-4:])], counter, 400)
        rows = [r for r in chunk_rows if r["id"] == doc_id]
        assert [(r["chunk"], r["text"]) for r in rows] == [(k, c.text) for k, c in enumerate(chunks)]
        assert all(r["noise"] == "rules" and r["excluded"] is None and r["program"] for r in rows)
    assert any("remove_lines(start=" in r["program"] for r in chunk_rows)

    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["docs_in"] == 7 and stats["counts"]["docs_kept"] == len(kept)
    assert result.counts["chunk_rows"] == len(chunk_rows) and result.counts["excluded/doc"] == 0

    # resumable: a lost shard is redone alone, the others are not touched
    before = (out / "doc-00000.parquet").stat().st_mtime_ns
    for name in ("_SUCCESS", "shard-00001.json", "doc-00001.parquet"):
        (out / name).unlink()
    run_stage(annotate.main, spec)
    assert (out / "doc-00000.parquet").stat().st_mtime_ns == before and (out / "doc-00001.parquet").exists()


def test_bad_config_and_missing_tokenizer_fail_clearly(tmp_path):
    docs = write_doc_shards(tmp_path / "docs", [dolma(6)], per_shard=1)
    with pytest.raises(ValueError, match="teacher='judge'"):
        run_stage(annotate.main, make_spec("refiner.annotate", tmp_path / "a", {"teacher": "judge"}, docs=docs))
    with pytest.raises(ValueError, match="no `tokenizer` input"):
        run_stage(annotate.main, make_spec("refiner.annotate", tmp_path / "b", {"teacher": "rules"}, docs=docs))


# ---------------------------------------------------------------------------------------------------------------------
# The LLM teacher for real: SmolLM2-135M-Instruct, hf backend, greedy, short answers


@pytest.fixture(scope="module")
def smollm2():
    from proxlab.models.smollm2 import ensure_smollm2

    return str(ensure_smollm2())


def llm_config(model: str, max_new_tokens: int, **kw):
    return {"teacher": "llm", "llm": {"backend": "hf", "model": model, "dtype": "float32",
                                      "max_new_tokens": max_new_tokens, "max_prompt_tokens": 1024, "threads": 2},
            **kw}


@pytest.mark.slow  # ~75 s on 2 shared cores: 4 scoring + 3 few-shot program prompts (~1K tokens each) on CPU
def test_llm_teacher_scores_and_programs(tmp_path, smollm2, llama_dir):
    from proxlab.refine.build.teachers import LLMTeacher
    from proxlab.core.config import load
    from proxlab.core.sharding import ShardStats

    texts = [dolma(6)[:400], dolma(1)[:300]]
    docs = write_doc_shards(tmp_path / "docs", texts, per_shard=2)
    spec = spec_for(tmp_path, docs, llama_dir, max_excluded_fraction=1.0, **llm_config(smollm2, 24))
    result = run_stage(annotate.main, spec)
    rows = pq.read_table(spec.out / "doc-00000.parquet").to_pylist()
    assert [r["id"] for r in rows] == ["doc-0000", "doc-0001"]
    for r in rows:
        assert r["teacher"] == f"llm:{smollm2}" and r["label"] is None and r["edu_raw"] and r["format_raw"]
        assert (r["edu_score"], None if r["excluded"] is None or not r["excluded"].startswith("edu")
                else r["excluded"]) == parse_score(r["edu_raw"], "edu")
    assert result.counts["teacher_calls"] >= 4 and result.counts["output_tokens"] > 0
    assert result.flops["annotate"] > 0

    # the three chunk prompts on one chunk, with the same teacher settings
    teacher = LLMTeacher(load(AnnotateConfig, llm_config(smollm2, 12)))
    try:
        lines = ["Home | About | Contact", "http://example.com/a", "A real sentence about the harbour and its boats."]
        chunk = Chunk(0, 2, tuple(f"[{i:03d}]{s}" for i, s in enumerate(lines)), 0)
        stats = ShardStats()
        (anns,) = teacher.annotate_chunks("\n".join(lines), [chunk], stats)
    finally:
        teacher.close()
    assert [a.noise for a in anns] == ["navigation", "url", "footer"] and stats.extra["teacher_calls"] == 3
    for a in anns:
        assert a.program is not None and a.excluded in (None, "program_missing", "program_syntax_error")


def test_too_many_excluded_answers_fail_the_stage(tmp_path, smollm2, llama_dir):
    """One-token answers hold no score: every doc row is excluded, and the stage fails naming the fraction."""
    docs = write_doc_shards(tmp_path / "docs", [dolma(6)[:400], dolma(26)[:400], dolma(35)[:400]], per_shard=3)
    spec = spec_for(tmp_path, docs, llama_dir, max_excluded_fraction=0.5, **llm_config(smollm2, 1))
    with pytest.raises(RuntimeError) as err:
        run_stage(annotate.main, spec)
    message = str(err.value)
    assert "3/3 = 100.0% of the doc rows are excluded, more than max_excluded_fraction=50.0%" in message
    assert message.count("edu_no_score: teacher wrote") == 3
    assert not is_complete(spec.out)
    rows = pq.read_table(spec.out / "doc-00000.parquet").to_pylist()  # the annotations stay for inspection
    assert [r["excluded"] for r in rows] == ["edu_no_score"] * 3
