"""Chunking (numbered lines, greedy token packing, over-long lines) and the refining prompts."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxlab.refine.chunking import (
    Chunk,
    chunk_document,
    count_words,
    hf_token_counter,
    render_line,
    uncovered_lines,
)
from proxlab.refine.prompts import (
    LLAMA2_CHAT_TEMPLATE,
    SYSTEM_PROMPT,
    chat_messages,
    encode_prompt,
    render_chat,
    render_chunk_prompt,
    render_doc_prompt,
    render_doc_prompt_text,
    render_llama2_chat,
    wrap_chunk,
)


def cost_by_index(costs: list[int]):
    """A token counter that reads the line index from "[007]..." and returns a fixed cost per line."""
    return lambda rendered: costs[int(rendered[1 : rendered.index("]")])]


def doc_of(n_lines: int) -> str:
    return "\n".join(f"line {i}" for i in range(n_lines))


def spans(chunks: list[Chunk]) -> list[tuple[int, int]]:
    return [(chunk.start_line, chunk.end_line) for chunk in chunks]


# --- rendering ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "line", "rendered"),
    [(0, "Home | About", "[000]Home | About"), (7, "", "[007]"), (42, " x", "[042] x"), (1000, "y", "[1000]y")],
)
def test_render_line(index, line, rendered):
    assert render_line(index, line) == rendered


def test_lines_are_split_on_newline_with_empty_lines_counted():
    (chunk,) = chunk_document("a\n\nb\n", count_words)
    assert chunk.lines == ("[000]a", "[001]", "[002]b", "[003]")
    assert chunk.text == "[000]a\n[001]\n[002]b\n[003]"


def test_empty_document_is_one_empty_line():
    assert chunk_document("", count_words) == [Chunk(0, 0, ("[000]",), 1)]


# --- greedy packing -------------------------------------------------------------------------------------------------


def test_greedy_packing_with_global_indices():
    chunks = chunk_document(doc_of(4), cost_by_index([4, 4, 4, 4]), max_tokens=8)
    assert spans(chunks) == [(0, 1), (2, 3)]
    assert chunks[1].lines == ("[002]line 2", "[003]line 3") and chunks[1].token_count == 8


def test_a_line_that_fits_exactly_stays():
    assert spans(chunk_document(doc_of(3), cost_by_index([5, 5, 1]), max_tokens=10)) == [(0, 1), (2, 2)]


def test_overlong_line_is_its_own_chunk_by_default():
    chunks = chunk_document(doc_of(4), cost_by_index([3, 20, 3, 3]), max_tokens=10)
    assert spans(chunks) == [(0, 0), (1, 1), (2, 3)]
    assert chunks[1].token_count == 20


def test_overlong_line_can_be_skipped_as_in_paper_algorithm_1():
    chunks = chunk_document(doc_of(5), cost_by_index([20, 3, 30, 40, 3]), max_tokens=10, overlong="skip")
    assert spans(chunks) == [(1, 1), (4, 4)]
    assert uncovered_lines(chunks, 5) == [0, 2, 3]


def test_unknown_overlong_option_is_rejected():
    with pytest.raises(ValueError):
        chunk_document("x", count_words, overlong="truncate")


def test_batched_counter_is_used_once_per_document():
    class Counter:
        def __init__(self):
            self.batches = []

        def __call__(self, line):
            raise AssertionError("per-line counting should not be used when count_many exists")

        def count_many(self, lines):
            self.batches.append(list(lines))
            return [2] * len(lines)

    counter = Counter()
    chunks = chunk_document(doc_of(5), counter, max_tokens=4)
    assert spans(chunks) == [(0, 1), (2, 3), (4, 4)] and len(counter.batches) == 1


def greedy_oracle(costs: list[int], max_tokens: int, skip: bool) -> list[tuple[int, int]]:
    """Reference trunc_text / paper Alg. 1 in words: pack lines while the sum stays within max_tokens; an over-long line
    closes the current chunk and is sent alone (reference) or flagged as skipped (paper)."""
    result, current, total = [], [], 0
    for index, cost in enumerate(costs):
        if total + cost <= max_tokens:
            current.append(index)
            total += cost
            continue
        if current:
            result.append((current[0], current[-1]))
        current, total = [index], cost
        if cost > max_tokens:
            if not skip:
                result.append((index, index))
            current, total = [], 0
    if current:
        result.append((current[0], current[-1]))
    return result


@settings(max_examples=300, deadline=None)
@given(costs=st.lists(st.integers(1, 30), min_size=1, max_size=60), max_tokens=st.integers(1, 40), skip=st.booleans())
def test_packing_matches_the_greedy_rule(costs, max_tokens, skip):
    text = doc_of(len(costs))
    chunks = chunk_document(text, cost_by_index(costs), max_tokens, overlong="skip" if skip else "own_chunk")
    assert spans(chunks) == greedy_oracle(costs, max_tokens, skip)
    for chunk in chunks:
        assert chunk.token_count == sum(costs[chunk.start_line : chunk.end_line + 1])
        assert chunk.token_count <= max_tokens or chunk.num_lines == 1
        assert chunk.lines == tuple(render_line(i, f"line {i}") for i in range(chunk.start_line, chunk.end_line + 1))
    covered = [i for chunk in chunks for i in range(chunk.start_line, chunk.end_line + 1)]
    assert covered == sorted(set(covered))
    if not skip:
        assert covered == list(range(len(costs)))
    else:
        assert uncovered_lines(chunks, len(costs)) == [i for i, cost in enumerate(costs) if cost > max_tokens]


# --- real tokenizers ------------------------------------------------------------------------------------------------


def test_llama_token_count_includes_one_bos_per_line(llama_tokenizer):
    count = hf_token_counter(llama_tokenizer)
    line = "[000]Home | About | Contact"
    without_bos = len(llama_tokenizer.encode(line, add_special_tokens=False))
    assert count(line) == len(llama_tokenizer.encode(line)) == without_bos + 1
    assert llama_tokenizer.encode(line)[0] == llama_tokenizer.bos_token_id
    assert hf_token_counter(llama_tokenizer, add_special_tokens=False)(line) == count(line) - 1


def test_raw_tokenizers_and_transformers_count_the_same(
    llama_tokenizer, llama_raw_tokenizer, shared_web_texts
):
    lines = [render_line(i, line) for i, line in enumerate(shared_web_texts[0].split("\n")[:50])]
    raw_counts = hf_token_counter(llama_raw_tokenizer).count_many(lines)
    assert raw_counts == hf_token_counter(llama_tokenizer).count_many(lines)


def test_web_documents_chunk_within_1500_llama_tokens(llama_raw_tokenizer, shared_web_texts):
    count = hf_token_counter(llama_raw_tokenizer)
    longest = sorted(shared_web_texts, key=len)[-5:]
    for text in longest:
        chunks = chunk_document(text, count, max_tokens=1500)
        for chunk in chunks:
            assert chunk.token_count <= 1500 or chunk.num_lines == 1
            assert chunk.token_count == sum(count.count_many(list(chunk.lines)))
        # stripping the "[iii]" prefixes gives the document back
        lines = [line[line.index("]") + 1 :] for chunk in chunks for line in chunk.lines]
        assert "\n".join(lines) == text
    assert any(len(chunk_document(text, count, max_tokens=1500)) > 1 for text in longest)


# --- prompts --------------------------------------------------------------------------------------------------------

LLAMA2_PREFIX = "<s>[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\n"


def test_llama2_chat_format_exact_string():
    assert render_llama2_chat("Hello\nworld") == LLAMA2_PREFIX + "Hello\nworld [/INST]"
    # Meta's template strips the content: trailing whitespace of the document goes
    assert render_llama2_chat("Hello  \n\n") == LLAMA2_PREFIX + "Hello [/INST]"
    assert render_llama2_chat("x", bos_token="<bos>").startswith("<bos>[INST] <<SYS>>")


def test_chunk_message_wrapping():
    assert wrap_chunk("[000]a\n[001]b") == "[doc]\n[000]a\n[001]b\n[/doc]"
    chunk = chunk_document("a\nb", count_words)[0]
    assert render_chunk_prompt(chunk) == LLAMA2_PREFIX + "[doc]\n[000]a\n[001]b\n[/doc] [/INST]"
    assert render_chunk_prompt("[000]a") == render_chunk_prompt(Chunk(0, 0, ("[000]a",), 1))


def test_tokenizer_without_template_falls_back_to_llama2(llama_tokenizer):
    assert llama_tokenizer.chat_template is None
    assert render_doc_prompt_text("Some text.", llama_tokenizer) == LLAMA2_PREFIX + "Some text. [/INST]"


def test_llama2_jinja_template_renders_the_same(llama_tokenizer):
    templated = copy.copy(llama_tokenizer)
    templated.chat_template = LLAMA2_CHAT_TEMPLATE
    for user in ("Some text.", "  padded \n", wrap_chunk("[000]x\n[001]y")):
        rendered = templated.apply_chat_template(chat_messages(user), add_generation_prompt=True, tokenize=False)
        assert rendered == render_llama2_chat(user)
        assert render_chat(user, templated) == rendered


def test_doc_prompt_ids_equal_the_reference_call(llama_tokenizer, shared_web_texts):
    # Reference: apply_chat_template(Llama-2-chat, add_generation_prompt=True, truncation=True, max_length=2000)
    templated = copy.copy(llama_tokenizer)
    templated.chat_template = LLAMA2_CHAT_TEMPLATE
    long_text = max(shared_web_texts, key=len)
    for text in ("A short document.", long_text):
        reference = templated.apply_chat_template(
            chat_messages(text), add_generation_prompt=True, tokenize=True, truncation=True, max_length=2000
        )
        if not isinstance(reference, list):  # newer transformers may return a BatchEncoding
            reference = reference["input_ids"]
        assert render_doc_prompt(text, llama_tokenizer) == reference
    assert len(render_doc_prompt(long_text, llama_tokenizer)) == 2000


def test_doc_prompt_structure_and_truncation(llama_tokenizer):
    ids = render_doc_prompt("A short document.", llama_tokenizer)
    assert ids[0] == llama_tokenizer.bos_token_id and ids.count(llama_tokenizer.bos_token_id) == 1
    closing = llama_tokenizer.convert_ids_to_tokens(ids[-4:])
    assert closing == ["▁[", "/", "INST", "]"]
    long_text = "word " * 3000
    cut = render_doc_prompt(long_text, llama_tokenizer)  # reference: the closing [/INST] is cut off
    assert len(cut) == 2000 and llama_tokenizer.convert_ids_to_tokens(cut[-4:]) != closing
    kept = render_doc_prompt(long_text, llama_tokenizer, truncation="content")
    assert len(kept) == 2000 and llama_tokenizer.convert_ids_to_tokens(kept[-4:]) == closing
    assert kept[:1000] == cut[:1000]
    assert len(render_doc_prompt(long_text, llama_tokenizer, max_prompt_tokens=100)) == 100


@pytest.fixture(scope="module")
def tiny_tokenizers():
    """A word-level tokenizer built in the test: (raw tokenizers.Tokenizer, transformers wrapper)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["[UNK]", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "hello", "world", "[", "]", "doc", "/", "000"]
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    raw.add_special_tokens(["<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    raw.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=copy.deepcopy(raw), bos_token="<s>", eos_token="</s>", unk_token="[UNK]"
    )
    return raw, wrapped


def test_tiny_tokenizer_counts_and_encodes(tiny_tokenizers):
    raw, wrapped = tiny_tokenizers
    assert hf_token_counter(raw)("hello world") == 3  # BOS + 2 words
    assert hf_token_counter(raw, add_special_tokens=False)("hello world") == 2
    assert hf_token_counter(wrapped)("hello world") == 3
    prompt = render_chat("hello world", raw)  # a raw Tokenizer has no template and no bos_token attribute: "<s>"
    assert prompt.startswith("<s>[INST]")
    assert encode_prompt(prompt, raw)[0] == 1 and encode_prompt(prompt, wrapped)[0] == 1
    assert encode_prompt("hello", raw, add_special_tokens=True) == [1, 5]


def test_tokenizer_template_is_used_when_present(tiny_tokenizers):
    _, wrapped = tiny_tokenizers
    chatml = copy.copy(wrapped)
    chatml.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    chunk = Chunk(0, 0, ("[000]hello",), 2)
    expected = (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n[doc]\n[000]hello\n[/doc]<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_chunk_prompt(chunk, chatml) == expected
    assert render_chunk_prompt(chunk, chatml, chat_format="llama2").startswith("<s>[INST] <<SYS>>")
    ids = render_doc_prompt("hello world " * 50, chatml, max_prompt_tokens=20, truncation="content")
    assert len(ids) == 20 and chatml.convert_ids_to_tokens(ids[-3:]) == ["<|im_end|>", "<|im_start|>", "[UNK]"]
    with pytest.raises(ValueError):
        render_chat("x", wrapped, chat_format="tokenizer")
    with pytest.raises(ValueError):
        render_chat("x", chatml, chat_format="mistral")
