"""strict mode: every rule of the ast-based parser, the doc-level semantics, the decision rules, and the fast path."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxlab.refine.programs import (
    DEFAULT_MAX_PROGRAM_CHARS,
    ERROR_KINDS,
    FAILURE_KINDS,
    DecisionRules,
    ProgramResult,
    _parse_output_strict,
    parse_program,
    run_chunk_programs,
    run_doc_program,
)

# Escapes like "\d" in generated programs warn at parse time; programs.py silences them in production, but pytest
# re-enables DeprecationWarning for every test.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::SyntaxWarning")


def make_doc(n_lines: int = 20, words_per_line: int = 5) -> str:
    return "\n".join(" ".join([f"l{i}"] + [f"w{j}" for j in range(words_per_line - 1)]) for i in range(n_lines))


DOC = make_doc()
LINES = DOC.split("\n")


def run(text: str, *outputs: str, **kwargs) -> ProgramResult:
    return run_chunk_programs(text, list(outputs), mode="strict", **kwargs)


def calls(output: str) -> list[tuple]:
    parsed, errors = parse_program(output)
    assert errors == 0, output
    return parsed


def failure(output: str) -> str:
    """The single failure kind of a one-call output that must be rejected."""
    kinds = dict.fromkeys(FAILURE_KINDS, 0)
    parsed, errors = _parse_output_strict(output, DEFAULT_MAX_PROGRAM_CHARS, kinds)
    assert parsed == [] and errors == 1, (output, parsed, errors)
    (kind,) = [k for k, v in kinds.items() if v]
    return kind


# --- accepted forms -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output",
    [
        "remove_lines(start=1, end=3)",
        "remove_lines(line_start=1, line_end=3)",
        "remove_lines(1, 3)",
        "remove_lines(1, end=3)",
        "remove_lines(1, line_end=3)",
        "remove_lines(end=3, start=1)",
        "remove_lines(line_start=1, end=3)",
        "remove_lines( 1 ,3 , )",
        "remove_lines (1, 3)",
        "remove_lines(\n    start=1,\n    end=3,\n)",
        "remove_lines(1, 3)  # navigation bar",
        "remove_lines(0x1, 3)",
    ],
)
def test_remove_lines_positional_or_keyword(output):
    assert calls(output) == [("remove_lines", 1, 3)]


@pytest.mark.parametrize(
    ("output", "source", "target"),
    [
        ('normalize(source_str="a, b", target_str="")', "a, b", ""),
        ("normalize(source_str='a=b)', target_str='(c)')", "a=b)", "(c)"),
        ('normalize("x", "y")', "x", "y"),
        ('normalize("x", target_str="y")', "x", "y"),
        ('normalize(target_str="y", source_str="x")', "x", "y"),
        ('normalize("only source")', "only source", ""),
        ('normalize(source_str="say \\"hi\\"", target_str="")', 'say "hi"', ""),
        ("normalize('it\\'s', 'it is')", "it's", "it is"),
        ('normalize("back\\\\slash")', "back\\slash", ""),
        ('normalize("tab\\there")', "tab\there", ""),
        ('normalize("\\u00e9t\\u00e9", "summer")', "été", "summer"),
        ('normalize("con" "cat")', "concat", ""),
        ('normalize("""triple""")', "triple", ""),
        ('normalize(r"raw\\d")', "raw\\d", ""),
        ('normalize("Ünïcödé ✓", "ok")', "Ünïcödé ✓", "ok"),
    ],
)
def test_normalize_string_literals(output, source, target):
    assert calls(output) == [("normalize", source, target)]


def test_noop_and_decision_names_and_remove_all():
    assert calls("keep_chunk()\nskip_chunk()\nuntouch_doc()\nkeep_doc()\ndrop_doc()") == [
        ("keep_chunk",),
        ("skip_chunk",),
        ("untouch_doc",),
        ("keep_doc",),
        ("drop_doc",),
    ]
    assert calls("remove_lines(all=True)") == [("remove_all",)]


def test_code_fences_comments_blank_lines_and_semicolons():
    output = "```python\n# remove the menu\n\nremove_lines(0, 1); remove_lines(5, 6)\n```"
    assert calls(output) == [("remove_lines", 0, 1), ("remove_lines", 5, 6)]


def test_indented_program_is_dedented():
    output = "    remove_lines(0, 1)\n    normalize(\n        'x')"
    assert calls(output) == [("remove_lines", 0, 1), ("normalize", "x", "")]


def test_juxtaposed_calls_on_one_line_are_split():
    # paper Tables 33/34: several calls side by side without separator
    output = 'keep_doc() remove_lines(line_start=0, line_end=5) normalize(source_str="a) b(", target_str="")'
    assert calls(output) == [("keep_doc",), ("remove_lines", 0, 5), ("normalize", "a) b(", "")]


# --- rejected forms: each one counted error, nothing applied ---------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "kind"),
    [
        ("os.system('touch pwned')", "not_a_call"),
        ("__import__('os').system('touch pwned')", "not_a_call"),
        ("x = remove_lines(1, 2)", "not_a_call"),
        ("import os", "not_a_call"),
        ("lambda: remove_lines(1, 2)", "not_a_call"),
        ("remove_lines", "not_a_call"),
        ("'just a string'", "not_a_call"),
        ("if True: remove_lines(1, 2)", "not_a_call"),
        ("remove_lines(1, 2)(3)", "not_a_call"),
        ("print('hi')", "unknown_function"),
        ("eval('1')", "unknown_function"),
        ("delete_lines(1, 2)", "unknown_function"),
        ("remove_lines(int('1'), 2)", "non_literal_argument"),
        ("remove_lines(a, 2)", "non_literal_argument"),
        ("remove_lines(-1, 2)", "non_literal_argument"),
        ("remove_lines(1 + 1, 2)", "non_literal_argument"),
        ("remove_lines(0, 9**9**9)", "non_literal_argument"),
        ("remove_lines(*[1, 2])", "non_literal_argument"),
        ("remove_lines(**{'start': 1, 'end': 2})", "non_literal_argument"),
        ("normalize(f'{x}', '')", "non_literal_argument"),
        ("normalize('a' * 10**9, '')", "non_literal_argument"),
        ("remove_lines(True, 2)", "bad_arguments"),
        ("remove_lines(1.0, 2)", "bad_arguments"),
        ("remove_lines('1', '2')", "bad_arguments"),
        ("remove_lines(1j, 2)", "bad_arguments"),
        ("remove_lines(None, 2)", "bad_arguments"),
        ("remove_lines(3, 1)", "bad_arguments"),
        ("remove_lines(1)", "bad_arguments"),
        ("remove_lines(1, 2, 3)", "bad_arguments"),
        ("remove_lines(first=1, last=2)", "bad_arguments"),
        ("remove_lines(1, start=2)", "bad_arguments"),
        ("remove_lines(start=1, line_start=1, end=2)", "bad_arguments"),
        ("remove_lines(all=1)", "bad_arguments"),
        ("remove_lines(all=True, start=1, end=2)", "bad_arguments"),
        ("normalize(b'x', '')", "bad_arguments"),
        ("normalize(1, '')", "bad_arguments"),
        ("normalize()", "bad_arguments"),
        ("normalize('', 'x')", "bad_arguments"),
        ("normalize(' ', '')", "bad_arguments"),
        ("normalize('a\\nb', '')", "bad_arguments"),
        ("normalize('a', 'b\\nc')", "bad_arguments"),
        ("normalize(source='a')", "bad_arguments"),
        ("normalize('a', 'b', 'c')", "bad_arguments"),
        ("keep_chunk(1)", "bad_arguments"),
        ("drop_doc(reason='spam')", "bad_arguments"),
        ("remove_lines(1, 2", "syntax_error"),
        ('normalize(source_str="abc', "syntax_error"),
        ("remove_lines(start=1, 2)", "syntax_error"),
        ("remove_lines(1, 2) +", "syntax_error"),
        ("remove_lines(1,\x002)", "syntax_error"),
        ("normalize('\ud800', '')", "syntax_error"),
        ("remove_lines(1, " + "9" * 5000 + ")", "syntax_error"),
        ("remove_lines(" * 300 + ")" * 300, "syntax_error"),
        ("-" * 60_000 + "1", "syntax_error"),  # MemoryError in the parser
        ("x" * (DEFAULT_MAX_PROGRAM_CHARS + 1), "program_too_long"),
    ],
)
def test_rejected_forms(output, kind):
    assert failure(output) == kind


def test_large_integers_below_the_digit_limit_are_clipped_as_range_errors():
    result = run(DOC, "remove_lines(3, " + "9" * 4000 + ")")
    assert result.removed_lines == list(range(3, 20)) and result.errors == 1
    assert result.failure_kinds["line_out_of_range"] == 1


def test_nothing_is_evaluated(tmp_path):
    target = tmp_path / "pwned"
    started = time.perf_counter()
    for output in (
        f"__import__('os').system('touch {target}')",
        f"remove_lines(__import__('os').system('touch {target}'), 1)",
        f"normalize(open('{target}', 'w').write('x'), '')",
        "remove_lines(0, 9**9**9**9)",
        "normalize('a' * 10**10)",
    ):
        for mode in ("strict", "compat"):
            run_chunk_programs(DOC, [output], mode=mode)
            run_doc_program(DOC, output, mode=mode)
    assert not target.exists()
    assert time.perf_counter() - started < 2.0  # 9**9**9**9 was never computed


def test_truncated_last_line_costs_one_error_and_keeps_the_other_calls():
    result = run(DOC, 'remove_lines(0, 1)\nnormalize(source_str="w1", target_str="")\nnormalize(source_str="w2')
    assert result.errors == 1 and result.failure_kinds["syntax_error"] == 1
    assert result.removed_lines == [0, 1] and "w1" not in result.text and "w2" in result.text


def test_every_bad_line_is_one_error():
    result = run(DOC, "remove_lines(0, 1)\nfoo(\nbar(\nremove_lines(2, 3)")
    assert result.errors == 2 and result.kept_original and result.text == DOC


def test_drop_doc_in_a_chunk_program_is_a_wrong_level_error():
    result = run(DOC, "drop_doc()")
    assert result.errors == 1 and result.failure_kinds["wrong_level"] == 1 and not result.dropped


def test_noops_count_no_error_and_no_repeat():
    result = run(DOC, "keep_chunk()", "keep_chunk()", "skip_chunk()\nuntouch_doc()")
    assert result.text == DOC and result.errors == 0 and result.ops["noop"] == 4
    assert result.failure_kinds["repeated_calls"] == 0


def test_repeated_edit_calls_are_counted():
    result = run(DOC, "\n".join(["remove_lines(start=7, end=7)"] * 5))
    assert result.failure_kinds["repeated_calls"] == 4 and result.removed_lines == [7] and result.errors == 0


def test_program_length_limit_is_configurable():
    output = "remove_lines(0, 1)  # " + "x" * 100
    assert run(DOC, output, max_program_chars=50).failure_kinds["program_too_long"] == 1
    assert run(DOC, output, max_program_chars=500).removed_lines == [0, 1]


def test_errors_equal_the_sum_of_error_kinds():
    result = run(DOC, "foo()\nremove_lines(a, 1)\nremove_lines(2, 1)\nremove_lines(40, 41)\ndrop_doc()\nx(")
    assert result.errors == sum(result.failure_kinds[kind] for kind in ERROR_KINDS) == 6


# --- execution and decision -----------------------------------------------------------------------------------------


def test_same_order_of_application_as_compat():
    result = run(
        DOC,
        'normalize("w1", "X")\nremove_lines(0, 0)',
        "normalize('X', 'Y')\nremove_lines(line_start=19, line_end=19)",
    )
    assert result.text == "\n".join(LINES[1:19]).replace("w1", "Y")
    assert result.normalizations == [("w1", "X"), ("X", "Y")] and result.removed_lines == [0, 19]


def test_normalize_source_not_found_is_accounted_not_an_error():
    result = run(DOC, "normalize('absent', '')")
    assert result.errors == 0 and result.failure_kinds["normalize_source_not_found"] == 1 and result.text == DOC


def test_out_of_range_intervals_are_errors_as_in_compat():
    result = run(DOC, "remove_lines(18, 25)")
    assert result.errors == 1 and result.removed_lines == [18, 19]
    assert run(DOC, "remove_lines(25, 30)\nremove_lines(28, 40)").errors == 1  # merged first


def test_drop_rules_match_compat_thresholds():
    text = make_doc(400)
    assert run(text, "remove_lines(20, 399)").dropped  # ratio exactly 0.05
    assert not run(text, "remove_lines(21, 399)").dropped
    assert run(DOC, "remove_lines(0, 17)").dropped  # 10 words left
    assert run(DOC, "remove_lines(all=True)").dropped


def test_discarded_program_keeps_the_original_even_if_its_output_would_be_short():
    # Two errors in both modes; the discarded program would leave 10 words. compat drops (its ≤ 10-word rule looks at
    # the discarded program's output), strict returns the original.
    outputs = ["remove_lines(start=0, end=17)\nremove_lines(x)\nremove_lines(y)"]
    strict = run(DOC, *outputs)
    assert strict.errors == 2 and strict.kept_original and strict.text == DOC and not strict.dropped
    compat = run_chunk_programs(DOC, outputs, mode="compat")
    assert compat.errors == 2 and compat.dropped


def test_discarded_program_on_a_short_original_drops():
    short = "one two three four five"
    result = run(short, "foo()\nbar()")
    assert result.kept_original and result.dropped


def test_configurable_rules():
    rules = DecisionRules(drop_ratio=0.5, max_errors=1, min_words=0)
    assert run(DOC, "remove_lines(0, 9)", rules=rules).dropped  # ratio 0.5
    assert run(DOC, "remove_lines(0, 0)\nfoo()", rules=rules).kept_original
    assert not run("a b", "keep_chunk()", rules=rules).dropped  # min_words=0 keeps 2-word documents


@pytest.mark.parametrize("mode", ["compat", "strict"])
def test_missing_generations_are_empty_outputs(mode):
    assert run_chunk_programs(DOC, [None, "remove_lines(start=0, end=0)"], mode=mode).removed_lines == [0]
    assert not run_doc_program(DOC, None, mode=mode).dropped
    with pytest.raises(TypeError):
        run_chunk_programs(DOC, "remove_lines(start=0, end=0)", mode=mode)  # a str, not a list of outputs
    with pytest.raises(ValueError):
        run_chunk_programs(DOC, [], mode="lenient")


def test_empty_document_is_dropped():
    result = run("\n\n", "keep_chunk()")
    assert result.dropped and result.failure_kinds["empty_document"] == 1


# --- doc level ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["drop_doc()", "```python\ndrop_doc()\n```", "drop_doc()\ndrop_doc()"])
def test_doc_drop(output):
    result = run_doc_program(DOC, output, mode="strict")
    assert result.dropped and result.text == "" and result.errors == 0 and result.ops["drop_doc"] == 1


@pytest.mark.parametrize("output", ["keep_doc()", "untouch_doc()", "keep_doc()  # do not drop_doc()"])
def test_doc_keep(output):
    result = run_doc_program(DOC, output, mode="strict")
    assert not result.dropped and result.text == DOC and result.errors == 0


@pytest.mark.parametrize("output", ["", "garbage", "the dropdown", "drop", "drop_doc", "drop_doc(("])
def test_doc_without_a_valid_decision_keeps_with_an_error(output):
    result = run_doc_program(DOC, output, mode="strict")
    assert not result.dropped and result.text == DOC and result.errors >= 1
    assert result.failure_kinds["no_decision"] == 1


def test_doc_conflicting_decisions_keep_with_an_error():
    result = run_doc_program(DOC, "keep_doc()\ndrop_doc()", mode="strict")
    assert not result.dropped and result.errors == 1 and result.failure_kinds["conflicting_decisions"] == 1


def test_doc_program_with_chunk_calls_decides_by_the_doc_call():
    output = 'keep_doc() remove_lines(line_start=0, line_end=5) normalize(source_str="x", target_str="")'
    result = run_doc_program(DOC, output, mode="strict")
    assert not result.dropped and result.text == DOC and result.errors == 0
    assert result.failure_kinds["chunk_call_in_doc_program"] == 2
    dropped = run_doc_program(DOC, "drop_doc()\nremove_lines(0, 1)", mode="strict")
    assert dropped.dropped


def test_doc_program_with_too_many_errors_is_discarded():
    result = run_doc_program(DOC, "drop_doc()\nfoo()\nbar()", mode="strict")
    assert result.errors == 2 and result.kept_original and not result.dropped
    assert run_doc_program(DOC, "drop_doc()\nfoo()", mode="strict").dropped


# --- fast path ≡ ast path -------------------------------------------------------------------------------------------

_keyword_sets = st.sampled_from([("start=", "end="), ("line_start=", "line_end="), ("", ""), ("", "end=")])
_ints = st.one_of(st.integers(0, 60), st.integers(0, 10**19), st.just(0))
_string_chars = st.characters(codec="utf-8") | st.sampled_from(list("\"'\\,=() \t\n\r\x00#\ud800\udfff\x0b\x0c\x85"))
_strings = st.text(_string_chars, max_size=12)


def _quote(value: str, style: str) -> str:
    if style == "repr":
        return repr(value)
    quote = '"' if style == "double" else "'"
    return quote + value + quote  # raw: may be invalid Python, both paths must agree anyway


_remove_call = st.builds(
    lambda kw, a, b, sp, tail: f"remove_lines({kw[0]}{a},{sp}{kw[1]}{b}{tail})",
    _keyword_sets,
    _ints,
    _ints,
    st.sampled_from(["", " ", "  ", "\t"]),
    st.sampled_from([")", ", )", ")  # c", ") x", "", ")\\"]),
)
_normalize_call = st.builds(
    lambda form, a, b, style, tail: (
        f"normalize({form[0]}{_quote(a, style)}{', ' + form[1] + _quote(b, style) if form[1] is not None else ''}{tail}"
    ),
    st.sampled_from([("source_str=", "target_str="), ("", ""), ("", "target_str="), ("source_str=", None), ("", None)]),
    _strings,
    _strings,
    st.sampled_from(["repr", "double", "single"]),
    st.sampled_from([")", ",)", ") # note", ""]),
)
_other_line = st.sampled_from(
    ["keep_chunk()", "skip_chunk( )", "drop_doc()", "# comment", "", "  ", "```python", "```", "foo()", "keep_doc() x"]
)
_program_line = st.one_of(_remove_call, _normalize_call, _other_line)
_prefix = st.sampled_from(["", " ", "    ", "\t", "\x0c"])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_prefix, _program_line), max_size=6))
def test_fast_path_equals_ast_path(lines):
    output = "\n".join(prefix + line for prefix, line in lines)
    fast_kinds = dict.fromkeys(FAILURE_KINDS, 0)
    slow_kinds = dict.fromkeys(FAILURE_KINDS, 0)
    fast = _parse_output_strict(output, DEFAULT_MAX_PROGRAM_CHARS, fast_kinds, use_fast_path=True)
    slow = _parse_output_strict(output, DEFAULT_MAX_PROGRAM_CHARS, slow_kinds, use_fast_path=False)
    assert fast == slow
    assert fast_kinds == slow_kinds


_safe_text = st.text(st.sampled_from(list("abcxyz XYZ.:;!?-")), min_size=1, max_size=8).filter(lambda s: s.strip())


@settings(max_examples=300, deadline=None)
@given(
    n_lines=st.integers(1, 40),
    removes=st.lists(st.tuples(st.integers(0, 45), st.integers(0, 10)), max_size=4),
    normalizes=st.lists(st.tuples(_safe_text, st.text(st.sampled_from(list("abc XYZ")), max_size=5)), max_size=3),
    style=st.sampled_from(["table33", "sft"]),
)
def test_strict_agrees_with_compat_on_canonical_programs(n_lines, removes, normalizes, style):
    """The released models' canonical format, strings without , = ) quotes or backslashes: both modes agree."""
    text = "\n".join(f"ab{i} xy z{i % 7}. Q{i}" for i in range(n_lines))
    keys = ("line_start", "line_end") if style == "table33" else ("start", "end")
    program = [f"remove_lines({keys[0]}={a}, {keys[1]}={a + span})" for a, span in removes]
    program += [f'normalize(source_str="{s}", target_str="{t}")' for s, t in normalizes]
    compat = run_chunk_programs(text, ["\n".join(program)], mode="compat")
    strict = run_chunk_programs(text, ["\n".join(program)], mode="strict")
    assert (strict.errors, strict.removed_lines, strict.normalizations, strict.words_after) == (
        compat.errors,
        compat.removed_lines,
        compat.normalizations,
        compat.words_after,
    )
    if compat.errors < 2:
        assert (strict.text, strict.dropped) == (compat.text, compat.dropped)
    else:  # the one documented decision difference: strict applies the ≤ 10-word rule to the original
        assert strict.kept_original and strict.dropped == (strict.words_before <= 10)
