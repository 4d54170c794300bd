"""The refiners' prompts as the reference (GAIR-NLP/ProX) built them, token for token, with the Llama-2 tokenizer.

The recipe, from the reference code GAIR-NLP/ProX (transformers 4.39.1, vLLM 0.4.0):

Doc stage (data_gen/tasks/apply_doc_refining.py):
    "Messages: system "You are a helpful, respectful and honest assistant.", user = document text."
    "Chat template taken from `--token_template` (default `meta-llama/Llama-2-7b-chat-hf`, a gated HF repo); its
     bos/eos tokens are swapped for the refining model's."
    "Tokenized with the chat template, generation prompt added, truncation on, max length 2000 tokens; token ids are
     passed to vLLM."
Chunk stage (data_gen/tasks/apply_chunk_refining.py):
    "Wrapping: `[doc]` + newline + the numbered lines joined by newlines + newline + `[/doc]`."
    "Rendered as text with the refining model's own chat template, same system prompt as the doc stage."
    "with transformers 4.39.1 a Llama tokenizer without `chat_template` falls back to the Llama-2 `[INST] <<SYS>>`
     default template. Passing a rendered string that starts with `<s>` to vLLM likely yields a double BOS."

Meta's Llama-2-chat template: ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST]``. vLLM 0.4 tokenizes a
text prompt with ``tokenizer.encode(prompt)``, i.e. with special tokens: the Llama tokenizer's BOS (id 1) goes before
the rendered ``<s>`` (id 1 again).
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest

from proxlab.core.config import ConfigError, GenerateConfig, RefineConfig, SFTDataConfig, check_generate
from proxlab.refine.build.sft_data import ChunkBuilder, Encoder
from proxlab.refine.chunking import chunk_document, hf_token_counter
from proxlab.refine.generate import PromptBuilder, ShardStats

DOC = "Photosynthesis converts light into chemical energy.\nPlants store it as glucose.\n"
CHUNK_DOC = "Home | About | Contact\nThe mitochondrion is the powerhouse of the cell.\nCopyright 2024"
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Llama-2 ids of the template's fixed pieces, read off the tokenizer once and written down: "<s>" 1, "▁[" 518,
# "INST" 25580, "]" 29962, "▁<<" 3532, "SY" 14816, "S" 29903, ">>" 6778, "\n" 13, "/" 29914.
BOS = 1
HEAD = [518, 25580, 29962, 3532, 14816, 29903, 6778, 13]  # "[INST] <<SYS>>\n"
TAIL = [518, 29914, 25580, 29962]  # " [/INST]"


def by_hand(user: str) -> str:
    """The Llama-2-chat rendering, written out from the recipe (the part after [INST] is .strip()-ed)."""
    return ("<s>[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\n"
            + user.strip() + " [/INST]")


@pytest.fixture(scope="module")
def templated(llama_tokenizer):
    """The Llama-2 tokenizer carrying a chat template of its own, like a refiner built from an instruct model."""
    tok = copy.deepcopy(llama_tokenizer)
    tok.chat_template = CHATML
    return tok


def test_defaults_are_the_reference_format():
    refine, sft = RefineConfig(), SFTDataConfig()
    assert (refine.doc.chat_format, refine.doc.double_bos) == ("llama2", False)
    assert (refine.chunk.chat_format, refine.chunk.double_bos) == ("auto", True)
    assert (sft.doc.chat_format, sft.doc.double_bos) == ("llama2", False)
    assert (sft.chunk.chat_format, sft.chunk.double_bos) == ("auto", True)
    assert GenerateConfig().chat_format == "auto"  # the teacher (annotate.llm) keeps its own template


def test_paper_presets_name_the_reference_format():
    from proxlab.runner.compose import compose_config

    for preset in ("doc", "prox", "prox_xs", "prox_s", "math_prox"):
        cfg = compose_config(["exp=smoke", f"refine={preset}"])
        assert cfg.refine.doc.chat_format == "llama2", preset
        if preset != "doc":
            assert cfg.refine.chunk.double_bos is True and cfg.refine.chunk.chat_format == "auto", preset


def test_doc_prompt_is_llama2_chat_even_with_a_tokenizer_template(templated):
    builder = PromptBuilder(RefineConfig().doc, "doc", templated)
    ids, truncated = builder.doc_prompt(DOC)
    assert not truncated and ids == templated.encode(by_hand(DOC), add_special_tokens=False)  # ids passed to vLLM
    assert ids[:1 + len(HEAD)] == [BOS, *HEAD] and ids[-len(TAIL):] == TAIL and ids.count(BOS) == 1
    auto = PromptBuilder(GenerateConfig(chat_format="auto"), "doc", templated).doc_prompt(DOC)[0]
    assert templated.decode(auto).startswith("<|im_start|>system")  # auto stays an option: the tokenizer's own


@pytest.mark.parametrize("double_bos", [True, False])
def test_chunk_prompt_ids_with_and_without_the_double_bos(llama_tokenizer, double_bos):
    cfg = GenerateConfig(chunk_tokens=1500, double_bos=double_bos)
    rows, prompts = PromptBuilder(cfg, "chunk", llama_tokenizer).rows([{"id": "d", "text": CHUNK_DOC}], ShardStats())
    assert [r["chunk_index"] for r in rows] == [0]
    lines = "\n".join(f"[{i:03d}]{line}" for i, line in enumerate(CHUNK_DOC.split("\n")))
    text = by_hand(f"[doc]\n{lines}\n[/doc]")
    vllm_0_4 = llama_tokenizer.encode(text)  # what vLLM did with the rendered string: special tokens added
    assert vllm_0_4[:2] == [BOS, BOS] and vllm_0_4[2:] == llama_tokenizer.encode(text, add_special_tokens=False)[1:]
    expected = vllm_0_4 if double_bos else vllm_0_4[1:]
    assert prompts[0] == expected
    assert prompts[0][:1 + double_bos + len(HEAD)] == [BOS] * (1 + double_bos) + HEAD
    assert prompts[0][-len(TAIL):] == TAIL


@pytest.mark.parametrize("double_bos", [True, False])
def test_sft_data_chunk_prompts_follow_the_switch(llama_tokenizer, double_bos):
    """sft_data checks each annotation against the refine stage's ids; with either switch it agrees and trains on
    exactly those ids."""
    cfg = SFTDataConfig()
    cfg.chunk.double_bos = double_bos
    enc = Encoder(cfg.chunk, "chunk", llama_tokenizer)
    (chunk,) = chunk_document(CHUNK_DOC, hf_token_counter(llama_tokenizer), cfg.chunk.chunk_tokens, "own_chunk")
    rows = [{"chunk": 0, "noise": "nav", "text": chunk.text, "program": "remove_lines(line_start=0, line_end=0)"}]
    (example,) = ChunkBuilder(cfg, enc, Counter(), Counter(), [])("d", CHUNK_DOC, rows, "test")
    stage = PromptBuilder(GenerateConfig(double_bos=double_bos), "chunk", llama_tokenizer)
    assert example.prompt_ids == stage.rows([{"id": "d", "text": CHUNK_DOC}], ShardStats())[1][0]
    assert example.prompt_ids[:3] == ([BOS, BOS, 518] if double_bos else [BOS, 518, 25580])


def test_double_bos_is_chunk_only():
    check_generate(GenerateConfig(double_bos=True), "chunk")
    with pytest.raises(ConfigError, match="refine.doc.double_bos"):
        check_generate(GenerateConfig(double_bos=True), "doc")
