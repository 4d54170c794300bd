"""Property-based tests and the hostile-program fuzz run of the program executor.

The fuzz run executes PROXLAB_FUZZ_N random and hostile programs (default 10,000 so the suite stays fast; the
acceptance run uses 100,000):

    PROXLAB_FUZZ_N=100000 .venv/bin/python -m pytest tests/refine/test_programs_fuzz.py -k fuzz_run -q

For every program, in both modes, at chunk and doc level: no exception escapes, nothing is executed (eval/exec/
os.system/subprocess patched to fail, compile may only build ASTs, a `touch` target must not appear), results are
deterministic (two runs give identical dicts) and internally consistent; for remove_lines-only programs in strict
mode the output lines are a subsequence of the input lines.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxlab.refine.programs import ERROR_KINDS, ProgramResult, parse_program, run_chunk_programs, run_doc_program

REPO = Path(__file__).resolve().parents[2]
MODES = ("compat", "strict")

# Invalid escape sequences in fuzz programs warn at parse time; programs.py silences them in production, but pytest
# re-enables DeprecationWarning for every test.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::SyntaxWarning")


# --- invariants checked on every result -----------------------------------------------------------------------------


def is_subsequence(small: list[str], big: list[str]) -> bool:
    iterator = iter(big)
    return all(any(item == candidate for candidate in iterator) for item in small)


def check_chunk_result(text: str, result: ProgramResult) -> None:
    n_lines = text.count("\n") + 1
    assert result.errors == sum(result.failure_kinds[kind] for kind in ERROR_KINDS)
    assert result.dropped == (result.text == "")
    assert result.removed_lines == sorted(set(result.removed_lines))
    assert all(0 <= index < n_lines for index in result.removed_lines)
    if result.kept_original and not result.dropped:
        assert result.text == text
    if not result.dropped and not result.kept_original:
        # Recompute the output from what the result says was done.
        expected = text
        for source, target in result.normalizations:
            expected = expected.replace(source, target)
        removed = set(result.removed_lines)
        expected = "\n".join(line for i, line in enumerate(expected.split("\n")) if i not in removed)
        assert result.text == expected
        assert result.words_after == len(result.text.split())


def check_doc_result(text: str, result: ProgramResult) -> None:
    assert result.text == ("" if result.dropped else text)
    assert result.ops["keep_doc"] + result.ops["drop_doc"] == 1


def execute_everything(text: str, outputs: list[str], doc_twice: bool = True) -> list[ProgramResult]:
    """Run both modes at both levels; check invariants and determinism (chunk level always run twice, doc level
    twice when ``doc_twice``; results compared field by field); return the chunk-level results."""
    results = []
    doc_output = "\n".join(outputs)
    for mode in MODES:
        first = run_chunk_programs(text, outputs, mode=mode)
        check_chunk_result(text, first)
        assert run_chunk_programs(text, outputs, mode=mode) == first
        doc = run_doc_program(text, doc_output, mode=mode)
        check_doc_result(text, doc)
        if doc_twice:
            assert run_doc_program(text, doc_output, mode=mode) == doc
        results.append(first)
    return results


# --- the random and hostile program generator -----------------------------------------------------------------------

_NAMES = ["remove_lines", "normalize", "keep_chunk", "skip_chunk", "untouch_doc", "keep_doc", "drop_doc", "eval",
          "exec", "open", "__import__", "print", "remove_line", "normalise", "Remove_lines", "os.system"]
_KEYWORDS = ["start", "end", "line_start", "line_end", "source_str", "target_str", "all", "x", "**", "*"]
_NASTY_CHARS = ['"', "'", ",", "(", ")", "=", "\\", "\n", "\r", "\t", "\x00", "#", "`", " ", "\ud800", "\udfff",
                "\u2028", "\x85", "\ufeff", "é", "文", "🙂", "{", "}", "[", "]", ":", ";", "\x0c", "\x0b"]


_GARBAGE_CHARS = _NASTY_CHARS + list("abc()=,")


def hostile_programs(pwned: Path) -> list[str]:
    touch = f"__import__('os').system('touch {pwned}')"
    return [
        touch,
        f"remove_lines({touch}, 1)",
        f"remove_lines(start={touch}, end=2)",
        f"normalize(source_str={touch}, target_str='')",
        f"normalize(open('{pwned}', 'w').write('x'), '')",
        f"exec(\"open('{pwned}', 'w')\")",
        f"eval(\"__import__('os').system('touch {pwned}')\")",
        f"[remove_lines(0, 1) for _ in __import__('os').system('touch {pwned}')]",
        f"import os; os.system('touch {pwned}')",
        f"remove_lines.__globals__['__builtins__']['exec'](\"open('{pwned}','w')\")",
        f"normalize(**{{'source_str': __import__('os').system('touch {pwned}')}})",
        f"keep_chunk() if __import__('os').system('touch {pwned}') else drop_doc()",
        f"@__import__('os').system('touch {pwned}')\ndef f(): pass",
        f"with open('{pwned}', 'w'): pass",
        f"class A(remove_lines(0, 1)): x = __import__('os').system('touch {pwned}')",
        "remove_lines(" * 2000 + ")" * 2000,
        "remove_lines(f(" + "(" * 50_000,
        "[" * 60_000,
        "-" * 50_000 + "1",
        "not " * 15_000 + "1",
        "remove_lines(0, " + "9" * 5000 + ")",
        "remove_lines(start=" + "9" * 4299 + ", end=1)",
        "remove_lines(start=0, end=" + "9" * 4000 + ")",
        "remove_lines(0, 9**9**9**9)",
        "remove_lines(start=0, end=10**100)",
        "normalize('a' * 10**10, '')",
        'normalize(source_str="' + "A" * 1_000_000 + '", target_str="")',
        'normalize(source_str="x", target_str="' + "y" * 1_000_000 + '")',
        "normalize(" + "'a'," * 100_000 + ")",
        'normalize("\x00", "")',
        "remove_lines(1,\x002)",
        "\x00" * 1000,
        'normalize("\ud800", "x")',
        "normalize(source_str=\"\udcff\udcfe\", target_str=\"\")",
        "remove_lines(\ud800)",
        '"""' + "unterminated",
        "'\\",
        "\\",
        "remove_lines(start=1, end=2)\\\nremove_lines(3, 4)",
        "remove_lines(start=1, end=2",
        'normalize(source_str="a,b=c)", target_str="(x)")',
        "remove_lines(start=0, end=3)\r\nnormalize('a', 'b')\r\n",
        "drop_doc(); keep_doc()",
        "remove_lines(all=True)",
        "remove_lines(all=1)",
        "remove_lines(True, False)",
        "remove_lines(-1, 5)",
        "remove_lines(1e308, 1e309)",
        "remove_lines(0, float('inf'))",
        "normalize(f'{__import__(\"os\").system(\"touch " + str(pwned) + "\")}', '')",
        "breakpoint()",
        "input()",
        "help()",
        "exit()",
        "raise SystemExit",
        "import sys; sys.exit(1)",
        "while True: pass",
        "def f(): f()\nf()",
        "lambda: (yield)",
        "```python\n" + "remove_lines(0, 0)\n" * 5000 + "```",
        "keep_doc() " * 5000,
        "\n" * 100_000,
        "remove_lines(start=7, end=7)\n" * 1000,
        "é" * 70_000,
    ]


def random_string(rng: random.Random) -> str:
    pool = "abcdefgh w1xyz0123456789" if rng.random() < 0.5 else "".join(_NASTY_CHARS) + "abc w1"
    return "".join(rng.choices(pool, k=rng.randint(0, 12)))


def random_int(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.7:
        return str(rng.randint(0, 40))
    if roll < 0.8:
        return str(rng.randint(-40, -1))
    if roll < 0.85:
        return "9" * rng.randint(19, 60)
    if roll < 0.9:
        return rng.choice(["1.5", "0x10", "1_0", "True", "None", "x", "'3'", "٣", "+4", " 5 ", "07", "2**8"])
    return random_string(rng)


def random_quoted(rng: random.Random) -> str:
    value = random_string(rng)
    style = rng.random()
    if style < 0.4:
        return repr(value)
    if style < 0.7:
        return '"' + value + '"'
    if style < 0.85:
        return "'" + value + "'"
    return rng.choice(['"', "'", '"""', "f'", "b'", "r'", ""]) + value


def well_formed_call(rng: random.Random, remove_only: bool = False) -> str:
    """A valid call as the released models write it, with random (possibly out-of-range) numbers and strings."""
    roll = rng.random()
    if remove_only or roll < 0.6:
        start = rng.randint(0, 70)
        keys = rng.choice([("start=", "end="), ("line_start=", "line_end="), ("", "")])
        return f"remove_lines({keys[0]}{start}, {keys[1]}{start + rng.randint(0, 5)})"
    if roll < 0.9:
        return f"normalize(source_str={random_quoted(rng)}, target_str={random_quoted(rng)})"
    return rng.choice(["keep_chunk()", "skip_chunk()", "remove_lines(all=True)"])


def random_call(rng: random.Random, remove_only: bool = False) -> str:
    if rng.random() < 0.4:
        return well_formed_call(rng, remove_only)
    name = "remove_lines" if remove_only else rng.choice(_NAMES)
    arguments = []
    for _ in range(rng.choice([0, 1, 2, 2, 2, 3])):
        value = random_int(rng) if name == "remove_lines" or rng.random() < 0.3 else random_quoted(rng)
        if rng.random() < 0.6:
            value = f"{rng.choice(_KEYWORDS)}={value}"
        arguments.append(value)
    separator = rng.choice([", ", ",", " , ", ",\n", " "])
    close = rng.choice([")", ")", ")", "", "))", ") # c", ")\\", ") x"])
    return f"{rng.choice(['', '', '', ' ', '    ', '	'])}{name}({separator.join(arguments)}{close}"


def mutate(program: str, rng: random.Random) -> str:
    if not program:
        return program
    at = rng.randrange(len(program))
    roll = rng.random()
    if roll < 0.3:
        return program[:at]  # truncated, as by max_tokens
    if roll < 0.6:
        return program[:at] + rng.choice(_NASTY_CHARS) + program[at:]
    if roll < 0.8:
        return program[:at] + program[at + 1 :]
    return program + "\n" + program  # repeated output


def random_outputs(rng: random.Random, hostile: list[str], remove_only: bool = False) -> list[str]:
    """1-2 chunk outputs of 0-4 lines: random calls (mostly malformed), hostile snippets, garbage, mutations."""
    outputs = []
    for _ in range(rng.randint(1, 2)):
        if not remove_only and rng.random() < 0.08:
            output = rng.choice(hostile)
        elif not remove_only and rng.random() < 0.05:
            output = "".join(rng.choices(_GARBAGE_CHARS, k=rng.randint(0, 40)))
        else:
            output = "\n".join(random_call(rng, remove_only) for _ in range(rng.randint(0, 4)))
            if rng.random() < 0.1:
                output = f"```python\n{output}\n```"
        if rng.random() < 0.3:
            output = mutate(output, rng)
        outputs.append(output)
    return outputs


def text_pool(corpus: list[str]) -> list[str]:
    texts = ["a b c d e f g h i j k l", "one\n\ntwo three\n" * 6, "w1 w2 w3 w4 w5 w6\n" * 30, "x", "\n\n", ""]
    texts.append(
        "Home | About | Contact\n"
        + "\n".join(f'[{i}] sentence {i}, with (parens) and = signs "q"' for i in range(40))
    )
    for text in corpus[::10]:
        texts.append("\n".join(text.split("\n")[:25]))
    return texts


class ExecutionForbidden(AssertionError):
    pass


@pytest.fixture
def no_execution(monkeypatch):
    """Make every way of running code fail loudly while the executor runs. ast.parse must still work: it calls
    compile() with PyCF_ONLY_AST, which only builds a tree."""
    real_compile = builtins.compile

    def forbid(*args, **kwargs):
        raise ExecutionForbidden("code execution attempted")

    def ast_only_compile(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:
            raise ExecutionForbidden("compile() to bytecode attempted")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbid)
    monkeypatch.setattr(builtins, "exec", forbid)
    monkeypatch.setattr(builtins, "compile", ast_only_compile)
    monkeypatch.setattr(builtins, "__import__", _guarded_import(builtins.__import__))
    monkeypatch.setattr(os, "system", forbid)
    monkeypatch.setattr(os, "popen", forbid)
    monkeypatch.setattr(subprocess, "Popen", forbid)
    yield


def _guarded_import(real_import):
    def guarded(name, *args, **kwargs):
        if name.split(".")[0] in ("os", "subprocess", "shutil", "socket", "ctypes", "importlib"):
            raise ExecutionForbidden(f"import of {name} while executing programs")
        return real_import(name, *args, **kwargs)

    return guarded


def test_fuzz_run_random_and_hostile_programs(tmp_path, shared_web_texts, no_execution):
    n_programs = int(os.environ.get("PROXLAB_FUZZ_N", "10000"))
    pwned = tmp_path / "pwned"
    hostile = hostile_programs(pwned)
    # Programs over 4 KiB (deep nesting, 1 MB strings, 100k lines) run on their own and mutated; the random mix
    # draws from the small ones, so that the run stays fast.
    giant = [program for program in hostile if len(program) > 4096]
    small = [program for program in hostile if len(program) <= 4096]
    texts = text_pool(shared_web_texts)
    rng = random.Random(20240917)
    executed = 0
    for program in hostile:
        for text in (texts[-1], texts[0]):
            execute_everything(text, [program])
        executed += 1
    for program in giant:
        for _ in range(5):
            execute_everything(rng.choice(texts), [mutate(program, rng)], doc_twice=False)
            executed += 1
    while executed < n_programs:
        text = rng.choice(texts)
        remove_only = rng.random() < 0.25
        outputs = random_outputs(rng, small, remove_only)
        _, strict = execute_everything(text, outputs, doc_twice=executed % 4 == 0)
        if remove_only:
            assert strict.dropped or is_subsequence(strict.text.split("\n"), text.split("\n"))
            assert strict.normalizations == []
        executed += 1
    assert executed >= n_programs
    assert not pwned.exists()


# --- hypothesis properties ------------------------------------------------------------------------------------------

_any_char = st.characters() | st.sampled_from(["\ud800", "\udfff", "\x00", "\n", '"', ")", ",", "="])
_any_text = st.text(_any_char, max_size=60)
_doc_text = st.lists(st.text(st.sampled_from(list("ab w1,=\"()\t")), max_size=15), min_size=1, max_size=20).map(
    "\n".join
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_doc_text, outputs=st.lists(_any_text, min_size=0, max_size=3))
def test_property_arbitrary_outputs_never_raise_and_are_deterministic(text, outputs):
    execute_everything(text, outputs)


_remove_line = st.builds(
    lambda kw, a, b, close: f"remove_lines({kw[0]}{a}, {kw[1]}{b}{close}",
    st.sampled_from([("start=", "end="), ("line_start=", "line_end="), ("", ""), ("", "end="), ("x=", "")]),
    st.one_of(st.integers(-5, 50), st.integers(0, 10**30)),
    st.one_of(st.integers(-5, 50), st.integers(0, 10**30)),
    st.sampled_from([")", "", ")  # c", "))"]),
)


@settings(max_examples=300, deadline=None)
@given(text=_doc_text, program=st.lists(st.one_of(_remove_line, st.just("remove_lines(all=True)")), max_size=6))
def test_property_strict_remove_only_output_is_a_subsequence(text, program):
    result = run_chunk_programs(text, ["\n".join(program)], mode="strict")
    check_chunk_result(text, result)
    assert result.dropped or is_subsequence(result.text.split("\n"), text.split("\n"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["remove_lines(0, 1)", "keep_chunk()", "normalize('a', 'b')", "x(", "  ", "#c"]),
                max_size=8))
def test_property_parse_program_is_pure(lines):
    output = "\n".join(lines)
    assert parse_program(output) == parse_program(output)


# --- static safety ------------------------------------------------------------------------------------------------

REFINE_MODULES = ["programs/__init__.py", "programs/result.py", "programs/compat.py", "programs/strict.py",
                  "programs/execute.py", "chunking.py", "prompts.py", "refiner_metrics.py"]


@pytest.mark.parametrize("module", REFINE_MODULES)
def test_no_dynamic_code_execution_in_the_source(module):
    tree = ast.parse((REPO / "proxlab" / "refine" / module).read_text())
    forbidden = {"eval", "exec", "compile", "__import__", "execfile", "system", "popen", "Popen", "literal_eval",
                 "import_module", "globals", "locals", "vars"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "compile" and getattr(func.value, "id", "") == "re":
                continue  # regular expressions
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            assert name not in forbidden, f"{module}:{node.lineno} calls {name}"


@pytest.mark.parametrize("module", REFINE_MODULES)
def test_modules_import_only_the_standard_library(module):
    tree = ast.parse((REPO / "proxlab" / "refine" / module).read_text())
    for node in tree.body:  # module level; lazy imports inside functions are allowed
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            roots = [(node.module or "").split(".")[0]]
        else:
            continue
        for root in roots:
            assert root in sys.stdlib_module_names or root in ("__future__", "proxlab"), f"{module} imports {root}"


# --- the benchmark's program generator -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_programs", REPO / "benchmarks" / "bench_programs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_programs_are_valid_strict_programs(bench, shared_web_texts):
    docs = bench.generate(shared_web_texts[::8])
    assert docs
    for text, doc_program, outputs in docs:
        assert parse_program(doc_program)[1] == 0
        for output in outputs:
            calls, errors = parse_program(output)
            assert errors == 0 and calls, output
    report = bench.disagreement(docs)
    assert 0.0 <= report["rate"] <= 1.0 and report["docs"] == len(docs)
    assert bench.throughput(docs, "strict", "chunk", seconds=0.01, repeats=1) > 0
