"""Teachers for `refiner.annotate`: what labels a seed document and writes programs for its chunks (paper §A.1).

* ``RulesTeacher`` (``teacher=rules``, CPU, no model): the doc label is proxlab's rule filters (datatrove Gopher / C4 /
  FineWeb, built by ``proxlab.refine.rules.build_filters``): keep iff no filter drops the document. Its chunk programs
  come from the line rules below (``line_noise``), one program per chunk (noise ``"rules"``).
* ``LLMTeacher`` (``teacher=llm``): any refine backend (hf, vllm, openai) with the paper's prompts verbatim
  (``proxlab.refine.build.prompts``), greedy: two scoring prompts per document, three few-shot program prompts per
  chunk (noise ``navigation`` / ``url`` / ``footer``). Labels are left to Eq. 2 (``label`` null).

Parsing rules (what the stage counts and excludes, never fails on):

* **Score**: the LAST ``score`` in the answer followed (after optional ``**``, ``:``, ``=``, ``is``, ``of``) by a
  number, case-insensitive: "Educational score: 3", "Extraction Quality Score: **4**", "a total score of 2". An
  integer in 0..5 is the score; any other number (6, -1, 3.5) is ``<kind>_out_of_range``; no such pattern is
  ``<kind>_no_score``.
* **Program**: the content of the last closed code fence (``` or the prompts' printed ‘‘‘, with an optional
  ``python`` tag); else the text after an unclosed fence (an answer cut at max_new_tokens); else the whole answer.
  It must parse as Python (``program_syntax_error``) and call one of the program functions (``program_missing``).
  Names and arguments are kept as the teacher wrote them; sft_data maps them to the refiner interface and checks
  them with the strict parser. An excluded row keeps what the teacher wrote in ``program``, for audit.
* A prompt that leaves no room in the teacher's context is not sent: ``prompt_too_long``.

Line rules of the rules teacher (deliberately simple; each one tested on real web documents):

* **url**: a line that is only a URL (``http(s)://…`` or ``www.…``) is removed anywhere; a URL inside a line with
  other text is cut out with ``normalize(source_str=<url>, target_str="")`` (Fig. 11, Example 3).
* **navigation**: in the document's head (the lines before its first content line, a line of 6+ words that is not
  noise), lines that are menu items: a known menu phrase ("Home", "Log in", "Skip to main content", "User Tools", …)
  or a menu bar of 3+ short items split by ``|``, ``»``, ``›``, ``>``, ``•``, ``·``.
* **button**: standalone button / widget text anywhere ("Read more", "Reply", "Share this:", "Advertisement", …).
* **footer**: the document's tail: the longest run of trailing lines that are empty or noise (footer phrases such as
  "©", "All rights reserved", "Privacy Policy", "Powered by", "licensed under Creative Commons", "Last modified", or
  the menus, buttons and URLs above), if it holds at least one footer phrase. Footer lines of 40+ words are content.

Programs use the prompts' names (``remove_lines(start=i, end=j)`` with global line numbers, ``normalize``,
``untouch_doc()`` when nothing is found); consecutive removed lines, and empty lines between them, form one range.

Imports: standard library at module level; datatrove, transformers and the backends inside the teachers.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from proxlab.core.config import AnnotateConfig
from proxlab.core.sharding import ShardStats
from proxlab.refine.build.labels import SCORE_RANGE, eq2_keep
from proxlab.refine.chunking import Chunk

KEEP, DROP = "keep", "drop"
RULES_NOISE = "rules"
PROMPT_TOO_LONG = "prompt_too_long"
# Function names a teacher's program may call: the prompts' and the refiner interface's (sft_data maps them).
PROGRAM_FUNCTIONS = ("untouch_doc", "remove_lines", "normalize", "keep_chunk")


@dataclass
class DocAnnotation:
    label: str | None = None  # keep | drop, from a teacher that labels directly (rules); None: Eq. 2 decides later
    edu_score: int | None = None
    format_score: int | None = None
    edu_raw: str | None = None
    format_raw: str | None = None
    excluded: str | None = None  # why this document has no usable label

    def keep(self) -> bool:
        """Whether its chunks are annotated: the rules label, or Eq. 2 on the scores."""
        if self.excluded:
            return False
        if self.label is not None:
            return self.label == KEEP
        return bool(eq2_keep(self.edu_score, self.format_score))


@dataclass
class ChunkAnnotation:
    noise: str
    program: str | None
    excluded: str | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Parsing teacher answers

_SCORE = re.compile(r"score\**\s*(?:[:=]|\bis\b|\bof\b)?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_FENCE = re.compile(r"(?:```|‘‘‘)[ \t]*(?:python|py)?[ \t]*\n?(.*?)(?:```|‘‘‘)", re.DOTALL)
_OPEN_FENCE = re.compile(r"(?:```|‘‘‘)[ \t]*(?:python|py)?[ \t]*\n?(.*)$", re.DOTALL)


def parse_score(answer: str, kind: str) -> tuple[int | None, str | None]:
    """(score, None), or (None, "<kind>_no_score" | "<kind>_out_of_range"): the module doc's rule."""
    matches = _SCORE.findall(answer or "")
    if not matches:
        return None, f"{kind}_no_score"
    value = float(matches[-1])
    lo, hi = SCORE_RANGE
    if value != int(value) or not lo <= value <= hi:
        return None, f"{kind}_out_of_range"
    return int(value), None


def extract_program(answer: str) -> tuple[str, str | None]:
    """(program text, None), or (what the teacher wrote, "program_missing" | "program_syntax_error")."""
    text = answer or ""
    closed = _FENCE.findall(text)
    if closed:
        program = closed[-1]
    else:
        unclosed = _OPEN_FENCE.search(text)
        program = unclosed.group(1) if unclosed else text
    program = program.strip()
    if not program:
        return text, "program_missing"
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return program, "program_syntax_error"
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    if not called & set(PROGRAM_FUNCTIONS):
        return program, "program_missing"
    return program, None


# ---------------------------------------------------------------------------------------------------------------------
# Line rules of the rules teacher

_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)
_URL_LINE = re.compile(r"^(?:https?://|www\.)\S+$", re.IGNORECASE)
_MENU_SPLIT = re.compile(r"\s*(?:\||»|›|•|·|>|<)\s*")
_EDGE = " \t\u00a0•·|»«›‹>-–—*:"
NAV_PHRASES = frozenset("""
home|homepage|about|about us|contact|contact us|login|log in|logout|log out|sign in|sign up|sign out|register|menu|
main menu|search|search the site|search this site|search for|skip to content|skip to main content|skip to navigation|
jump to navigation|jump to content|main content|main navigation|toggle navigation|navigation|user tools|site tools|
page tools|tools|my account|account|cart|shopping cart|checkout|faq|help|sitemap|site map|blog|news|shop|store|
categories|archives|recent posts|recent comments|meta|aller au contenu|navigation menu|go to navigation|personal tools|
""".replace("\n", "").strip("|").split("|"))
BUTTON_PHRASES = frozenset("""
read more|continue reading|more|reply|share|share this|tweet|pin it|like|like this|print|email|e-mail|back to top|top|
advertisement|advertisements|sponsored|loading|loading...|click here|leave a comment|leave a reply|post a comment|
log in to reply|login to reply|log in to comment|subscribe|comments|0 comments|no comments|previous|next|
previous post|next post|older posts|newer posts|show more|view more|load more|download|close|x|×|ok
""".replace("\n", "").strip("|").split("|"))
_FOOTER = re.compile(
    r"©|\(c\)\s*\d{4}|\bcopyright\b|all rights reserved|privacy policy|terms (?:of|and) (?:use|service|conditions)|"
    r"cookie|powered by|licensed under|creative commons|last (?:modified|updated|edited)|follow us|subscribe to|"
    r"contact us|^tags?:|^filed under|^posted (?:in|by|on)|^categor(?:y|ies):|^share this|^related (?:posts|articles)|"
    r"^this entry was posted|unless otherwise stated", re.IGNORECASE)
CONTENT_WORDS = 6  # a line of this many words, not noise, ends the document's head
FOOTER_MAX_WORDS = 40  # a footer phrase in a longer line is content ("... the cookie jar ...")


def _plain(line: str) -> str:
    return line.strip(_EDGE).lower().rstrip(".!")


def is_url_line(line: str) -> bool:
    return bool(_URL_LINE.match(line.strip()))


def is_menu_line(line: str) -> bool:
    """A menu phrase, or a menu bar: 3+ items of at most 4 words each, split by menu separators."""
    plain = _plain(line)
    if plain in NAV_PHRASES:
        return True
    items = [s for s in _MENU_SPLIT.split(line.strip()) if s]
    return len(items) >= 3 and all(len(s.split()) <= 4 for s in items) and not line.rstrip().endswith((".", "?", "!"))


def is_button_line(line: str) -> bool:
    return _plain(line) in BUTTON_PHRASES or _plain(line).rstrip(".") in BUTTON_PHRASES


def is_footer_line(line: str) -> bool:
    return bool(_FOOTER.search(line.strip())) and len(line.split()) < FOOTER_MAX_WORDS


def line_noise(lines: list[str]) -> dict[int, str]:
    """Line index -> noise kind (navigation | button | url | footer) for the lines the rules remove."""
    noise: dict[int, str] = {}
    for i, line in enumerate(lines):
        if is_url_line(line):
            noise[i] = "url"
        elif is_button_line(line):
            noise[i] = "button"
    for i, line in enumerate(lines):  # the head: menu lines before the first content line
        if not line.strip() or i in noise:
            continue
        if is_menu_line(line):
            noise[i] = "navigation"
        elif len(line.split()) >= CONTENT_WORDS or is_footer_line(line):
            break
    tail: list[int] = []  # the tail: trailing empty or noise lines, with at least one footer phrase
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if not line.strip() or i in noise or is_footer_line(line) or is_menu_line(line):
            tail.append(i)
        else:
            break
    if any(is_footer_line(lines[i]) for i in tail):
        for i in tail:
            if lines[i].strip():
                noise[i] = "footer"
    return noise


def _ranges(removed: list[int], lines: list[str]) -> list[tuple[int, int]]:
    """Consecutive removed lines (empty lines between removed lines join them) as inclusive ranges."""
    out: list[tuple[int, int]] = []
    for i in sorted(removed):
        if out and all(not lines[j].strip() for j in range(out[-1][1] + 1, i)):
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def rules_program(chunk: Chunk, lines: list[str], noise: dict[int, str]) -> str:
    """The program of one chunk of a document (`lines`, its `line_noise`), in the prompts' function names."""
    span = range(chunk.start_line, chunk.end_line + 1)
    calls = [f"remove_lines(start={a}, end={b})" for a, b in _ranges([i for i in span if i in noise], lines)]
    urls: list[str] = []
    for i in span:
        if i not in noise:
            urls += [u.rstrip(".,;:!?)]") for u in _URL.findall(lines[i]) if u.rstrip(".,;:!?)]") not in urls]
    calls += [f"normalize(source_str={json.dumps(u, ensure_ascii=False)}, target_str=\"\")" for u in urls]
    return "\n".join(calls) if calls else "untouch_doc()"


# ---------------------------------------------------------------------------------------------------------------------
# Teachers


class RulesTeacher:
    """Doc labels from the rule filters, chunk programs from the line rules."""

    name = "rules"

    def __init__(self, cfg: AnnotateConfig):
        from proxlab.refine.rules import build_filters

        self.filters = build_filters(cfg.rules)

    def annotate_docs(self, docs: list[dict[str, Any]], stats: ShardStats) -> list[DocAnnotation]:
        from proxlab.refine.rules import apply_filters

        out = []
        for doc in docs:
            _, reason = apply_filters(self.filters, doc["text"], doc["id"])
            if reason:
                stats.count(f"rules_drop/{reason}")
            out.append(DocAnnotation(label=DROP if reason else KEEP))
        return out

    def annotate_chunks(self, text: str, chunks: list[Chunk], stats: ShardStats) -> list[list[ChunkAnnotation]]:
        lines = text.split("\n")
        noise = line_noise(lines)
        for kind in noise.values():
            stats.count(f"rules_lines/{kind}")
        return [[ChunkAnnotation(RULES_NOISE, rules_program(c, lines, noise))] for c in chunks]

    def close(self) -> dict[str, Any]:
        return {}


def render_teacher_prompt(user: str, tokenizer, chat_format: str = "auto") -> str:
    """One user message, no system message, with the generation prompt: the tokenizer's chat template (``auto``,
    ``tokenizer``), else the Llama-2-chat format without a system block (``auto`` without a template, ``llama2``)."""
    template = getattr(tokenizer, "chat_template", None)
    if chat_format == "tokenizer" and not template:
        raise ValueError("refiner.annotate: llm.chat_format=tokenizer but the teacher's tokenizer has no chat_template")
    if chat_format in ("auto", "tokenizer") and template:
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                             tokenize=False)
    return f"{getattr(tokenizer, 'bos_token', None) or '<s>'}[INST] {user.strip()} [/INST]"


class LLMTeacher:
    """The paper's prompts through a refine backend, greedy."""

    def __init__(self, cfg: AnnotateConfig, data_dir: str | None = None, cache_root=None, device: str | None = None):
        from proxlab.refine.backends import make_backend

        self.cfg = cfg.llm
        self.name = f"llm:{cfg.llm.model}"
        self.backend = make_backend(cfg.llm, data_dir=data_dir, cache_root=cache_root, device=device)
        self.tokenizer = self.backend.tokenizer

    def _encode(self, user: str) -> list[int]:
        from proxlab.refine.prompts import encode_prompt

        return encode_prompt(render_teacher_prompt(user, self.tokenizer, self.cfg.chat_format), self.tokenizer)

    def _scoring_prompt(self, template: str, text: str, stats: ShardStats) -> list[int]:
        """The scoring prompt, with the document cut (its closing instructions kept) to llm.max_prompt_tokens."""
        from proxlab.refine.build.prompts import fill

        ids = self._encode(fill(template, text))
        limit = self.cfg.max_prompt_tokens
        if len(ids) <= limit:
            return ids
        stats.count("docs_truncated")
        room = max(limit - len(self._encode(fill(template, ""))) - 8, 0)  # 8: re-tokenizing at the cut may grow it
        doc_ids = self.tokenizer.encode(text, add_special_tokens=False)[:room]
        return self._encode(fill(template, self.tokenizer.decode(doc_ids)))[:limit]

    def _generate(self, prompts: list[list[int]], stats: ShardStats) -> list[tuple[str, str | None]]:
        """(answer, None) or ("", "prompt_too_long") per prompt; counts calls and tokens."""
        gens = self.backend.generate(prompts, self.cfg.max_new_tokens) if prompts else []
        out = []
        for g in gens:
            stats.count("teacher_calls")
            stats.count("prompt_tokens", g.prompt_tokens if g.finish_reason != PROMPT_TOO_LONG else 0)
            stats.count("output_tokens", g.output_tokens)
            stats.count(f"finish/{g.finish_reason}")
            out.append(("", PROMPT_TOO_LONG) if g.finish_reason == PROMPT_TOO_LONG else (g.text, None))
        return out

    def annotate_docs(self, docs: list[dict[str, Any]], stats: ShardStats) -> list[DocAnnotation]:
        from proxlab.refine.build.prompts import EDU_PROMPT, FORMAT_PROMPT

        prompts = [self._scoring_prompt(t, d["text"], stats) for d in docs for t in (EDU_PROMPT, FORMAT_PROMPT)]
        answers = self._generate(prompts, stats)
        out = []
        for k in range(len(docs)):
            (edu_raw, edu_err), (fmt_raw, fmt_err) = answers[2 * k], answers[2 * k + 1]
            edu, edu_why = (None, edu_err) if edu_err else parse_score(edu_raw, "edu")
            fmt, fmt_why = (None, fmt_err) if fmt_err else parse_score(fmt_raw, "format")
            for why in (edu_why, fmt_why):
                if why:
                    stats.count(f"unparsed/{why}")
            # Excluded only when Eq. 2 cannot decide: the edu score is missing, or it is 2 and the format score is.
            excluded = edu_why if edu is None else (fmt_why if edu == 2 and fmt is None else None)
            out.append(DocAnnotation(None, edu, fmt, edu_raw, fmt_raw, excluded))
        return out

    def annotate_chunks(self, text: str, chunks: list[Chunk], stats: ShardStats) -> list[list[ChunkAnnotation]]:
        from proxlab.refine.build.prompts import CHUNK_PROMPTS, fill
        from proxlab.refine.prompts import wrap_chunk

        noises = list(CHUNK_PROMPTS)
        prompts = [self._encode(fill(CHUNK_PROMPTS[n], wrap_chunk(c.text))) for c in chunks for n in noises]
        answers = iter(self._generate(prompts, stats))
        out = []
        for _ in chunks:
            row = []
            for noise in noises:
                answer, err = next(answers)
                program, why = (answer, err) if err else extract_program(answer)
                row.append(ChunkAnnotation(noise, program, why))
            out.append(row)
        return out

    def close(self) -> dict[str, Any]:
        if self.backend is None:
            return {}
        timing = {"backend_load_s": round(self.backend.stats.load_s, 3),
                  "backend_generate_s": round(self.backend.stats.generate_s, 3)}
        self.backend.close()
        self.backend = None
        return timing


def make_teacher(cfg: AnnotateConfig, data_dir: str | None = None, cache_root=None, device: str | None = None):
    if cfg.teacher == "rules":
        return RulesTeacher(cfg)
    if cfg.teacher == "llm":
        return LLMTeacher(cfg, data_dir, cache_root, device)
    raise ValueError(f"refiner.annotate: teacher={cfg.teacher!r}, expected rules or llm")
