"""Execute ProX refining programs: the doc-level keep/drop decision and the chunk-level line edits.

A refining model writes one program per document (doc level) or per chunk (chunk level); executing the program
refines the text. Two executors share one result type and one set of decision rules:

* ``mode="compat"`` reproduces the reference implementation (GAIR-NLP/ProX ``utils/doc_utils.py`` and
  ``utils/chunk_utils.py``, see docs/programs.md and prox.md §2) exactly, quirks included: substring "drop" at doc
  level; prefix dispatch, first ``)``, split on ``,`` and ``=``, double quotes stripped at chunk level. Use it to
  reproduce the paper with the released refining models.
* ``mode="strict"`` parses the program with Python's ``ast`` module (never evaluates or executes it) and accepts only
  calls of the known functions with literal arguments. Anything else is a counted error.

Both modes apply all ``normalize`` calls to the whole text first, in program order, then remove lines, then apply the
same decision rules (``DecisionRules``); the differences are listed in docs/programs.md.

Only the standard library is used: this module also runs inside the vLLM environment.
"""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize
import warnings
from dataclasses import dataclass, field
from typing import Iterable

COMPAT = "compat"
STRICT = "strict"
MODES = (COMPAT, STRICT)

# Outputs longer than this (characters, per chunk output or per doc output) are rejected in strict mode before any
# parsing: the released models emit at most 256 (chunk) / 2000 (doc) tokens, so 64 KiB is far above any real output
# and bounds the parser's time and memory on hostile input.
DEFAULT_MAX_PROGRAM_CHARS = 64 * 1024

# Per-line juxtaposed-call recovery (``keep_doc() remove_lines(...)`` on one line) tokenizes the line with the pure
# Python tokenizer; bound its cost.
_MAX_JUXTAPOSED_LINE_CHARS = 4096

# Keys of ProgramResult.ops, always all present (a fixed schema for parquet).
OP_NAMES = (
    "remove_lines",  # remove_lines(start, end) calls that were parsed (applied unless the program is discarded)
    "remove_all",  # remove_lines(all=True)
    "normalize",  # normalize(...) calls that were parsed
    "noop",  # keep_chunk() / skip_chunk() / untouch_doc() / keep_doc() inside a chunk program
    "ignored",  # compat only: non-empty program lines the reference silently ignores (unknown names, comments, ...)
    "keep_doc",  # doc level: the decision was keep
    "drop_doc",  # doc level: the decision was drop
)

# Keys of ProgramResult.failure_kinds, always all present. Some count errors, some are accounting only (marked).
FAILURE_KINDS = (
    "syntax_error",  # strict: a statement/line that does not parse as Python; compat: a call line without "("
    "not_a_call",  # strict: a statement that is not a bare call of a plain name (assignments, attribute calls, ...)
    "unknown_function",  # strict: a call of a name outside the program space
    "non_literal_argument",  # strict: an argument that is not a literal constant (names, nested calls, -1, f-strings)
    "bad_arguments",  # both: wrong number/type/name of arguments, start > end, empty normalize source, ...
    "wrong_level",  # strict: drop_doc() inside a chunk program
    "program_too_long",  # strict: an output longer than max_program_chars
    "missing_close_paren",  # compat: a call line without ")" (reference counts +1 and parses on)
    "line_out_of_range",  # both: a merged removal interval starting or ending past the last line
    "no_decision",  # strict doc level: neither keep nor drop was called
    "conflicting_decisions",  # strict doc level: both keep and drop were called
    # accounting only (no error):
    "normalize_comma_ignored",  # compat: normalize(...) whose arguments contain commas; the reference skips it
    "normalize_blank_skipped",  # compat: 2-argument normalize whose source is "" or " "; the reference skips it
    "normalize_source_not_found",  # both: a normalize whose source does not occur in the text when applied
    "repeated_calls",  # both: a call identical to an earlier one (the paper's "repeated output" failure)
    "chunk_call_in_doc_program",  # strict doc level: chunk calls in a doc program, validated but not applied
    "empty_document",  # chunk level: the document has no words (the reference would divide by zero)
)

# The failure kinds that count as errors; ProgramResult.errors is always their sum.
ERROR_KINDS = FAILURE_KINDS[: FAILURE_KINDS.index("normalize_comma_ignored")]


@dataclass(frozen=True)
class DecisionRules:
    """Final decision of a chunk-level program (and error limit of a strict doc-level program).

    Defaults are the reference code's (``threshold_1=0.0, threshold_2=0.95, error_op=2`` and the ad-hoc ≤ 10-word
    rule). ``drop_ratio`` is kept as the float ``1 - 0.95`` (0.050000000000000044) so that comparisons are bit-for-bit
    those of the reference.
    """

    drop_ratio: float = 1 - 0.95  # drop when words(after) / words(before) <= drop_ratio (reference: 1 - threshold_2)
    min_ratio: float = 0.0  # keep the original when the ratio is below this (reference: threshold_1)
    max_errors: int = 2  # discard the program (keep the original) when errors >= max_errors (reference: error_op)
    min_words: int = 10  # drop when <= min_words words remain (reference: FineWeb-inspired ad-hoc rule)

    @classmethod
    def from_reference_args(
        cls, threshold_1: float = 0.0, threshold_2: float = 0.95, error_op: int = 2
    ) -> "DecisionRules":
        """Rules from the reference CLI flags (``--threshold_1 --threshold_2 --error_op``)."""
        return cls(drop_ratio=1 - threshold_2, min_ratio=threshold_1, max_errors=error_op)


DEFAULT_RULES = DecisionRules()


@dataclass
class ProgramResult:
    """What executing one document's program did.

    ``removed_lines`` and ``normalizations`` describe what the program asked for (lines within the document, the
    normalizations whose source was found); when ``kept_original`` is true they were not applied to ``text``. Line
    F1 (paper §A.3) is computed from ``removed_lines``.
    """

    text: str  # refined text; "" when dropped
    dropped: bool
    errors: int  # errors counted the way of the mode (compat: the reference's num_error_op)
    kept_original: bool  # the program was discarded (too many errors, or ratio below min_ratio): text is the input
    mode: str
    level: str  # "doc" or "chunk"
    ops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OP_NAMES, 0))
    removed_lines: list[int] = field(default_factory=list)  # sorted 0-based global line indices
    normalizations: list[tuple[str, str]] = field(default_factory=list)  # (source, target) applied, in order
    failure_kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    words_before: int = 0  # whitespace-separated words of the input (chunk level)
    words_after: int = 0  # words of the program's output before the final decision (chunk level)

    def to_dict(self) -> dict:
        """Plain, fixed-schema dict for json/parquet (tuples become lists)."""
        return {
            "text": self.text,
            "dropped": self.dropped,
            "errors": self.errors,
            "kept_original": self.kept_original,
            "mode": self.mode,
            "level": self.level,
            "ops": dict(self.ops),
            "removed_lines": list(self.removed_lines),
            "normalizations": [[s, t] for s, t in self.normalizations],
            "failure_kinds": dict(self.failure_kinds),
            "words_before": self.words_before,
            "words_after": self.words_after,
        }


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown program mode {mode!r}; expected one of {MODES}")


# ---------------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------------


def run_doc_program(
    text: str,
    output: str,
    mode: str = COMPAT,
    rules: DecisionRules | None = None,
    max_program_chars: int = DEFAULT_MAX_PROGRAM_CHARS,
) -> ProgramResult:
    """Execute a doc-level program (``keep_doc()`` / ``drop_doc()``) on ``text``.

    compat: drop iff the output contains the substring "drop" (anything else, even empty or garbage, keeps).
    strict: parse the output; drop iff it calls ``drop_doc()`` and no keep function; see ``_strict_doc``.
    ``rules.max_errors`` applies to strict mode only.
    """
    _check_mode(mode)
    rules = rules or DEFAULT_RULES
    output = output or ""  # a missing generation (None) is an empty output
    if mode == COMPAT:
        return _compat_doc(text, output)
    return _strict_doc(text, output, rules, max_program_chars)


def run_chunk_programs(
    text: str,
    outputs: list[str],
    mode: str = COMPAT,
    rules: DecisionRules | None = None,
    max_program_chars: int = DEFAULT_MAX_PROGRAM_CHARS,
) -> ProgramResult:
    """Execute the chunk-level programs of one document.

    ``text`` is the document without line numbers (the doc stage's output); ``outputs`` are the model outputs of its
    chunks in chunk order, with line indices global to the document.
    """
    _check_mode(mode)
    rules = rules or DEFAULT_RULES
    if isinstance(outputs, str):  # a common mistake; a str would be iterated per character
        raise TypeError("outputs must be a list of per-chunk program strings, not a str")
    if mode == COMPAT:
        plan = _compat_chunk_plan(outputs)
    else:
        plan = _strict_chunk_plan(outputs, max_program_chars)
    return _execute_chunk_plan(text, plan, rules, mode)


# ---------------------------------------------------------------------------------------------------------------------
# Doc level
# ---------------------------------------------------------------------------------------------------------------------


def _compat_doc(text: str, output: str) -> ProgramResult:
    # Reference: ``program = operations.strip(" "); return "" if "drop" in program else text``. Stripping spaces cannot
    # change whether "drop" occurs, so the strip is omitted.
    dropped = "drop" in output
    result = ProgramResult(
        text="" if dropped else text, dropped=dropped, errors=0, kept_original=False, mode=COMPAT, level="doc"
    )
    result.ops["drop_doc" if dropped else "keep_doc"] = 1
    return result


_DOC_KEEP_NAMES = frozenset({"keep_doc", "untouch_doc"})
_DOC_DROP_NAMES = frozenset({"drop_doc"})


def _strict_doc(text: str, output: str, rules: DecisionRules, max_program_chars: int) -> ProgramResult:
    """Doc-level strict semantics.

    * The output is parsed like a chunk program (code fences stripped; one call per statement or line; several calls
      juxtaposed on one line, as in paper Tables 33/34, are split).
    * ``drop_doc()`` → drop; ``keep_doc()`` / ``untouch_doc()`` → keep. Repeats of the same decision are fine.
    * Chunk calls (``remove_lines``, ``normalize``, ``keep_chunk`` ...) are validated but not applied: the chunk
      stage runs on its own. Invalid ones count as errors.
    * No decision, or both keep and drop: one error, keep. Errors ≥ ``rules.max_errors``: the program is discarded,
      keep. Keeping on failure matches the reference, which keeps every output without "drop".
    """
    result = ProgramResult(text=text, dropped=False, errors=0, kept_original=False, mode=STRICT, level="doc")
    kinds = result.failure_kinds
    calls, errors = _parse_output_strict(output, max_program_chars, kinds)
    keeps = drops = 0
    seen: set[tuple] = set()
    for call in calls:
        if call in seen:
            kinds["repeated_calls"] += 1
        seen.add(call)
        name = call[0]
        if name in _DOC_KEEP_NAMES:
            keeps += 1
        elif name in _DOC_DROP_NAMES:
            drops += 1
        else:
            kinds["chunk_call_in_doc_program"] += 1
    if keeps and drops:
        errors += 1
        kinds["conflicting_decisions"] += 1
    elif not keeps and not drops:
        errors += 1
        kinds["no_decision"] += 1
    result.errors = errors
    if errors >= rules.max_errors:
        result.kept_original = True
        result.ops["keep_doc"] = 1
    elif drops and not keeps:
        result.dropped = True
        result.text = ""
        result.ops["drop_doc"] = 1
    else:
        result.ops["keep_doc"] = 1
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Chunk level: a plan (what the program asks for) is built by a mode-specific parser, then executed by common code
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _ChunkPlan:
    intervals: list[tuple[int, int]] = field(default_factory=list)  # remove_lines (start, end) in program order
    remove_all: bool = False
    replacements: list[tuple[str, str]] = field(default_factory=list)  # normalize (source, target) to run, in order
    errors: int = 0
    ops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OP_NAMES, 0))
    failure_kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))


_COMPAT_NOOP_PREFIXES = ("keep_chunk", "skip_chunk", "untouch_doc", "keep_doc")


def _compat_call_arguments(line: str, plan: _ChunkPlan) -> str | None:
    """The argument string of a compat call line, the reference way; None if the line has no "(" (+1 error).

    The arguments end at the *first* ")" of the line, even one inside a string literal. Without any ")" the reference
    counts an error, then slices up to index -1, which silently drops the line's last character, and parses on.
    """
    open_at = line.find("(")
    if open_at < 0:
        plan.errors += 1
        plan.failure_kinds["syntax_error"] += 1
        return None
    close_at = line.find(")")
    if close_at < 0:
        plan.errors += 1
        plan.failure_kinds["missing_close_paren"] += 1
        close_at = -1
    return line[open_at + 1 : close_at]


def _compat_value(piece: str) -> str:
    """The value of an argument piece: text after its first "=" up to a second "=" (IndexError if none)."""
    return piece.split("=")[1]


def _compat_chunk_plan(outputs: list[str]) -> _ChunkPlan:
    """Parse chunk outputs exactly like reference ``execute_meta_operations`` / ``execute_operations``."""
    plan = _ChunkPlan()
    ops, kinds = plan.ops, plan.failure_kinds
    # merge_chunks joins the (space-stripped) chunk outputs with "\n"; execute_meta_operations strips spaces again and
    # splits on "\n". Lines are not stripped: a leading space hides a call.
    program = "\n".join((output or "").strip(" ") for output in outputs).strip(" ")
    seen: set[str] = set()
    for line in program.split("\n"):
        is_remove = line.startswith("remove_lines")
        if not is_remove and not line.startswith("normalize"):
            if line.strip():
                ops["noop" if line.startswith(_COMPAT_NOOP_PREFIXES) else "ignored"] += 1
            continue
        if line in seen:
            kinds["repeated_calls"] += 1
        seen.add(line)
        if is_remove and "all=True" in line:
            # Anywhere on the line, even inside a string: every line of the document is removed.
            plan.remove_all = True
            ops["remove_all"] += 1
            continue
        arguments = _compat_call_arguments(line, plan)
        if arguments is None:
            continue
        pieces = arguments.split(",")
        if is_remove:
            try:
                # int() as in the reference: accepts surrounding whitespace, "+5", "1_0", non-ASCII digits, negatives.
                start = int(_compat_value(pieces[0]))
                end = int(_compat_value(pieces[1]))
            except (IndexError, ValueError):
                plan.errors += 1
                kinds["bad_arguments"] += 1
                continue
            plan.intervals.append((start, end))
            ops["remove_lines"] += 1
        elif len(pieces) == 1:
            try:
                source = _compat_value(pieces[0]).strip('"')
            except IndexError:
                plan.errors += 1
                kinds["bad_arguments"] += 1
                continue
            # One argument: delete every occurrence, with no guard against " " (all spaces of the document go).
            plan.replacements.append((source, ""))
            ops["normalize"] += 1
        elif len(pieces) == 2:
            try:
                source = _compat_value(pieces[0]).strip('"')
                target = _compat_value(pieces[1]).strip('"')
            except IndexError:
                plan.errors += 1
                kinds["bad_arguments"] += 1
                continue
            ops["normalize"] += 1
            if source == " " or source == "":
                kinds["normalize_blank_skipped"] += 1
            else:
                plan.replacements.append((source, target))
        else:
            # Any comma inside the strings: the reference silently skips the call, no error.
            kinds["normalize_comma_ignored"] += 1
    return plan


def _merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Reference ``merge_intervals``: sort by start (stable), merge overlapping and adjacent intervals.

    Kept bit-for-bit because range errors are counted per merged interval. Empty intervals (start > end) take part in
    the merge as the reference's do. The union of the merged intervals equals the union of the inputs.
    """
    if not intervals:
        return []
    ordered = sorted(intervals, key=lambda interval: interval[0])
    merged = [ordered[0]]
    for start, end in ordered[1:]:
        previous_start, previous_end = merged[-1]
        if start <= previous_end + 1:
            merged[-1] = (previous_start, max(previous_end, end))
        else:
            merged.append((start, end))
    return merged


def _count_words(text: str) -> int:
    return len(text.split())


def _execute_chunk_plan(text: str, plan: _ChunkPlan, rules: DecisionRules, mode: str) -> ProgramResult:
    kinds = plan.failure_kinds
    errors = plan.errors

    # 1. normalize, whole document, program order. Sources and targets never contain "\n" (compat: the program is
    #    split on "\n"; strict: rejected), so the line count and the line numbers the model saw are preserved.
    normalized = text
    applied: list[tuple[str, str]] = []
    for source, target in plan.replacements:
        if source == "":
            continue  # replace("", "") is the identity
        if source in normalized:
            normalized = normalized.replace(source, target)
            applied.append((source, target))
        else:
            kinds["normalize_source_not_found"] += 1

    # 2. remove lines. Out-of-range numbers are ignored by the removal; the merged intervals count range errors.
    n_lines = normalized.count("\n") + 1
    merged = _merge_intervals(plan.intervals)
    spans = []  # clipped, sorted, disjoint (lo, hi) line spans to remove
    for start, end in merged:
        if start >= n_lines or end >= n_lines:
            errors += 1
            kinds["line_out_of_range"] += 1
        low, high = max(start, 0), min(end, n_lines - 1)
        if low <= high:
            spans.append((low, high))
    if plan.remove_all:
        spans = [(0, n_lines - 1)]

    # 3. word counts (the decision's unit). Joining lines with "\n" (whitespace) makes word counts additive over
    #    lines, so only changed and removed lines are counted again instead of the whole document: str.split on the
    #    whole text is the executor's hot path.
    words_before = _count_words(text)
    removed: list[int] = []
    if normalized is text and not spans:
        return _finish(text, text, words_before, words_before, errors, removed, applied, plan, rules, mode)
    lines = normalized.split("\n")
    words_normalized = words_before
    if normalized is not text:
        original_lines = text.split("\n")
        if len(original_lines) == len(lines):
            for old, new in zip(original_lines, lines):
                if old != new:
                    words_normalized += len(new.split()) - len(old.split())
        else:  # cannot happen (no newline in sources or targets); recount rather than trust misaligned lines
            words_normalized = _count_words(normalized)
    if not spans:
        return _finish(text, normalized, words_before, words_normalized, errors, removed, applied, plan, rules, mode)
    kept: list[str] = []
    previous = 0
    for low, high in spans:
        kept.extend(lines[previous:low])
        removed.extend(range(low, high + 1))
        previous = high + 1
    kept.extend(lines[previous:])
    processed = "\n".join(kept)
    if 2 * len(removed) < n_lines:
        words_after = words_normalized - sum(len(lines[index].split()) for index in removed)
    else:
        words_after = _count_words(processed)
    return _finish(text, processed, words_before, words_after, errors, removed, applied, plan, rules, mode)


def _finish(
    text: str,
    processed: str,
    words_before: int,
    words_after: int,
    errors: int,
    removed: list[int],
    applied: list[tuple[str, str]],
    plan: _ChunkPlan,
    rules: DecisionRules,
    mode: str,
) -> ProgramResult:
    """Apply the mode's decision rules and build the result."""
    decide = _compat_decision if mode == COMPAT else _strict_decision
    dropped, kept_original = decide(words_before, words_after, errors, rules, plan.failure_kinds)
    if dropped:
        final = ""
    elif kept_original:
        final = text
    else:
        final = processed
    return ProgramResult(
        text=final,
        dropped=dropped,
        errors=errors,
        kept_original=kept_original,
        mode=mode,
        level="chunk",
        ops=plan.ops,
        removed_lines=removed,
        normalizations=applied,
        failure_kinds=plan.failure_kinds,
        words_before=words_before,
        words_after=words_after,
    )


def _compat_decision(
    words_before: int, words_after: int, errors: int, rules: DecisionRules, kinds: dict[str, int]
) -> tuple[bool, bool]:
    """Reference final rules, in the reference's order. Returns (dropped, kept_original)."""
    if words_before == 0:
        # The reference divides by zero here. Such documents never reach it (datatrove skips empty texts; a
        # whitespace-only text would crash it); we drop, which is what its ≤ min_words rule would decide.
        kinds["empty_document"] += 1
        return True, False
    ratio = words_after / words_before * 1.0
    if ratio <= rules.drop_ratio and errors < rules.max_errors:
        return True, False
    # Checked on the processed text even when the program is about to be discarded for errors.
    if words_after <= rules.min_words:
        return True, False
    if ratio >= rules.min_ratio and errors < rules.max_errors:
        return False, False
    return False, True


def _strict_decision(
    words_before: int, words_after: int, errors: int, rules: DecisionRules, kinds: dict[str, int]
) -> tuple[bool, bool]:
    """Same thresholds, applied to the text that is actually returned.

    Too many errors discard the program first; then the ≤ min_words rule looks at the original text (compat looks at
    the discarded program's output).
    """
    if words_before == 0:
        kinds["empty_document"] += 1
        return True, False
    if errors >= rules.max_errors:
        return words_before <= rules.min_words, True
    ratio = words_after / words_before
    if ratio <= rules.drop_ratio or words_after <= rules.min_words:
        return True, False
    if ratio >= rules.min_ratio:
        return False, False
    return words_before <= rules.min_words, True


# ---------------------------------------------------------------------------------------------------------------------
# Strict parser: ast only, nothing is evaluated
# ---------------------------------------------------------------------------------------------------------------------

# A parsed call is a tuple: ("remove_lines", start, end), ("remove_all",), ("normalize", source, target), or
# (name,) for the argument-less functions (keep_chunk, skip_chunk, untouch_doc, keep_doc, drop_doc).
_NOARG_FUNCTIONS = frozenset({"keep_chunk", "skip_chunk", "untouch_doc", "keep_doc", "drop_doc"})
_CHUNK_NOOPS = frozenset({"keep_chunk", "skip_chunk", "untouch_doc", "keep_doc"})

# Parameter names of each function (positional order) and the keyword aliases the released models emit
# (paper Table 1: line_start/line_end, source_str/target_str; SFT prompts Figs. 10-12: start/end).
_REMOVE_KEYWORDS = {"start": "start", "line_start": "start", "end": "end", "line_end": "end", "all": "all"}
_NORMALIZE_KEYWORDS = {"source_str": "source", "target_str": "target"}


def _make_remove(start: object, end: object) -> tuple | str:
    # type() is not bool: True/False are ints to isinstance but not line numbers.
    if type(start) is not int or type(end) is not int or start < 0 or end < start:
        return "bad_arguments"
    return ("remove_lines", start, end)


def _make_normalize(source: object, target: object) -> tuple | str:
    if type(source) is not str or type(target) is not str:
        return "bad_arguments"
    # An empty or blank source is never a meaningful edit (compat's 1-argument form would delete every space).
    # A newline would merge or split lines and shift the line numbers the remove_lines calls refer to.
    if not source.strip() or "\n" in source or "\n" in target:
        return "bad_arguments"
    return ("normalize", source, target)


def _call_from_ast(node: ast.AST) -> tuple | str:
    """Validate one statement; return the call tuple or a failure kind. Only node types are inspected."""
    if type(node) is not ast.Expr or type(node.value) is not ast.Call:
        return "not_a_call"
    call = node.value
    if type(call.func) is not ast.Name:
        return "not_a_call"  # attribute calls, subscripts, calls of calls
    name = call.func.id
    if name in _NOARG_FUNCTIONS:
        return (name,) if not call.args and not call.keywords else "bad_arguments"
    if name == "remove_lines":
        params, keywords = ("start", "end"), _REMOVE_KEYWORDS
    elif name == "normalize":
        params, keywords = ("source", "target"), _NORMALIZE_KEYWORDS
    else:
        return "unknown_function"
    if len(call.args) > len(params):
        return "bad_arguments"
    values: dict[str, object] = {}
    for param, argument in zip(params, call.args):
        if type(argument) is not ast.Constant:  # Starred, Name, Call, UnaryOp (-1), JoinedStr (f-string), ...
            return "non_literal_argument"
        values[param] = argument.value
    for keyword in call.keywords:
        if keyword.arg is None:  # **kwargs
            return "non_literal_argument"
        param = keywords.get(keyword.arg)
        if param is None or param in values:
            return "bad_arguments"
        if type(keyword.value) is not ast.Constant:
            return "non_literal_argument"
        values[param] = keyword.value.value
    if name == "normalize":
        if "source" not in values:
            return "bad_arguments"
        return _make_normalize(values["source"], values.get("target", ""))
    if "all" in values:
        return ("remove_all",) if len(values) == 1 and values["all"] is True else "bad_arguments"
    if "start" not in values or "end" not in values:
        return "bad_arguments"
    return _make_remove(values["start"], values["end"])


# Fast path: the exact forms the released models emit, one call per line. A line that matches one of these regexes
# is a complete Python statement whose ast is a call of that name with exactly these literal arguments; the test
# suite checks fast path == ast path on generated programs. Excluded from the fast path (they take the ast path):
# backslashes (escapes), \r (a line break to Python), NUL and lone surrogates (ast rejects the whole source), leading
# zeros, integers of more than 18 digits, string prefixes, triple quotes.
_WS = r"[ \t]*"
_INT = r"(0|[1-9][0-9]{0,17})"
_STR_CHARS_DQ = r'[^"\\\n\r\x00\ud800-\udfff]*'
_STR_CHARS_SQ = r"[^'\\\n\r\x00\ud800-\udfff]*"
_STR = rf"""(?:"({_STR_CHARS_DQ})"|'({_STR_CHARS_SQ})')"""
_COMMENT = rf"{_WS}(?:#[^\n\r\x00\ud800-\udfff]*)?"
_ARGS_TAIL = rf"{_WS},?{_WS}\){_COMMENT}"
_FAST_REMOVE = re.compile(
    rf"remove_lines\({_WS}(?:"
    rf"(?:line_)?start{_WS}={_WS}{_INT}{_WS},{_WS}(?:line_)?end{_WS}={_WS}{_INT}"
    rf"|{_INT}{_WS},{_WS}(?:(?:line_)?end{_WS}={_WS})?{_INT}"
    rf"){_ARGS_TAIL}"
)
_FAST_NORMALIZE = re.compile(
    rf"normalize\({_WS}(?:"
    rf"source_str{_WS}={_WS}{_STR}(?:{_WS},{_WS}target_str{_WS}={_WS}{_STR})?"
    rf"|{_STR}(?:{_WS},{_WS}(?:target_str{_WS}={_WS})?{_STR})?"
    rf"){_ARGS_TAIL}"
)
_FAST_NOARG = re.compile(rf"(keep_chunk|skip_chunk|untouch_doc|keep_doc|drop_doc)\({_WS}\){_COMMENT}")


_EXACT_NOARG_CALLS = {f"{name}()": (name,) for name in _NOARG_FUNCTIONS}


def _fast_call(line: str) -> tuple | str | None:
    """Call tuple / failure kind for a stripped line of an exact common form; None when the line needs the ast."""
    first = line[:1]
    if first == "r":
        match = _FAST_REMOVE.fullmatch(line)
        if match is None:
            return None
        g = match.groups()
        start, end = (g[0], g[1]) if g[0] is not None else (g[2], g[3])
        return _make_remove(int(start), int(end))
    if first == "n":
        match = _FAST_NORMALIZE.fullmatch(line)
        if match is None:
            return None
        g = match.groups()
        if g[0] is not None or g[1] is not None:
            source = g[0] if g[0] is not None else g[1]
            target = g[2] if g[2] is not None else g[3]
        else:
            source = g[4] if g[4] is not None else g[5]
            target = g[6] if g[6] is not None else g[7]
        return _make_normalize(source, "" if target is None else target)
    if first in "kusd":
        match = _FAST_NOARG.fullmatch(line)
        return None if match is None else (match.group(1),)
    return None


# Model outputs are not our source code: silence the parser's warnings about them (invalid escape sequences) by their
# pseudo file name, once, instead of a costly catch_warnings() around every parse.
_PROGRAM_FILENAME = "<refining-program>"
warnings.filterwarnings("ignore", module=re.escape(_PROGRAM_FILENAME))


def _safe_parse(source: str) -> list[ast.stmt] | None:
    """ast.parse, or None for anything it rejects. Only parses: ast.parse compiles with PyCF_ONLY_AST."""
    try:
        return ast.parse(source, filename=_PROGRAM_FILENAME, mode="exec").body
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        # SyntaxError includes IndentationError and integer literals over the int-to-str digit limit; ValueError
        # includes NUL bytes (3.11) and UnicodeEncodeError for lone surrogates.
        return None


# A ")" followed by a name: the only shape juxtaposed calls can have (cheap check before tokenizing).
_CLOSE_THEN_NAME = re.compile(r"\)[ \t]*[A-Za-z_]")


def _split_juxtaposed_calls(line: str) -> list[str] | None:
    """Split ``a(...) b(...)`` (calls side by side without a separator) at top level; None if not that shape."""
    if len(line) > _MAX_JUXTAPOSED_LINE_CHARS or _CLOSE_THEN_NAME.search(line) is None:
        return None
    cuts = []
    depth = 0
    after_top_level_close = False
    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            kind, string = token.type, token.string
            if kind == tokenize.OP and string in "([{":
                depth += 1
                after_top_level_close = False
            elif kind == tokenize.OP and string in ")]}":
                depth -= 1
                after_top_level_close = depth == 0
            elif kind == tokenize.NAME and depth == 0 and after_top_level_close:
                cuts.append(token.start[1])
                after_top_level_close = False
            elif kind not in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER):
                after_top_level_close = False
    except Exception:  # TokenError, IndentationError, SyntaxError: not splittable (only tokenizes, never runs)
        return None
    if not cuts:
        return None
    bounds = [0, *cuts, len(line)]
    return [line[a:b].strip() for a, b in zip(bounds, bounds[1:])]


def _strip_fences(output: str) -> str:
    if "```" not in output:
        return output
    return "\n".join(line for line in output.split("\n") if not line.strip().startswith("```"))


def _record(item: tuple | str, calls: list[tuple], kinds: dict[str, int]) -> int:
    if type(item) is tuple:
        calls.append(item)
        return 0
    kinds[item] += 1
    return 1


def _parse_line_strict(
    line: str, calls: list[tuple], kinds: dict[str, int], use_fast_path: bool = True, split: bool = True
) -> int:
    """Parse one stripped, non-empty line on its own; return the number of errors."""
    fast = _fast_call(line) if use_fast_path else None
    if fast is not None:
        return _record(fast, calls, kinds)
    body = _safe_parse(line)
    if body is None:
        pieces = _split_juxtaposed_calls(line) if split else None
        if pieces is None:
            kinds["syntax_error"] += 1
            return 1
        return sum(_parse_line_strict(piece, calls, kinds, use_fast_path, split=False) for piece in pieces)
    return sum(_record(_call_from_ast(statement), calls, kinds) for statement in body)


def _parse_output_strict(
    output: str, max_program_chars: int, kinds: dict[str, int], use_fast_path: bool = True
) -> tuple[list[tuple], int]:
    """Parse one model output into call tuples; return (calls, errors).

    Semantics: code fences are removed; the output is parsed as a Python module and every statement must be an
    allowed call. If the module does not parse (a truncated last line, calls side by side), each line is parsed on
    its own and each unparsable line is one error. The fast path gives the same result on the common exact forms.
    """
    if len(output) > max_program_chars:
        kinds["program_too_long"] += 1
        return [], 1
    exact = _EXACT_NOARG_CALLS.get(output.strip())
    if exact is not None:  # the most common output of all: "keep_doc()", "drop_doc()", "keep_chunk()"
        return [exact], 0
    source = _strip_fences(output)
    calls: list[tuple] = []
    errors = 0
    lines = [line.strip() for line in source.split("\n")]
    if use_fast_path:
        fast_calls = []
        for line in lines:
            if not line or line[0] == "#":
                continue
            fast = _fast_call(line)
            if fast is None:
                break
            fast_calls.append(fast)
        else:
            for item in fast_calls:
                errors += _record(item, calls, kinds)
            return calls, errors
    # One line: parsing it as a module and as a line is the same, so go straight to the line parser.
    body = _safe_parse(textwrap.dedent(source)) if "\n" in source.strip() else None
    if body is not None:
        for statement in body:
            errors += _record(_call_from_ast(statement), calls, kinds)
        return calls, errors
    for line in lines:
        if line and line[0] != "#":
            errors += _parse_line_strict(line, calls, kinds, use_fast_path)
    return calls, errors


def _strict_chunk_plan(outputs: Iterable[str], max_program_chars: int) -> _ChunkPlan:
    plan = _ChunkPlan()
    ops, kinds = plan.ops, plan.failure_kinds
    seen: set[tuple] = set()
    for output in outputs:
        calls, errors = _parse_output_strict(output or "", max_program_chars, kinds)
        plan.errors += errors
        for call in calls:
            name = call[0]
            if name in _CHUNK_NOOPS:
                ops["noop"] += 1
                continue
            if name == "drop_doc":
                plan.errors += 1
                kinds["wrong_level"] += 1
                continue
            if call in seen:
                kinds["repeated_calls"] += 1
            seen.add(call)
            if name == "remove_lines":
                plan.intervals.append((call[1], call[2]))
                ops["remove_lines"] += 1
            elif name == "normalize":
                plan.replacements.append((call[1], call[2]))
                ops["normalize"] += 1
            else:  # remove_all
                plan.remove_all = True
                ops["remove_all"] += 1
    return plan


def parse_program(output: str, max_program_chars: int = DEFAULT_MAX_PROGRAM_CHARS) -> tuple[list[tuple], int]:
    """Strict-parse one model output without executing anything: (call tuples, number of errors).

    Useful for inspecting outputs and for accounting; call tuples are ``("remove_lines", start, end)``,
    ``("remove_all",)``, ``("normalize", source, target)`` or ``(name,)`` for the argument-less functions.
    """
    kinds = dict.fromkeys(FAILURE_KINDS, 0)
    return _parse_output_strict(output, max_program_chars, kinds)
