"""strict mode: parse programs with Python's ``ast`` module, never evaluating or executing them.

Only calls of the known functions with literal arguments are accepted; anything else is a counted error (a failure
kind of result.py). Exact common forms take a regular-expression fast path with the same result as the ``ast`` path.
The chunk parser only builds a plan; execute.py applies it and the decision rules. Doc-level strict semantics live
here too (``_strict_doc``).
"""

from __future__ import annotations

import ast
import io
import re
import textwrap
import tokenize
import warnings
from typing import Iterable

from proxlab.refine.programs.result import (
    DEFAULT_MAX_PROGRAM_CHARS,
    FAILURE_KINDS,
    STRICT,
    DecisionRules,
    ProgramResult,
    _ChunkPlan,
)

# Per-line juxtaposed-call recovery (``keep_doc() remove_lines(...)`` on one line) tokenizes the line with the pure
# Python tokenizer; bound its cost.
_MAX_JUXTAPOSED_LINE_CHARS = 4096

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


# ---------------------------------------------------------------------------------------------------------------------
# Chunk level: the plan that execute.py applies
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Doc level
# ---------------------------------------------------------------------------------------------------------------------

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


def parse_program(output: str, max_program_chars: int = DEFAULT_MAX_PROGRAM_CHARS,
                  kinds: dict[str, int] | None = None) -> tuple[list[tuple], int]:
    """Strict-parse one model output without executing anything: (call tuples, number of errors).

    Useful for inspecting outputs and for accounting; call tuples are ``("remove_lines", start, end)``,
    ``("remove_all",)``, ``("normalize", source, target)`` or ``(name,)`` for the argument-less functions.
    ``kinds``: a dict of FAILURE_KINDS counts the errors are added to, by kind.
    """
    kinds = dict.fromkeys(FAILURE_KINDS, 0) if kinds is None else kinds
    return _parse_output_strict(output, max_program_chars, kinds)
