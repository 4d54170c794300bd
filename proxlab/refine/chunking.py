"""Split a document into numbered-line chunks for the chunk-level refining model.

Reference: GAIR-NLP/ProX ``data_gen/tasks/apply_chunk_refining.py`` (``trunc_text``); paper §A.4, Algorithm 1.

* Lines are the document split on "\\n" (empty lines count). Line ``i`` is rendered ``[{i:03d}]{line}`` with no
  space; indices are 0-based and global to the document, so chunk 2 continues where chunk 1 stopped and the
  programs' line numbers can be applied to the whole document.
* Lines are packed greedily into chunks of at most ``max_tokens`` (1500) tokens, counted per rendered line.
* A single line longer than ``max_tokens``: ``overlong="own_chunk"`` sends it alone as its own chunk (reference
  code); ``overlong="skip"`` leaves it out of every chunk (paper Alg. 1 ``FlagAsSkipped``). A skipped line stays in the
  document; no program can remove it.

Token counts come from a callable. The reference counts ``len(tokenizer.encode(rendered_line))`` with the refining
model's tokenizer, whose ``encode`` adds special tokens: for a Llama tokenizer that is one BOS per line, so each line
costs one token more than its text. ``hf_token_counter`` builds that callable from a transformers or ``tokenizers``
tokenizer; ``count_words`` is the paper's word-count shortcut.

Only the standard library is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

DEFAULT_MAX_TOKENS = 1500
OVERLONG_OWN_CHUNK = "own_chunk"
OVERLONG_SKIP = "skip"
Overlong = Literal["own_chunk", "skip"]


@dataclass(frozen=True)
class Chunk:
    """Consecutive lines ``start_line..end_line`` (inclusive, global 0-based) of one document."""

    start_line: int
    end_line: int
    lines: tuple[str, ...]  # rendered "[000]text" lines
    token_count: int  # sum of the per-line counts

    @property
    def text(self) -> str:
        """The numbered lines joined by "\\n": what goes between [doc] and [/doc]."""
        return "\n".join(self.lines)

    @property
    def num_lines(self) -> int:
        return self.end_line - self.start_line + 1


def render_line(index: int, line: str, min_digits: int = 3) -> str:
    """``[007]text``; indices of 1000 and more simply print with more digits (``[1000]text``)."""
    return f"[{index:0{min_digits}d}]{line}"


def count_words(rendered_line: str) -> int:
    """Whitespace word count: the paper's Alg. 1 replaces token counting by word counting to save time."""
    return len(rendered_line.split())


class TokenCounter:
    """``count(line) -> int`` plus a batched ``count_many(lines) -> list[int]`` used by ``chunk_document``."""

    def __init__(self, tokenizer, add_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens
        # A ``tokenizers.Tokenizer`` has encode_batch and returns Encoding objects; transformers tokenizers are
        # callable and return input_ids.
        self._is_raw_tokenizers = hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "get_vocab_size")

    def __call__(self, line: str) -> int:
        return self.count_many([line])[0]

    def count_many(self, lines: Sequence[str]) -> list[int]:
        if not lines:
            return []
        if self._is_raw_tokenizers:
            encodings = self.tokenizer.encode_batch(list(lines), add_special_tokens=self.add_special_tokens)
            return [len(encoding.ids) for encoding in encodings]
        input_ids = self.tokenizer(list(lines), add_special_tokens=self.add_special_tokens)["input_ids"]
        return [len(ids) for ids in input_ids]


def hf_token_counter(tokenizer, add_special_tokens: bool = True) -> TokenCounter:
    """Token counter matching the reference: ``len(tokenizer.encode(line))`` with the default special tokens.

    ``add_special_tokens=True`` (the reference) counts the BOS a Llama tokenizer adds to every line. Works with a
    transformers tokenizer or a ``tokenizers.Tokenizer``.
    """
    return TokenCounter(tokenizer, add_special_tokens=add_special_tokens)


def _count_all(rendered: list[str], count_tokens: Callable[[str], int]) -> list[int]:
    count_many = getattr(count_tokens, "count_many", None)
    if count_many is not None:
        return list(count_many(rendered))
    return [count_tokens(line) for line in rendered]


def chunk_document(
    text: str,
    count_tokens: Callable[[str], int],
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlong: Overlong = OVERLONG_OWN_CHUNK,
    min_digits: int = 3,
) -> list[Chunk]:
    """Greedy packing of the rendered lines of ``text`` into chunks of at most ``max_tokens`` tokens.

    Same packing as the reference ``trunc_text``: a line is appended if the chunk stays within ``max_tokens``;
    otherwise the current chunk is closed and the line starts a new one. An over-long line (more than ``max_tokens``
    by itself) closes the current chunk and is then either its own chunk or skipped, per ``overlong``.
    """
    if overlong not in (OVERLONG_OWN_CHUNK, OVERLONG_SKIP):
        raise ValueError(f"overlong must be {OVERLONG_OWN_CHUNK!r} or {OVERLONG_SKIP!r}, not {overlong!r}")
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    rendered = [render_line(index, line, min_digits) for index, line in enumerate(text.split("\n"))]
    counts = _count_all(rendered, count_tokens)

    chunks: list[Chunk] = []
    first = 0  # global index of the first line of the open chunk
    open_lines: list[str] = []
    open_tokens = 0

    def close() -> None:
        if open_lines:
            chunks.append(Chunk(first, first + len(open_lines) - 1, tuple(open_lines), open_tokens))

    for index, (line, n_tokens) in enumerate(zip(rendered, counts)):
        if open_tokens + n_tokens <= max_tokens:
            if not open_lines:
                first = index
            open_lines.append(line)
            open_tokens += n_tokens
            continue
        close()
        open_lines, open_tokens = [], 0
        if n_tokens > max_tokens:
            if overlong == OVERLONG_OWN_CHUNK:
                chunks.append(Chunk(index, index, (line,), n_tokens))
            continue
        first, open_lines, open_tokens = index, [line], n_tokens
    close()
    return chunks


def uncovered_lines(chunks: Sequence[Chunk], num_lines: int) -> list[int]:
    """Line indices of a document (``num_lines`` lines) that no chunk contains: the skipped over-long lines."""
    covered = bytearray(num_lines)
    for chunk in chunks:
        covered[chunk.start_line : chunk.end_line + 1] = b"\x01" * chunk.num_lines
    return [index for index, flag in enumerate(covered) if not flag]
