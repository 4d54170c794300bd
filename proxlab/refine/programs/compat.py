"""compat mode: read programs exactly like the reference implementation, quirks included.

GAIR-NLP/ProX ``utils/doc_utils.py`` and ``utils/chunk_utils.py`` (see docs/programs.md): substring
"drop" at doc level; prefix dispatch, first ``)``, split on ``,`` and ``=``, double quotes stripped at chunk level.
The chunk parser only builds a plan; execute.py applies it and the decision rules.
"""

from __future__ import annotations

from proxlab.refine.programs.result import COMPAT, ProgramResult, _ChunkPlan

_COMPAT_NOOP_PREFIXES = ("keep_chunk", "skip_chunk", "untouch_doc", "keep_doc")


def _compat_doc(text: str, output: str) -> ProgramResult:
    # Reference: ``program = operations.strip(" "); return "" if "drop" in program else text``. Stripping spaces cannot
    # change whether "drop" occurs, so the strip is omitted.
    dropped = "drop" in output
    result = ProgramResult(
        text="" if dropped else text, dropped=dropped, errors=0, kept_original=False, mode=COMPAT, level="doc"
    )
    result.ops["drop_doc" if dropped else "keep_doc"] = 1
    return result


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
            _compat_remove_lines(pieces, plan)
        else:
            _compat_normalize(pieces, plan)
    return plan


def _compat_remove_lines(pieces: list[str], plan: _ChunkPlan) -> None:
    """Add one ``remove_lines`` call (its comma-split argument pieces) to the plan, the reference way."""
    try:
        # int() as in the reference: accepts surrounding whitespace, "+5", "1_0", non-ASCII digits, negatives.
        start = int(_compat_value(pieces[0]))
        end = int(_compat_value(pieces[1]))
    except (IndexError, ValueError):
        plan.errors += 1
        plan.failure_kinds["bad_arguments"] += 1
        return
    plan.intervals.append((start, end))
    plan.ops["remove_lines"] += 1


def _compat_normalize(pieces: list[str], plan: _ChunkPlan) -> None:
    """Add one ``normalize`` call (its comma-split argument pieces) to the plan, the reference way."""
    ops, kinds = plan.ops, plan.failure_kinds
    if len(pieces) == 1:
        try:
            source = _compat_value(pieces[0]).strip('"')
        except IndexError:
            plan.errors += 1
            kinds["bad_arguments"] += 1
            return
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
            return
        ops["normalize"] += 1
        if source == " " or source == "":
            kinds["normalize_blank_skipped"] += 1
        else:
            plan.replacements.append((source, target))
    else:
        # Any comma inside the strings: the reference silently skips the call, no error.
        kinds["normalize_comma_ignored"] += 1
