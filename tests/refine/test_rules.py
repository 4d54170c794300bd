"""The rules variants: datatrove's Gopher repetition + quality, C4 (with its line removals) and FineWeb filters, on real
web documents and on hand-written ones each rule must drop or edit; every drop counted per filter and per reason,
every id kept or dropped exactly once."""

import json

import pyarrow.parquet as pq
import pytest

from proxlab.core.config import RulesConfig
from proxlab.core.formats import DOC_SCHEMA, iter_docs, shard_name, write_parquet
from proxlab.core.stage import StageSpec, run_stage
from proxlab.refine import rules
from tiny_model import WEB, web_texts

PROSE = [
    "The town council met on Tuesday evening to discuss the future of the old stone bridge over the river.",
    "Engineers told the members that the structure has become unsafe and that repairs would cost more than expected.",
    "Several residents spoke in favour of keeping the bridge open to walkers and cyclists while the work goes on.",
    "Others argued that a new crossing would serve the growing neighbourhood on the east bank much better.",
    "After a long debate, the council agreed to ask the regional government for help with the funding.",
    "A final decision is expected in the spring, once the detailed survey of the foundations has been completed.",
]
GOOD = "\n".join(PROSE)  # every filter keeps it, unedited
BANNER = "Subscribe to our newsletter to get the latest stories from the valley delivered to your inbox every week."
# A paragraph repeated: Gopher's repetition rules drop it (dup_para_frac), Gopher's quality rules alone keep it.
REPETITIVE = "\n\n".join(PROSE[:3] + [BANNER] * 3 + PROSE[3:] + [BANNER] * 2)
JS_LINE = "Please enable JavaScript in your browser to see the comments."
SHORT_LINE = "Home"
NO_PUNCT_LINE = "Posted by the editorial team on the third of May"
POLICY_LINE = "This site uses cookies to improve your experience."
# Lines C4 removes (javascript, < 3 words, cookie policy, and with its terminal-punctuation rule the unpunctuated one).
C4_LINES = "\n".join(PROSE[:3] + [JS_LINE, SHORT_LINE, NO_PUNCT_LINE, POLICY_LINE] + PROSE[3:])
LOREM = "\n".join(PROSE + ["Lorem ipsum dolor sit amet, consectetur adipiscing elit."])  # C4 drops the page
CURLY = GOOD + "\nThe function f() { return 1; } was shown on the screen during the meeting last week."
# Headlines without terminal punctuation: Gopher and C4 without its punctuation rule keep it, FineWeb drops it.
HEADLINES = "\n".join([
    "The history of the old bridge and the people who built it over the river",
    "How the town council plans to pay for the repairs to the stone crossing",
    "Residents of the east bank ask for a new route to the market and the station",
    "Why the engineers think that the foundations need a detailed survey this year",
    "A guide to the walking paths that run along both banks of the slow river",
    "What the regional government said about the funding for the new crossing",
    "Photographs of the bridge from the archive of the local history society",
    "The cyclists who use the bridge every day to reach the schools in the centre",
])
HAND = {"good": GOOD, "repetitive": REPETITIVE, "c4_lines": C4_LINES, "lorem": LOREM, "curly": CURLY,
        "headlines": HEADLINES, "short": PROSE[0] + " " + PROSE[1]}  # < 50 words: Gopher quality drops it

RULES = {"filters": ["gopher", "c4", "fineweb"], "c4_terminal_punct": False}  # conf/refine/rules.yaml
needs_web = pytest.mark.skipif(not WEB.is_dir(), reason="shared web data absent")


def real_docs(n=40):
    return [{"id": f"web{i}", "text": t} for i, t in enumerate(web_texts(n))]


def hand_docs():
    return [{"id": k, "text": v} for k, v in HAND.items()]


def run(tmp_path, filters, docs=None, **kw):
    docs = hand_docs() if docs is None else docs
    src = tmp_path / "docs"
    half = len(docs) // 2
    write_parquet(src / shard_name("docs", 0), docs[:half], DOC_SCHEMA)
    write_parquet(src / shard_name("docs", 1), docs[half:], DOC_SCHEMA)
    cfg = {"filters": filters, "c4_terminal_punct": True, "write_dropped": True, "language": "eng", **kw}
    spec = StageSpec(stage="refine.rules", key="k", out_dir=str(tmp_path / "out"), config=cfg,
                     inputs={"docs": str(src)}, logger={"backend": "none", "mode": "disabled"})
    run_stage(rules.main, spec)
    return spec.out


def outputs(out):
    kept = {r["id"]: r["text"] for r in iter_docs(out)}
    dropped = {r["id"]: r["reason"] for r in iter_docs(out, prefix="dropped")}
    return kept, dropped


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def assert_accounted(out, docs):
    """Every input kept or dropped exactly once; drops per filter and per reason add up to all drops."""
    kept = [r["id"] for r in iter_docs(out)]
    dropped = [r["id"] for r in iter_docs(out, prefix="dropped")]
    assert sorted(kept + dropped) == sorted(d["id"] for d in docs)  # no id twice, none lost
    m = manifest(out)
    counts, extra = m["counts"], m["extra"]
    assert counts["docs_in"] == len(docs) and counts["docs_out"] == len(kept)
    by_reason = {k[len("dropped/"):]: v for k, v in counts.items() if k.startswith("dropped/")}
    by_filter = {k[len("dropped_by_filter/"):]: v for k, v in counts.items() if k.startswith("dropped_by_filter/")}
    assert sum(by_reason.values()) == sum(by_filter.values()) == len(dropped)
    assert by_reason == extra["dropped_by_reason"] and by_filter == extra["dropped_by_filter"]
    assert set(by_filter) == set(extra["filters"])  # every filter of the stage, 0 when it dropped nothing
    for name, n in by_filter.items():
        assert n == sum(v for r, v in by_reason.items() if r.startswith(name + ":"))
    return by_filter, by_reason


# ---------------------------------------------------------------------------------------------------------------------
# Which datatrove filters each rule set runs


def test_rule_sets_expand_to_datatrove_filters_in_finewebs_order():
    assert rules.filter_steps(["gopher"]) == ["gopher_rep", "gopher_qual"]
    assert rules.filter_steps(["gopher", "c4", "fineweb"]) == list(rules.STEPS) == [
        "gopher_rep", "gopher_qual", "c4", "fineweb"]  # datatrove examples/fineweb.py
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    built = rules.build_filters(RulesConfig(**RULES))
    assert [(n, type(f)) for n, f in built] == [
        ("gopher_rep", GopherRepetitionFilter), ("gopher_qual", GopherQualityFilter), ("c4", C4QualityFilter),
        ("fineweb", FineWebQualityFilter)]
    assert built[2][1].filter_no_terminal_punct is False  # FineWeb's C4 setting
    assert rules.build_filters(RulesConfig(filters=["c4"]))[0][1].filter_no_terminal_punct is True  # original C4
    assert all(f.language == "fra" for _, f in rules.build_filters(RulesConfig(filters=["gopher"], language="fra")))


def test_variant_files_name_the_paper_rule_sets():
    assert rules.variant_rules("rules_gopher").filters == ["gopher"]
    assert rules.variant_rules("rules_c4") == RulesConfig(filters=["c4"], c4_terminal_punct=True)
    assert rules.variant_rules("rules_fineweb").filters == ["fineweb"]
    assert rules.variant_rules("rules") == RulesConfig(**RULES)
    with pytest.raises(FileNotFoundError, match="rules_dolma"):
        rules.variant_rules("rules_dolma")


def test_unknown_or_repeated_filter_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown filter.*'dolma'"):
        run(tmp_path, ["dolma"])
    with pytest.raises(ValueError, match="gopher_rep.*twice"):
        rules.filter_steps(["gopher", "gopher_rep"])


# ---------------------------------------------------------------------------------------------------------------------
# Each rule on documents it must drop or edit


def test_gopher_runs_repetition_then_quality(tmp_path):
    out = run(tmp_path, ["gopher"])
    kept, dropped = outputs(out)
    assert dropped == {"repetitive": "gopher_rep:dup_para_frac", "short": "gopher_qual:gopher_short_doc"}
    assert kept == {k: HAND[k] for k in ("good", "c4_lines", "lorem", "curly", "headlines")}  # no edits
    by_filter, _ = assert_accounted(out, hand_docs())
    assert by_filter == {"gopher_rep": 1, "gopher_qual": 1}
    # The quality rules alone (the old `rules_gopher`) keep the repetitive page.
    assert rules.apply_filters(rules.build_filters(RulesConfig(filters=["gopher_qual"])), REPETITIVE, "r") == (
        REPETITIVE, None)


def test_c4_removes_lines_and_keeps_the_edited_text(tmp_path):
    out = run(tmp_path, ["c4"])  # conf/refine/rules_c4.yaml: the original rule, terminal punctuation on
    kept, dropped = outputs(out)
    assert dropped == {"lorem": "c4:lorem_ipsum", "curly": "c4:curly_bracket", "headlines": "c4:too_few_sentences",
                       "short": "c4:too_few_sentences"}
    assert kept["c4_lines"] == GOOD  # javascript, one-word, cookie-policy and unpunctuated lines removed
    assert kept["good"] == GOOD
    # C4 strips lines and joins them with single newlines: the repeated banner survives, the blank lines do not.
    assert kept["repetitive"] == REPETITIVE.replace("\n\n", "\n")
    counts = manifest(out)["counts"]
    assert counts["edited/c4"] == 2  # c4_lines and repetitive; "good" untouched
    removed = len(C4_LINES) - len(GOOD) + REPETITIVE.count("\n\n")
    assert counts["edit_chars_removed/c4"] == removed
    kept_in = sum(len(HAND[k]) for k in kept)
    assert counts["chars_out"] == kept_in - removed
    assert_accounted(out, hand_docs())
    # The dropped file keeps the original text, for audit.
    audit = {r["id"]: r["text"] for r in iter_docs(out, prefix="dropped")}
    assert audit["lorem"] == LOREM


def test_c4_without_terminal_punctuation_rule_keeps_unpunctuated_lines():
    flts = rules.build_filters(RulesConfig(filters=["c4"], c4_terminal_punct=False))
    text, reason = rules.apply_filters(flts, C4_LINES, "c4_lines")
    assert reason is None
    assert text.splitlines() == PROSE[:3] + [NO_PUNCT_LINE] + PROSE[3:]  # still no javascript/short/policy line
    assert rules.apply_filters(flts, HEADLINES, "h") == (HEADLINES, None)


def test_fineweb_drops_what_the_others_keep(tmp_path):
    out = run(tmp_path, ["fineweb"])
    kept, dropped = outputs(out)
    assert dropped["headlines"] == "fineweb:line_punct_ratio"
    assert dropped["repetitive"] == "fineweb:char_dup_ratio"
    assert "good" in kept and "c4_lines" in kept
    assert_accounted(out, hand_docs())


def test_rules_run_every_filter_in_finewebs_order(tmp_path):
    docs = hand_docs() + [{"id": "rep_curly", "text": REPETITIVE + "\n\nIt printed f() { return 1; } on the page."}]
    out = run(tmp_path, RULES["filters"], docs, c4_terminal_punct=False)
    kept, dropped = outputs(out)
    assert dropped == {
        "repetitive": "gopher_rep:dup_para_frac",
        "rep_curly": "gopher_rep:dup_para_frac",  # repetition runs before C4, which would name curly_bracket
        "short": "gopher_qual:gopher_short_doc",  # Gopher quality runs before C4, which would say too_few_sentences
        "lorem": "c4:lorem_ipsum", "curly": "c4:curly_bracket",
        "headlines": "fineweb:line_punct_ratio",  # only FineWeb drops it, after C4 kept it
    }
    assert kept == {"good": GOOD, "c4_lines": "\n".join(PROSE[:3] + [NO_PUNCT_LINE] + PROSE[3:])}
    by_filter, by_reason = assert_accounted(out, docs)
    assert by_filter == {"gopher_rep": 2, "gopher_qual": 1, "c4": 2, "fineweb": 1}
    assert manifest(out)["extra"]["filters"] == ["gopher_rep", "gopher_qual", "c4", "fineweb"]


# ---------------------------------------------------------------------------------------------------------------------
# Real web documents


@needs_web
def test_rules_on_real_web_documents_match_datatrove_pipeline(tmp_path):
    """The stage keeps exactly what FineWeb's filter chain, run as datatrove pipeline steps, keeps, with the same
    (C4-edited) texts; the drop reasons are the first rejecting filter's."""
    from datatrove.data import Document

    docs = real_docs(40) + hand_docs()
    out = run(tmp_path, RULES["filters"], docs, c4_terminal_punct=False)
    kept, dropped = outputs(out)
    by_filter, by_reason = assert_accounted(out, docs)

    data = (Document(text=d["text"], id=d["id"]) for d in docs)
    for _, flt in rules.build_filters(RulesConfig(**RULES)):
        data = flt.run(data)
    expected = {d.id: d.text for d in data}
    assert kept == expected
    assert 0 < len(kept) < len(docs) and len(dropped) == len(docs) - len(kept)
    assert by_filter["gopher_rep"] > 0 and by_filter["gopher_qual"] > 0  # both Gopher filters drop real pages
    assert any(kept[d["id"]] != d["text"] for d in docs if d["id"] in kept)  # C4 edited some
    # A real page the repetition rules drop and the quality rules alone keep (web20: its lines repeat).
    web20 = docs[20]["text"]
    assert dropped["web20"] == "gopher_rep:dup_line_frac"
    assert rules.apply_filters(rules.build_filters(RulesConfig(filters=["gopher_qual"])), web20, "w")[1] is None


@needs_web
def test_interrupted_stage_redoes_only_unfinished_shards(tmp_path):
    docs = real_docs(8)
    out = run(tmp_path, ["gopher"], docs)
    (out / "_SUCCESS").unlink()
    (out / "shard-00001.json").unlink()
    before = (out / "docs-00000.parquet").stat().st_mtime_ns
    cfg = {"filters": ["gopher"], "c4_terminal_punct": True, "write_dropped": True, "language": "eng"}
    run_stage(rules.main, StageSpec(stage="refine.rules", key="k", out_dir=str(out), config=cfg,
                                    inputs={"docs": str(tmp_path / "docs")}, logger={"backend": "none"}))
    assert (out / "docs-00000.parquet").stat().st_mtime_ns == before  # finished shard untouched
    assert (out / "shard-00001.json").exists() and (out / "_SUCCESS").exists()
    assert_accounted(out, docs)


def test_job_array_tasks_cover_every_shard_and_the_last_one_completes(tmp_path):
    import fcntl

    src = tmp_path / "docs"
    docs = hand_docs()
    write_parquet(src / shard_name("docs", 0), docs[:3], DOC_SCHEMA)
    write_parquet(src / shard_name("docs", 1), docs[3:], DOC_SCHEMA)
    out = tmp_path / "out"
    out.mkdir()

    def task(rank):
        cfg = {"filters": ["gopher"], "c4_terminal_punct": True, "write_dropped": False, "language": "eng"}
        return run_stage(rules.main, StageSpec(stage="refine.rules", key="k", out_dir=str(out), config=cfg,
                                               inputs={"docs": str(src)}, logger={"backend": "none"},
                                               runtime={"rank": rank, "world_size": 2, "array": True}))

    with open(out / ".shard-00001.lock", "w") as held:  # another array task is busy with shard 1
        fcntl.flock(held, fcntl.LOCK_EX)
        assert task(0) is None  # did shard 0, left shard 1 to its holder, did not complete the stage
        assert (out / "shard-00000.json").exists() and not (out / "shard-00001.json").exists()
        assert not (out / "_SUCCESS").exists()
    result = task(1)  # e.g. the holder failed and its task was resubmitted alone
    assert result is not None and (out / "_SUCCESS").exists()
    assert result.counts["docs_in"] == len(docs)
    assert_accounted(out, docs)
    assert pq.read_table(out / "dropped-00000.parquet").column("text").to_pylist() == [None]  # write_dropped off
