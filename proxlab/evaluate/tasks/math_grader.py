"""Answer extraction, normalization and comparison of the math-evaluation-harness the paper used.

A reimplementation of the behaviour of ``parser.py`` (``extract_answer``, ``strip_string``) and ``grader.py``
(``math_equal``) of GAIR-NLP/math-evaluation-harness@8e2c3ccc (identical to ZubinGou/math-evaluation-harness@7fd4949d),
following those functions step by step, quirks included (unescaped regexes in the unit list, ``and`` deleted inside
words, the single-letter units, etc.), because the same normalization runs on prediction and ground truth and small
differences change scores.

One environment difference: the harness's symbolic step parses with sympy's ``parse_latex`` (needs
``antlr4-python3-runtime==4.11``; the main environment has 4.9.3, pinned by Hydra), then ``parse_expr``, then
``latex2sympy2`` (not installed). Whichever of those imports works is used, in that order; when neither LaTeX parser
is available a small LaTeX-to-sympy rewrite (``\\frac``, ``\\sqrt``, ``\\cdot``, ``\\pi``, ``^``, braces) is tried after
``parse_expr``. Only the symbolic step (``math_equal``'s last resort, ``symbolic_equal``) is affected; string and
numeric equality are exact.
"""

from __future__ import annotations

import math
import re
import signal
import threading
from contextlib import contextmanager
from functools import partial
from typing import Any

MC_TASKS = ("mathqa", "mmlu_stem", "sat_math")

# -- strip_string (B.5) -------------------------------------------------------------------------------------------------

# Unit words, mostly from MathQA (the harness's list, verbatim, used as unescaped regex fragments).
_UNITS = [
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile",
    "q .", "monkey", "prime", "ratio", "profit of rs", "rd", "o", "gm",
    "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab", "way", "west",
    "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h",
    "no change", "men", "soldier", "pie", "bc", "excess", "st",
    "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise",
    "a . m", "th", "π r 2", "sq", "mark", "l", "toy", "coin",
    "sq . m", "gallon", "° f", "profit", "minw", "yr", "women",
    "feet", "am", "pm", "hr", "cu cm", "square", "v â € ™", "are",
    "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number",
    "kmph", "day", "hour", "minute", "min", "second", "man", "woman",
    "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³", "hectare", "more",
    "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month",
    "km", "m", "cm", "mm", "apple", "liter", "loss", "yard",
    "pure", "year", "increase", "decrease", "d", "less", "Surface",
    "litre", "pi sq m", "s .", "metre", "meter", "inch",
]
UNIT_TEXTS = _UNITS + [u + "s" for u in _UNITS]
# (pattern, literal prefix): the prefix before the first regex metacharacter ("." is the only one in the list) must
# occur in the current string for the pattern to match, so checking it first skips most substitutions exactly.
_UNIT_PATTERNS = [(re.compile(r"(^|\W)" + u + r"($|\W)"), u.split(".")[0]) for u in UNIT_TEXTS]


def _word_to_number(text: str) -> str:
    try:
        from word2number import w2n
    except ImportError:  # pragma: no cover - lm-eval depends on word2number
        return text
    try:
        return str(w2n.word_to_num(text))
    except Exception:
        return text


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part[:1] == "{":
            out += part
            continue
        if len(part) < 2:
            return s
        a, b, rest = part[0], part[1], part[2:]
        if b != "{":
            out += "{" + a + "}{" + b + "}" + rest
        else:
            out += "{" + a + "}" + b + rest
    return out


def _fix_a_slash_b(s: str) -> str:
    pieces = s.split("/")
    if len(pieces) != 2:
        return s
    a, b = pieces
    try:
        ia = a if "sqrt" in a else int(a)
        ib = b if "sqrt" in b else int(b)
        if s != f"{ia}/{ib}":
            return s
        return "\\frac{" + str(ia) + "}{" + str(ib) + "}"
    except (ValueError, TypeError):
        return s


def strip_string(value: Any) -> str:
    s = str(value).strip()
    s = s.replace("\n", "")
    s = s.rstrip(".")
    s = s.replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s)
    s = s.replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\{", "{").replace("\\}", "}")
    # a trailing \text{...} is a unit, unless removing it leaves nothing
    without_unit = re.sub(r"\\text{.*?}$", "", s).strip()
    if without_unit != "" and without_unit != s:
        s = without_unit
    for _ in range(2):
        for pat, literal in _UNIT_PATTERNS:
            if literal not in s:
                continue
            candidate = pat.sub(r"\1\2", s)
            if candidate != "":
                s = candidate
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _word_to_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", "{}")
    s = s.replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    # (the harness's unwrap of {..}/(..)/[..] here can never fire: its condition needs isalnum() on a bracketed string)
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("and", "")
    s = s.replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    s = _fix_a_slash_b(s)
    return s


# -- extraction (B.4) ---------------------------------------------------------------------------------------------------

_MC_RE = re.compile(r"answer is \(?(?P<ans>[abcde])\)?")
_NUM_RE = re.compile(r"-?\d*\.?\d+")


def extract_multi_choice(text: str) -> str:
    if "Problem:" in text:
        text = text.split("Problem:", 1)[0]
    text = text.replace("choice is", "answer is")
    m = _MC_RE.search(text.lower())
    return m.group("ans").upper() if m else "placeholder"


def _boxed_content(text: str) -> str:
    tail = text.split("boxed")[-1]
    if not tail:
        return ""
    if tail[0] != "{":
        return tail.split("$")[0].strip()
    depth, out = 1, []
    for ch in tail[1:]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        out.append(ch)
    return "".join(out)


def extract_answer(text: str, task: str) -> str:
    """The harness's ``extract_answer(pred_str, data_name)``; ``task`` is the harness data name (``math`` is
    ``minerva_math``)."""
    if task in MC_TASKS:
        return extract_multi_choice(text)
    if "final answer is $" in text and "$. I hope" in text:
        pred = text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in text:
        pred = _boxed_content(text)
        if text.split("boxed")[-1] == "":
            return ""
    elif "he answer is" in text:
        pred = text.split("he answer is")[-1].strip()
    elif "final answer is" in text:
        pred = text.split("final answer is")[-1].strip()
    else:
        nums = _NUM_RE.findall(text.replace(",", ""))
        pred = nums[-1] if nums else ""
    pred = re.sub(r"\n\s*", "", pred)
    if pred[:1] == ":":
        pred = pred[1:]
    if pred[-1:] == ".":
        pred = pred[:-1]
    if pred[-1:] == "/":
        pred = pred[:-1]
    return strip_string(pred)


def prediction_from_generation(generation: str, task: str) -> str:
    """What the harness scores for one cot generation: strip, extract, ``strip_string`` once more (``run_execute``)."""
    text = generation.rstrip().strip()
    if not text:
        return ""
    return strip_string(extract_answer(text, task))


# -- comparison (B.6) ---------------------------------------------------------------------------------------------------

def _parse_digits(num: Any) -> float | None:
    s = str(num).replace(",", "")
    try:
        return float(s)
    except ValueError:
        if s.endswith("%"):
            s = s[:-1]
            if s.endswith("\\"):
                s = s[:-1]
            try:
                return float(s) / 100
            except ValueError:
                pass
    return None


def _is_digit(num: Any) -> bool:
    return _parse_digits(num) is not None


def numeric_equal(prediction: float, reference: float) -> bool:
    return math.isclose(reference, prediction, rel_tol=1e-4)


def _str_to_pmatrix(text: str) -> str:
    out = []
    for m in re.findall(r"\{.*,.*\}", text.strip()):
        m = m.strip("{}")
        out.append(r"\begin{pmatrix}" + m.replace(",", "\\") + r"\end{pmatrix}")
    return ", ".join(out)


def _latex_fallback(s: str) -> str:
    """A small LaTeX -> sympy-syntax rewrite, used only when no LaTeX parser is installed (see module doc)."""
    t = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    t = t.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/").replace("\\pi", "pi")
    for _ in range(8):
        new = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", t)
        new = re.sub(r"\\sqrt\[([^{}\]]*)\]\{([^{}]*)\}", r"((\2)**(1/(\1)))", new)
        new = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", new)
        new = re.sub(r"\{([^{}]*)\}", r"(\1)", new)
        if new == t:
            break
        t = new
    return t.replace("^", "**")


def _sympy_parsers():
    parsers = []
    try:
        from sympy.parsing.latex import parse_latex

        parse_latex("1")  # raises ImportError when the antlr4 runtime is missing or the wrong version
        parsers.append(parse_latex)
    except Exception:
        pass
    from sympy.parsing.sympy_parser import parse_expr

    parsers.append(parse_expr)
    try:
        from latex2sympy2 import latex2sympy  # type: ignore

        parsers.append(latex2sympy)
    except Exception:
        from sympy.parsing.sympy_parser import implicit_multiplication_application, standard_transformations

        transformations = standard_transformations + (implicit_multiplication_application,)
        parsers.append(lambda s: parse_expr(_latex_fallback(s), transformations=transformations))
    return parsers


_PARSERS = None


def _parse(s: str):
    global _PARSERS
    if _PARSERS is None:
        _PARSERS = _sympy_parsers()
    for f in _PARSERS:
        try:
            return f(s.replace("\\\\", "\\"))
        except Exception:
            try:
                return f(s)
            except Exception:
                pass
    return s


def symbolic_equal(a: str, b: str) -> bool:
    from sympy import N, simplify

    a, b = _parse(a), _parse(b)
    try:
        if str(a) == str(b) or a == b:
            return True
    except Exception:
        pass
    try:
        if a.equals(b) or simplify(a - b) == 0:
            return True
    except Exception:
        pass
    try:
        if (abs(a.lhs - a.rhs)).equals(abs(b.lhs - b.rhs)):
            return True
    except Exception:
        pass
    try:
        if numeric_equal(float(N(a)), float(N(b))):
            return True
    except Exception:
        pass
    try:
        if a.shape == b.shape:
            if a.applyfunc(lambda x: round(x, 3)).equals(b.applyfunc(lambda x: round(x, 3))):
                return True
    except Exception:
        pass
    return False


def math_equal(prediction: Any, reference: Any, include_percentage: bool = True, is_close: bool = True) -> bool:
    """The reference harness's answer equality: numbers (with percentages), strings modulo brackets, tuples and
    matrices element-wise, equations, and last sympy."""
    if str(prediction) == str(reference):
        return True
    numeric = _numeric_equal(prediction, reference, include_percentage, is_close)
    if numeric is not None:
        return numeric
    if not prediction and prediction not in (0, False):
        return False
    reference, prediction = str(reference).strip(), str(prediction).strip()
    if "pmatrix" in prediction and "pmatrix" not in reference:
        reference = _str_to_pmatrix(reference)
    same = partial(math_equal, include_percentage=include_percentage, is_close=is_close)
    return (_bracket_free_equal(prediction, reference) or _tuple_equal(prediction, reference, same)
            or _matrix_equal(prediction, reference, same) or _equation_equal(prediction, reference, same)
            or symbolic_equal(prediction, reference))


def _numeric_equal(prediction: Any, reference: Any, include_percentage: bool, is_close: bool) -> bool | None:
    """True/False when both are numbers (the reference also accepts reference/100 and ×100); None otherwise."""
    try:
        if _is_digit(prediction) and _is_digit(reference):
            p, r = _parse_digits(prediction), _parse_digits(reference)
            for item in ([r / 100, r, r * 100] if include_percentage else [r]):
                try:
                    if (numeric_equal(p, item) if is_close else item == p):
                        return True
                except Exception:
                    continue
            return False
    except Exception:
        pass
    return None


def _bracket_free_equal(prediction: str, reference: str) -> bool:
    pred_str, ref_str = prediction, reference
    if (prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("(")) or \
            (prediction.startswith("(") and prediction.endswith(")") and not reference.startswith("[")):
        pred_str, ref_str = pred_str.strip("[]()"), ref_str.strip("[]()")
    for ch in "{}()":
        ref_str, pred_str = ref_str.replace(ch, ""), pred_str.replace(ch, "")
    return pred_str.lower() == ref_str.lower()


def _tuple_equal(prediction: str, reference: str, same) -> bool:
    bracketed = re.compile(r"(\(|\[).+(\)|\])")
    if not (bracketed.match(prediction) and bracketed.match(reference)):
        return False
    pp, rp = prediction[1:-1].split(","), reference[1:-1].split(",")
    return len(pp) == len(rp) and all(same(x, y) for x, y in zip(pp, rp))


def _is_matrix(x: str) -> bool:
    return x.startswith(("\\begin{pmatrix}", "\\begin{bmatrix}")) and x.endswith(("\\end{pmatrix}", "\\end{bmatrix}"))


def _matrix_equal(prediction: str, reference: str, same) -> bool:
    if not (_is_matrix(prediction) and _is_matrix(reference)):
        return False
    n0, n1 = len("\\begin{pmatrix}"), len("\\end{pmatrix}")
    pl = [ln.strip() for ln in prediction[n0:-n1].split("\\\\") if ln.strip()]
    rl = [ln.strip() for ln in reference[n0:-n1].split("\\\\") if ln.strip()]
    if len(pl) != len(rl):
        return False
    for a, b in zip(pl, rl):
        ap, bp = a.split("&"), b.split("&")
        if len(ap) != len(bp) or not all(same(x, y) for x, y in zip(ap, bp)):
            return False
    return True


def _equation_equal(prediction: str, reference: str, same) -> bool:
    if prediction.count("=") == 1 and reference.count("=") == 1:
        pl_, pr_ = prediction.split("=")
        rl_, rr_ = reference.split("=")
        pred = f"{pl_.strip()} - ({pr_.strip()})"
        ref = f"{rl_.strip()} - ({rr_.strip()})"
        return symbolic_equal(pred, ref) or symbolic_equal(f"-({pred})", ref)
    if prediction.count("=") == 1 and len(prediction.split("=")[0].strip()) <= 2 and "=" not in reference:
        return same(prediction.split("=")[1], reference)
    if reference.count("=") == 1 and len(reference.split("=")[0].strip()) <= 2 and "=" not in prediction:
        return same(prediction, reference.split("=")[1])
    return False


class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float):
    """SIGALRM-based limit in the main thread; elsewhere no limit (signals only reach the main thread)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _raise(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def math_equal_timeout(prediction: Any, reference: Any, timeout: float = 3.0) -> bool:
    """``math_equal`` with the harness's 3 s limit per comparison; a timeout counts as wrong."""
    if str(prediction) == str(reference):
        return True
    try:
        with _time_limit(timeout):
            return bool(math_equal(prediction, reference))
    except _Timeout:
        return False
