"""Execute ProX refining programs: the public entry points, and the execution of a chunk plan common to both modes.

``run_doc_program`` / ``run_chunk_programs`` pick the mode's parser (compat.py or strict.py). At chunk level the
parser returns a plan; this module applies all ``normalize`` calls to the whole text first, in program order, then
removes lines, then applies the mode's decision rules (``DecisionRules``) to the result.
"""

from __future__ import annotations

from proxlab.refine.programs.compat import _compat_chunk_plan, _compat_doc
from proxlab.refine.programs.result import (
    COMPAT,
    DEFAULT_MAX_PROGRAM_CHARS,
    DEFAULT_RULES,
    MODES,
    DecisionRules,
    ProgramResult,
    _ChunkPlan,
)
from proxlab.refine.programs.strict import _strict_chunk_plan, _strict_doc


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
    strict: parse the output; drop iff it calls ``drop_doc()`` and no keep function; see ``_strict_doc`` in strict.py.
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
# Chunk level: execute the plan a mode-specific parser built
# ---------------------------------------------------------------------------------------------------------------------


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
    """Apply a parsed plan to ``text``: normalize, remove lines, then the mode's decision rules (``_finish``)."""
    kinds = plan.failure_kinds
    normalized, applied = _apply_normalizations(text, plan.replacements, kinds)
    n_lines = normalized.count("\n") + 1
    spans, range_errors = _removal_spans(plan, n_lines, kinds)
    errors = plan.errors + range_errors

    # Word counts are the decision's unit. Joining lines with "\n" (whitespace) makes word counts additive over lines,
    # so only changed and removed lines are counted again instead of the whole document: str.split on the whole text
    # is the executor's hot path.
    words_before = _count_words(text)
    removed: list[int] = []
    if normalized is text and not spans:
        return _finish(text, text, words_before, words_before, errors, removed, applied, plan, rules, mode)
    lines = normalized.split("\n")
    words_normalized = _words_after_normalizing(text, normalized, lines, words_before)
    if not spans:
        return _finish(text, normalized, words_before, words_normalized, errors, removed, applied, plan, rules, mode)
    processed, removed = _remove_spans(lines, spans)
    if 2 * len(removed) < n_lines:
        words_after = words_normalized - sum(len(lines[index].split()) for index in removed)
    else:
        words_after = _count_words(processed)
    return _finish(text, processed, words_before, words_after, errors, removed, applied, plan, rules, mode)


def _apply_normalizations(
    text: str, replacements: list[tuple[str, str]], kinds: dict[str, int]
) -> tuple[str, list[tuple[str, str]]]:
    """Run the normalize calls on the whole document in program order: (normalized text, the pairs applied).

    Returns ``text`` itself (the same object) when no call was applied. Sources and targets never contain "\\n" (compat: the program is
    split on "\\n"; strict: rejected), so the line count and the line numbers the model saw are preserved.
    """
    normalized = text
    applied: list[tuple[str, str]] = []
    for source, target in replacements:
        if source == "":
            continue  # replace("", "") is the identity
        if source in normalized:
            normalized = normalized.replace(source, target)
            applied.append((source, target))
        else:
            kinds["normalize_source_not_found"] += 1
    return normalized, applied


def _removal_spans(plan: _ChunkPlan, n_lines: int, kinds: dict[str, int]) -> tuple[list[tuple[int, int]], int]:
    """Clipped, sorted, disjoint (low, high) line spans to remove, and the number of range errors.

    Out-of-range numbers are ignored by the removal; the merged intervals count range errors (also under
    ``remove_all``, as in the reference).
    """
    range_errors = 0
    spans = []
    for start, end in _merge_intervals(plan.intervals):
        if start >= n_lines or end >= n_lines:
            range_errors += 1
            kinds["line_out_of_range"] += 1
        low, high = max(start, 0), min(end, n_lines - 1)
        if low <= high:
            spans.append((low, high))
    if plan.remove_all:
        spans = [(0, n_lines - 1)]
    return spans, range_errors


def _words_after_normalizing(text: str, normalized: str, lines: list[str], words_before: int) -> int:
    """Word count of ``normalized`` (split into ``lines``), recounting only the lines normalize changed."""
    if normalized is text:
        return words_before
    original_lines = text.split("\n")
    if len(original_lines) != len(lines):
        # Cannot happen (no newline in sources or targets); recount rather than trust misaligned lines.
        return _count_words(normalized)
    words = words_before
    for old, new in zip(original_lines, lines):
        if old != new:
            words += len(new.split()) - len(old.split())
    return words


def _remove_spans(lines: list[str], spans: list[tuple[int, int]]) -> tuple[str, list[int]]:
    """(text without the spans' lines, the removed line indices in order); spans are sorted and disjoint."""
    kept: list[str] = []
    removed: list[int] = []
    previous = 0
    for low, high in spans:
        kept.extend(lines[previous:low])
        removed.extend(range(low, high + 1))
        previous = high + 1
    kept.extend(lines[previous:])
    return "\n".join(kept), removed


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
