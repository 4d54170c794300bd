"""compat mode: every quirk of the reference executor (utils/{doc,chunk}_utils.py), one test each, plus a differential
test against a literal, slow transcription of chunk_utils.py's rules."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxlab.refine.programs import (
    ERROR_KINDS,
    FAILURE_KINDS,
    OP_NAMES,
    DecisionRules,
    ProgramResult,
    run_chunk_programs,
    run_doc_program,
)


def make_doc(n_lines: int = 20, words_per_line: int = 5) -> str:
    """Line i is "l{i} w0 w1 w2 w3": words are easy to count and every line is distinct."""
    return "\n".join(" ".join([f"l{i}"] + [f"w{j}" for j in range(words_per_line - 1)]) for i in range(n_lines))


def run(text: str, *outputs: str, **kwargs) -> ProgramResult:
    return run_chunk_programs(text, list(outputs), mode="compat", **kwargs)


def lines_of(result: ProgramResult) -> list[str]:
    return result.text.split("\n")


DOC = make_doc()
LINES = DOC.split("\n")


# --- doc level (reference utils/doc_utils.py) ---------------------------------------------------------------------


@pytest.mark.parametrize("output", ["drop_doc()", "keep_doc()  # do not drop", "the dropdown menu", " drop"])
def test_doc_drops_when_drop_occurs_anywhere(output):
    result = run_doc_program(DOC, output, mode="compat")
    assert result.dropped and result.text == "" and result.errors == 0
    assert result.ops["drop_doc"] == 1 and result.ops["keep_doc"] == 0


@pytest.mark.parametrize("output", ["keep_doc()", "", "garbage ((( ", "DROP_DOC()", "untouch_doc()", "Drop"])
def test_doc_keeps_everything_else_including_garbage_and_case_variants(output):
    result = run_doc_program(DOC, output, mode="compat")
    assert not result.dropped and result.text == DOC and result.errors == 0
    assert result.ops["keep_doc"] == 1


def test_compat_is_the_default_mode():
    assert run_doc_program(DOC, "x drop x").dropped
    assert run_chunk_programs(DOC, ["remove_lines(1, 2)"]).errors == 1  # positional: a compat error


# --- chunk level: dispatch -----------------------------------------------------------------------------------------


def test_keyword_names_are_ignored_only_values_count():
    for program in (
        "remove_lines(start=1, end=2)",
        "remove_lines(line_start=1, line_end=2)",
        "remove_lines(foo=1, bar=2)",
    ):
        result = run(DOC, program)
        assert result.removed_lines == [1, 2] and result.errors == 0
        assert lines_of(result) == LINES[:1] + LINES[3:]


def test_line_numbers_are_zero_based_without_conversion():
    result = run(DOC, "remove_lines(start=0, end=0)")
    assert lines_of(result) == LINES[1:]


def test_line_numbers_are_global_across_chunk_outputs():
    result = run(DOC, "remove_lines(start=0, end=0)", "remove_lines(start=15, end=16)")
    assert result.removed_lines == [0, 15, 16]
    assert lines_of(result) == LINES[1:15] + LINES[17:]


def test_prefix_dispatch_accepts_longer_names():
    result = run(DOC, "remove_lines_v2(start=1, end=1)", 'normalizeXYZ(source_str="w1")')
    assert result.removed_lines == [1]
    assert "w1" not in result.text and result.errors == 0


def test_ignored_lines_count_no_error():
    program = "\n".join(
        [
            "keep_chunk()",
            "skip_chunk()",
            "untouch_doc()",
            "# remove_lines(start=0, end=0)",
            "```python",
            "```",
            "foo(1)",
            " remove_lines(start=0, end=0)",  # a leading space on a later line hides the call
            "\tnormalize(source_str=\"w1\")",
            "Remove_lines(start=0, end=0)",
        ]
    )
    result = run(DOC, program)
    assert result.text == DOC and result.errors == 0 and result.removed_lines == []
    assert result.ops["noop"] == 3 and result.ops["ignored"] == 7


def test_each_output_is_stripped_of_spaces_before_joining():
    # merge_chunks strips every chunk output with .strip(" "): a leading space on an output's first line is harmless.
    result = run(DOC, "  remove_lines(start=0, end=0)  ", "   remove_lines(start=2, end=2)")
    assert result.removed_lines == [0, 2]
    # ... but tabs are not spaces
    assert run(DOC, "\tremove_lines(start=0, end=0)").removed_lines == []


def test_crlf_line_endings_in_the_program_still_parse():
    result = run(DOC, 'remove_lines(start=1, end=2)\r\nnormalize(source_str="w1", target_str="")\r')
    assert result.removed_lines == [1, 2] and "w1" not in result.text and result.errors == 0


# --- chunk level: argument parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["remove_lines(1, 2)", "remove_lines(0, 0)"])
def test_positional_remove_lines_is_an_error(program):
    result = run(DOC, program)
    assert result.errors == 1 and result.failure_kinds["bad_arguments"] == 1
    assert result.removed_lines == [] and result.text == DOC


def test_missing_open_paren_is_an_error():
    result = run(DOC, "remove_lines start=1 end=2")
    assert result.errors == 1 and result.failure_kinds["syntax_error"] == 1 and result.text == DOC


def test_missing_close_paren_counts_an_error_and_drops_the_last_character():
    # Arguments run to the end of the line minus its last character: "end=23" is read as "end=2".
    result = run(make_doc(30), "remove_lines(start=1, end=23")
    assert result.errors == 1 and result.failure_kinds["missing_close_paren"] == 1
    assert result.removed_lines == [1, 2]


def test_missing_close_paren_then_unparsable_counts_two_errors_and_discards_the_program():
    result = run(DOC, "remove_lines(start=1, end=2")  # "end=" after the last character is dropped
    assert result.errors == 2 and result.kept_original and result.text == DOC


def test_truncated_normalize_deletes_a_prefix_of_the_intended_source():
    text = DOC + "\nabcd abcx abyz tail words here now"
    result = run(text, 'normalize(source_str="abcd')  # truncated output; last character lost: source "abc"
    assert result.errors == 1
    assert result.text.split("\n")[-1] == "d x abyz tail words here now"


def test_first_close_paren_ends_the_arguments_even_inside_a_string():
    # Arguments = 'source_str="w1' (cut at the ")" inside the string): one piece, source w1 → every w1 deleted.
    result = run(DOC, 'normalize(source_str="w1)", target_str="X")')
    assert "w1" not in result.text and "X" not in result.text and result.errors == 0
    assert result.normalizations == [("w1", "")]


def test_value_ends_at_the_second_equals_sign():
    assert run(DOC, "remove_lines(start=1=9, end=2)").removed_lines == [1, 2]
    # paper Table 33: a URL source is cut at "?user=", leaving "=abc" in the text
    text = DOC + "\nsee http://scholar.google.co.uk/citations?user=abc for more of the words"
    result = run(text, 'normalize(source_str="http://scholar.google.co.uk/citations?user=abc", target_str="")')
    assert result.normalizations == [("http://scholar.google.co.uk/citations?user", "")]
    assert result.text.split("\n")[-1] == "see =abc for more of the words"


def test_only_double_quotes_are_stripped():
    text = DOC + "\nsay 'hi' and hi again to all the words"
    result = run(text, "normalize(source_str='hi', target_str='yo')")
    assert result.normalizations == [("'hi'", "'yo'")]  # the single quotes are part of source and target
    assert result.text.split("\n")[-1] == "say 'yo' and hi again to all the words"
    missing = run(DOC, "normalize(source_str='w1', target_str='')")
    assert missing.text == DOC and missing.failure_kinds["normalize_source_not_found"] == 1


def test_spaces_around_equals_keep_the_opening_quote():
    result = run(DOC, 'normalize(source_str = "w1", target_str = "")')
    # value ' "w1' → strip('"') leaves ' "w1': matches nothing, no error
    assert result.text == DOC and result.errors == 0
    assert result.failure_kinds["normalize_source_not_found"] == 1


@pytest.mark.parametrize(
    ("program", "removed"),
    [
        ("remove_lines(start= 1 , end=+2)", [1, 2]),  # int() strips whitespace, accepts a sign
        ("remove_lines(start=1_0, end=11)", [10, 11]),  # underscores
        ("remove_lines(start=\u0663, end=\u0664)", [3, 4]),  # Arabic-Indic digits
        ("remove_lines(start=-5, end=1)", [0, 1]),  # negative numbers match no line, no error
    ],
)
def test_integers_are_parsed_by_python_int(program, removed):
    result = run(DOC, program)
    assert result.removed_lines == removed and result.errors == 0


@pytest.mark.parametrize(
    "program", ["remove_lines(start=a, end=2)", "remove_lines(start=1.5, end=2)", "remove_lines(start=1)"]
)
def test_non_integer_or_missing_argument_is_an_error(program):
    result = run(DOC, program)
    assert result.errors == 1 and result.removed_lines == []


def test_start_after_end_removes_nothing_and_is_no_error_in_range():
    result = run(DOC, "remove_lines(start=5, end=2)")
    assert result.removed_lines == [] and result.errors == 0


# --- remove_lines(all=True) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["remove_lines(all=True)", "remove_lines(start=0, end=0)  # all=True"])
def test_all_true_anywhere_removes_every_line(program):
    result = run(DOC, program)
    assert result.removed_lines == list(range(20)) and result.dropped and result.ops["remove_all"] == 1


def test_all_true_does_not_hide_range_errors_of_other_calls():
    result = run(DOC, "remove_lines(all=True)\nremove_lines(start=100, end=200)")
    assert result.errors == 1 and result.failure_kinds["line_out_of_range"] == 1 and result.dropped


# --- normalize ------------------------------------------------------------------------------------------------------


def test_one_argument_normalize_deletes_every_occurrence():
    result = run(DOC, 'normalize(source_str="w1")')
    assert result.text == DOC.replace("w1", "") and result.words_after == 80


def test_one_argument_normalize_of_a_space_deletes_every_space():
    result = run(DOC, 'normalize(source_str=" ")')  # no guard in the 1-argument form
    assert result.text == DOC.replace(" ", "")
    assert result.words_after == 20 and not result.dropped  # ratio 0.2


def test_two_argument_normalize_skips_blank_sources_without_error():
    result = run(DOC, 'normalize(source_str=" ", target_str="_")\nnormalize(source_str="", target_str="x")')
    assert result.text == DOC and result.errors == 0
    assert result.failure_kinds["normalize_blank_skipped"] == 2 and result.ops["normalize"] == 2


@pytest.mark.parametrize(
    "program", ['normalize(source_str="w1, w2", target_str="")', 'normalize(source_str="w1", target_str="a,b")']
)
def test_normalize_with_commas_is_silently_ignored(program):
    result = run(DOC, program)
    assert result.text == DOC and result.errors == 0
    assert result.failure_kinds["normalize_comma_ignored"] == 1 and result.ops["normalize"] == 0


@pytest.mark.parametrize("program", ['normalize("w1", "")', 'normalize("w1")'])
def test_positional_normalize_is_an_error(program):
    result = run(DOC, program)
    assert result.errors == 1 and result.text == DOC


def test_normalize_replaces_in_the_whole_document_sequentially():
    # Chunk 2's call also rewrites lines of chunk 1, and runs on the output of chunk 1's call.
    result = run(DOC, 'normalize(source_str="w1", target_str="X")', 'normalize(source_str="X", target_str="Y")')
    assert result.text == DOC.replace("w1", "Y")
    assert result.normalizations == [("w1", "X"), ("X", "Y")]


def test_normalize_runs_before_removal_and_keeps_line_numbers():
    result = run(DOC, 'remove_lines(start=3, end=3)\nnormalize(source_str="l3 ", target_str="")')
    assert result.removed_lines == [3]
    assert lines_of(result) == LINES[:3] + LINES[4:]


# --- range checks on merged intervals -------------------------------------------------------------------------------


def test_overlapping_out_of_range_intervals_merge_into_one_error():
    result = run(DOC, "remove_lines(start=25, end=30)\nremove_lines(start=28, end=40)")
    assert result.errors == 1 and result.failure_kinds["line_out_of_range"] == 1
    assert result.text == DOC


def test_end_past_the_last_line_is_an_error_and_clipped():
    result = run(DOC, "remove_lines(start=18, end=25)")
    assert result.errors == 1 and result.removed_lines == [18, 19] and lines_of(result) == LINES[:18]


def test_adjacent_intervals_merge():
    result = run(DOC, "remove_lines(start=21, end=21)\nremove_lines(start=20, end=20)")
    assert result.errors == 1  # (20, 21) after merging: one interval out of range


def test_separate_out_of_range_intervals_count_separately_and_discard_the_program():
    result = run(DOC, "remove_lines(start=1, end=1)\nremove_lines(start=25, end=26)\nremove_lines(start=30, end=31)")
    assert result.errors == 2 and result.kept_original and result.text == DOC
    assert result.removed_lines == [1]  # what the program asked for, not applied


def test_huge_range_is_clipped_without_enumerating_it():
    started = time.perf_counter()
    result = run(DOC, "remove_lines(start=0, end=999999999999999999)")
    assert time.perf_counter() - started < 1.0  # the reference would loop over 10^18 numbers
    assert result.removed_lines == list(range(20)) and result.errors == 1 and result.dropped


def test_repeated_calls_are_counted_and_merged():
    result = run(DOC, "\n".join(["remove_lines(start=7, end=7)"] * 5))  # paper Table 36
    assert result.failure_kinds["repeated_calls"] == 4 and result.errors == 0 and result.removed_lines == [7]


# --- final decision -------------------------------------------------------------------------------------------------


def test_default_rules_are_the_reference_defaults():
    rules = DecisionRules()
    assert rules.drop_ratio == 1 - 0.95 and rules.min_ratio == 0.0 and rules.max_errors == 2
    assert rules.min_words == 10
    assert DecisionRules.from_reference_args(0.1, 0.9, 3) == DecisionRules(1 - 0.9, 0.1, 3, 10)


def test_drop_when_at_most_five_percent_of_words_remain():
    text = make_doc(400)  # 2000 words
    exactly_five_percent = run(text, "remove_lines(start=20, end=399)")  # 100 words left: ratio 0.05
    assert exactly_five_percent.dropped and exactly_five_percent.text == ""
    above = run(text, "remove_lines(start=21, end=399)")  # 105 words: ratio 0.0525
    assert not above.dropped and above.text == "\n".join(text.split("\n")[:21])


def test_drop_when_at_most_ten_words_remain():
    result = run(DOC, "remove_lines(start=0, end=17)")  # 10 of 100 words left, ratio 0.1
    assert result.dropped and result.words_after == 10
    assert not run(DOC, "remove_lines(start=0, end=16)").dropped  # 15 words


def test_ten_word_rule_applies_even_when_the_program_is_discarded():
    # Two errors discard the program, yet the discarded program's output (10 words) decides a drop.
    result = run(DOC, "remove_lines(start=0, end=17)\nremove_lines(1, 2)\nremove_lines(3, 4)")
    assert result.errors == 2 and result.dropped and not result.kept_original


def test_two_errors_keep_the_original_text():
    program = 'remove_lines(start=0, end=3)\nnormalize(source_str="w1")\nremove_lines(1, 2)\nfoo\nremove_lines(x)'
    result = run(DOC, program)
    assert result.errors == 2 and result.kept_original and result.text == DOC
    assert result.removed_lines == [0, 1, 2, 3] and result.normalizations == [("w1", "")]


def test_ratio_below_min_ratio_keeps_the_original():
    result = run(DOC, "remove_lines(start=0, end=4)", rules=DecisionRules(min_ratio=0.9))
    assert result.kept_original and result.text == DOC and not result.dropped


def test_configurable_error_limit():
    result = run(DOC, "remove_lines(start=0, end=0)\nremove_lines(1, 2)", rules=DecisionRules(max_errors=1))
    assert result.kept_original and result.text == DOC


@pytest.mark.parametrize("text", ["", "   \n \t "])
def test_document_without_words_is_dropped_instead_of_dividing_by_zero(text):
    result = run(text, "keep_chunk()")
    assert result.dropped and result.text == "" and result.failure_kinds["empty_document"] == 1


def test_no_outputs_means_no_edits():
    result = run(DOC)
    assert result.text == DOC and result.errors == 0


def test_result_schema_is_fixed():
    data = run(DOC, "remove_lines(start=1, end=1)").to_dict()
    assert set(data["ops"]) == set(OP_NAMES) and set(data["failure_kinds"]) == set(FAILURE_KINDS)
    assert data["removed_lines"] == [1] and data["mode"] == "compat" and data["level"] == "chunk"
    assert isinstance(data["normalizations"], list)


def test_errors_equal_the_sum_of_error_kinds():
    program = "remove_lines(1, 2)\nremove_lines start\nremove_lines(start=1, end=23\nremove_lines(start=30, end=31)"
    result = run(DOC, program)
    assert result.errors == sum(result.failure_kinds[kind] for kind in ERROR_KINDS) == 4


# --- differential test against a literal transcription of chunk_utils.py ---------------------------------------------


def spec_oracle(text: str, outputs: list[str], threshold_1=0.0, threshold_2=0.95, error_op=2):
    """Reference chunk_utils.py step by step, sets of line numbers; returns (text, errors, removed line numbers)."""
    program = "\n".join(o.strip(" ") for o in outputs).strip(" ")
    n_input_lines = len(text.split("\n"))
    doc = text
    to_remove: set[int] = set()
    intervals = []
    errors = 0
    for op in program.split("\n"):
        is_remove = op.startswith("remove_lines")
        if is_remove and "all=True" in op:
            to_remove = set(range(n_input_lines))
            continue
        if not is_remove and not op.startswith("normalize"):
            continue
        if "(" not in op:
            errors += 1
            continue
        begin = op.index("(") + 1
        if ")" in op:
            arguments = op[begin : op.index(")")]
        else:
            errors += 1
            arguments = op[begin:-1]
        pieces = arguments.split(",")
        if is_remove:
            try:
                start, end = int(pieces[0].split("=")[1]), int(pieces[1].split("=")[1])
            except (IndexError, ValueError):
                errors += 1
                continue
            intervals.append((start, end))
            to_remove.update(range(start, end + 1))
        elif len(pieces) == 1:
            try:
                source = pieces[0].split("=")[1].strip('"')
            except IndexError:
                errors += 1
                continue
            doc = doc.replace(source, "")
        elif len(pieces) == 2:
            try:
                source, target = pieces[0].split("=")[1].strip('"'), pieces[1].split("=")[1].strip('"')
            except IndexError:
                errors += 1
                continue
            if source not in (" ", ""):
                doc = doc.replace(source, target)
    lines = doc.split("\n")
    processed = "\n".join(line for i, line in enumerate(lines) if i not in to_remove)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals, key=lambda interval: interval[0]):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    errors += sum(1 for start, end in merged if start >= len(lines) or end >= len(lines))
    removed = sorted(i for i in to_remove if 0 <= i < len(lines))
    after, before = len(processed.split()), len(text.split())
    if before == 0:
        return "", errors, removed
    ratio = after / before
    if ratio <= 1 - threshold_2 and errors < error_op:
        return "", errors, removed
    if after <= 10:
        return "", errors, removed
    if ratio >= threshold_1 and errors < error_op:
        return processed, errors, removed
    return text, errors, removed


_CHARS = ' ,=()"\'w1x-+_\\#'
_small_int = st.integers(min_value=-3, max_value=30).map(str)
_value = st.one_of(_small_int, st.text(alphabet=_CHARS, max_size=6), st.sampled_from(['"w1"', '"x y"', '""', '" "']))
_keyword = st.sampled_from(["start", "end", "line_start", "source_str", "target_str", "", "all", "a b"])
_argument = st.one_of(st.builds(lambda k, v: f"{k}={v}", _keyword, _value), _value)
_name = st.sampled_from(
    ["remove_lines", "normalize", "remove_lines", "normalize", "keep_chunk", "remove_linesX", " remove_lines", "foo"]
)
_call = st.builds(
    lambda name, args, close: f"{name}({', '.join(args)}{')' if close else ''}",
    _name,
    st.lists(_argument, max_size=3),
    st.booleans(),
)
_line = st.one_of(_call, _call, _call, st.text(alphabet=_CHARS, max_size=10), st.just("remove_lines(all=True)"))
_output = st.lists(_line, max_size=4).map("\n".join)
_text_line = st.lists(st.sampled_from(["w1", "x", "y", "a,b", "w1=2", '"q"', "x y", "", " "]), max_size=8).map(" ".join)
_text = st.lists(_text_line, min_size=1, max_size=25).map("\n".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_text, outputs=st.lists(_output, min_size=1, max_size=3), threshold_1=st.sampled_from([0.0, 0.5]))
def test_compat_matches_the_spec_transcription(text, outputs, threshold_1):
    rules = DecisionRules.from_reference_args(threshold_1=threshold_1)
    result = run_chunk_programs(text, outputs, mode="compat", rules=rules)
    expected_text, expected_errors, expected_removed = spec_oracle(text, outputs, threshold_1=threshold_1)
    assert result.text == expected_text
    assert result.errors == expected_errors
    assert result.removed_lines == expected_removed
    assert result.dropped == (expected_text == "")
    # the word-count shortcut equals a recount of the program's output
    if not result.dropped and not result.kept_original:
        assert result.words_after == len(result.text.split())
