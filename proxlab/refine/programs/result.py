"""Constants and result types shared by both program modes: modes, operation and failure-kind names, decision rules,
the result of executing a program, and the chunk plan the parsers build for the executor.

Only the standard library is used (see the package docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMPAT = "compat"
STRICT = "strict"
MODES = (COMPAT, STRICT)

# Outputs longer than this (characters, per chunk output or per doc output) are rejected in strict mode before any
# parsing: the released models emit at most 256 (chunk) / 2000 (doc) tokens, so 64 KiB is far above any real output
# and bounds the parser's time and memory on hostile input.
DEFAULT_MAX_PROGRAM_CHARS = 64 * 1024

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


# Chunk level: a plan (what the program asks for) is built by a mode-specific parser (compat.py, strict.py), then
# executed by common code (execute.py).
@dataclass
class _ChunkPlan:
    intervals: list[tuple[int, int]] = field(default_factory=list)  # remove_lines (start, end) in program order
    remove_all: bool = False
    replacements: list[tuple[str, str]] = field(default_factory=list)  # normalize (source, target) to run, in order
    errors: int = 0
    ops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OP_NAMES, 0))
    failure_kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
