"""Prompts in the format the released ProX refining models were trained on.

Reference: GAIR-NLP/ProX ``data_gen/tasks/apply_doc_refining.py`` and ``apply_chunk_refining.py``;
vLLM 0.4.0 (``refining_requirements.txt``).

* Both stages: a system message "You are a helpful, respectful and honest assistant." and one user message, rendered
  with a chat template and the generation prompt.
* Doc stage: the user message is the raw document (no line numbers). The reference renders with the Llama-2-chat
  template (``--token_template meta-llama/Llama-2-7b-chat-hf``) whose bos/eos are swapped for the refining model's,
  tokenizes and truncates the *rendered prompt* to 2000 tokens (right truncation, which cuts the closing ``[/INST]``
  of long documents). ``truncation="content"`` instead shortens the document and keeps the template's end.
  proxlab's doc-level default is therefore ``chat_format="llama2"`` (conf/refine/doc.yaml, prox.yaml), whatever
  template the refiner's tokenizer holds; ``auto`` (the tokenizer's template if any) stays an option.
* Chunk stage: the user message is ``[doc]\\n<numbered lines>\\n[/doc]``, rendered as text with the refining model's
  own template. The released refiner's tokenizer has none; transformers 4.39 then fell back to the Llama-2 format, so
  ``chat_format="auto"`` uses the tokenizer's template when it has one and the Llama-2 format otherwise. The reference
  passed that *text* to vLLM, which tokenizes a text prompt with the tokenizer's special tokens: the rendered ``<s>``
  plus vLLM's own BOS, a double BOS. ``encode_chunk_prompt(..., double_bos=True)`` reproduces it
  (``refine.chunk.double_bos``, default true; docs/refine.md "Prompt format").

The Llama-2 format (Meta's chat template):
``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST]`` where the part from ``<<SYS>>`` to the end of the user
text is ``.strip()``-ed (so trailing whitespace of the document disappears).

A rendered prompt starts with the BOS token as text. Tokenize it with ``add_special_tokens=False`` (``encode_prompt``);
chunk prompts go through ``encode_chunk_prompt``, the one place that decides on the double BOS.

transformers is never imported here; tokenizers are duck-typed (transformers tokenizers or ``tokenizers.Tokenizer``).
"""

from __future__ import annotations

from typing import Literal

from proxlab.refine.chunking import Chunk

SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."
DOC_MAX_PROMPT_TOKENS = 2000
DOC_MAX_NEW_TOKENS = 2000  # reference sampling max_tokens, doc stage
CHUNK_MAX_NEW_TOKENS = 256  # reference sampling max_tokens, chunk stage

ChatFormat = Literal["auto", "llama2", "tokenizer"]
Truncation = Literal["prompt", "content"]

# The Llama-2-chat template as a jinja string, for setting ``tokenizer.chat_template`` (e.g. for a vLLM chat API).
# Renders exactly what ``render_llama2_chat`` does.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def chat_messages(user: str, system: str = SYSTEM_PROMPT) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def wrap_chunk(chunk_text: str) -> str:
    """``[doc]\\n{numbered lines}\\n[/doc]``: the chunk-stage user message."""
    return f"[doc]\n{chunk_text}\n[/doc]"


def render_llama2_chat(user: str, system: str = SYSTEM_PROMPT, bos_token: str = "<s>") -> str:
    """The Llama-2-chat rendering of one system + one user message with the generation prompt."""
    content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}"
    return f"{bos_token}[INST] {content.strip()} [/INST]"


def _bos_token(tokenizer) -> str:
    return getattr(tokenizer, "bos_token", None) or "<s>"


def render_chat(user: str, tokenizer=None, chat_format: ChatFormat = "auto", system: str = SYSTEM_PROMPT) -> str:
    """Render system + user with the generation prompt.

    ``auto``: the tokenizer's chat template if it has one, else the Llama-2 format with the tokenizer's BOS.
    ``llama2``: always the Llama-2 format (the reference doc stage). ``tokenizer``: the tokenizer's template, required.
    """
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if chat_format == "llama2" or (chat_format == "auto" and not template):
        return render_llama2_chat(user, system=system, bos_token=_bos_token(tokenizer))
    if chat_format not in ("auto", "tokenizer"):
        raise ValueError(f"unknown chat_format {chat_format!r}")
    if not template:
        raise ValueError("chat_format='tokenizer' but the tokenizer has no chat_template")
    return tokenizer.apply_chat_template(chat_messages(user, system), add_generation_prompt=True, tokenize=False)


def encode_prompt(prompt: str, tokenizer, add_special_tokens: bool = False) -> list[int]:
    """Token ids of a rendered prompt. The template already holds the BOS, hence no special tokens by default."""
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        return list(tokenizer.encode(prompt, add_special_tokens=add_special_tokens).ids)
    return list(tokenizer.encode(prompt, add_special_tokens=add_special_tokens))


def encode_chunk_prompt(prompt: str, tokenizer, double_bos: bool) -> list[int]:
    """Token ids of a rendered chunk prompt, as the refiner receives them.

    ``double_bos=True`` (the reference): the ids vLLM 0.4 made of the rendered text, i.e. the tokenizer's encoding
    *with* its special tokens, so a Llama tokenizer puts its own BOS before the rendered ``<s>``. ``False``: the
    rendered text only (one BOS). A tokenizer that adds no special tokens gives the same ids either way, as in vLLM.
    """
    return encode_prompt(prompt, tokenizer, add_special_tokens=double_bos)


def render_doc_prompt_text(text: str, tokenizer=None, chat_format: ChatFormat = "auto") -> str:
    """The doc-stage prompt as text, before truncation."""
    return render_chat(text, tokenizer, chat_format)


def _template_suffix_ids(tokenizer, chat_format: ChatFormat) -> list[int]:
    """Token ids the template appends after the user text (e.g. `` [/INST]``).

    Compare the renderings of an empty and a one-character user message: their common suffix, capped so that it
    does not reach into the common prefix (a word-level tokenizer may map the probe character to a token that also
    occurs in the template).
    """
    empty = encode_prompt(render_chat("", tokenizer, chat_format), tokenizer)
    probe = encode_prompt(render_chat("x", tokenizer, chat_format), tokenizer)
    prefix = 0
    while prefix < min(len(empty), len(probe)) and empty[prefix] == probe[prefix]:
        prefix += 1
    suffix = 0
    limit = min(len(empty) - prefix, len(probe))
    while suffix < limit and empty[-1 - suffix] == probe[-1 - suffix]:
        suffix += 1
    return probe[len(probe) - suffix :] if suffix else []


def render_doc_prompt(
    text: str,
    tokenizer,
    max_prompt_tokens: int = DOC_MAX_PROMPT_TOKENS,
    truncation: Truncation = "prompt",
    chat_format: ChatFormat = "auto",
) -> list[int]:
    """Token ids of the doc-stage prompt, at most ``max_prompt_tokens`` long.

    ``truncation="prompt"`` (reference): keep the first ``max_prompt_tokens`` ids of the rendered prompt, like
    ``apply_chat_template(..., truncation=True, max_length=2000)``; long documents lose the closing ``[/INST]``.
    ``truncation="content"``: cut the document instead, so the prompt still ends with the template's closing tokens.
    """
    ids = encode_prompt(render_chat(text, tokenizer, chat_format), tokenizer)
    if len(ids) <= max_prompt_tokens:
        return ids
    if truncation == "prompt":
        return ids[:max_prompt_tokens]
    if truncation != "content":
        raise ValueError(f"truncation must be 'prompt' or 'content', not {truncation!r}")
    suffix = _template_suffix_ids(tokenizer, chat_format)
    if len(suffix) >= max_prompt_tokens:
        return ids[:max_prompt_tokens]
    return ids[: max_prompt_tokens - len(suffix)] + suffix


def render_chunk_prompt(chunk: Chunk | str, tokenizer=None, chat_format: ChatFormat = "auto") -> str:
    """The chunk-stage prompt text for a ``Chunk`` (or its numbered-lines text). No truncation: chunks are bounded."""
    chunk_text = chunk.text if isinstance(chunk, Chunk) else chunk
    return render_chat(wrap_chunk(chunk_text), tokenizer, chat_format)
