"""Execute ProX refining programs: the doc-level keep/drop decision and the chunk-level line edits.

A refining model writes one program per document (doc level) or per chunk (chunk level); executing the program
refines the text. Two executors share one result type and one set of decision rules:

* ``mode="compat"`` reproduces the reference implementation (GAIR-NLP/ProX ``utils/doc_utils.py`` and
  ``utils/chunk_utils.py``, see docs/programs.md) exactly, quirks included: substring "drop" at doc
  level; prefix dispatch, first ``)``, split on ``,`` and ``=``, double quotes stripped at chunk level. Use it to
  reproduce the paper with the released refining models.
* ``mode="strict"`` parses the program with Python's ``ast`` module (never evaluates or executes it) and accepts only
  calls of the known functions with literal arguments. Anything else is a counted error.

Both modes apply all ``normalize`` calls to the whole text first, in program order, then remove lines, then apply the
same decision rules (``DecisionRules``); the differences are listed in docs/programs.md.

Modules: ``result`` (constants, ``DecisionRules``, ``ProgramResult``, the chunk plan), ``compat`` (the reference
parser), ``strict`` (the ``ast`` parser, ``parse_program``), ``execute`` (``run_doc_program``,
``run_chunk_programs``: plan execution and decision rules). Import the names below from this package.

Only the standard library is used: this package also runs inside the vLLM environment.
"""

from proxlab.refine.programs.compat import _compat_chunk_plan
from proxlab.refine.programs.execute import run_chunk_programs, run_doc_program
from proxlab.refine.programs.result import (
    COMPAT,
    DEFAULT_MAX_PROGRAM_CHARS,
    DEFAULT_RULES,
    ERROR_KINDS,
    FAILURE_KINDS,
    MODES,
    OP_NAMES,
    STRICT,
    DecisionRules,
    ProgramResult,
)
from proxlab.refine.programs.strict import _parse_output_strict, parse_program

# _compat_chunk_plan (benchmarks/bench_programs.py) and _parse_output_strict (tests) are private but imported from
# here by name, so they stay importable from the package.
__all__ = [
    "COMPAT",
    "DEFAULT_MAX_PROGRAM_CHARS",
    "DEFAULT_RULES",
    "ERROR_KINDS",
    "FAILURE_KINDS",
    "MODES",
    "OP_NAMES",
    "STRICT",
    "DecisionRules",
    "ProgramResult",
    "parse_program",
    "run_chunk_programs",
    "run_doc_program",
]
