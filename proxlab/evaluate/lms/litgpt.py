"""An lm-eval ``TemplateLM`` around a LitGPT checkpoint, with no conversion to Hugging Face format.

A checkpoint directory is LitGPT's layout: ``lit_model.pth`` (weights under ``"model"``, as ``litgpt pretrain`` saves
them with optimizer state, or a bare state dict; ``_orig_mod.``/``module.`` prefixes from ``torch.compile``/DDP are
stripped), ``model_config.yaml``, ``tokenizer.json`` + ``tokenizer_config.json``. A pretrain artifact directory
(with ``final/``) resolves to its ``final/`` checkpoint.

- ``loglikelihood``: lm-eval's context/continuation encoding (trailing context whitespace moves into the
  continuation; the whole string is tokenized, then split), batched forward passes with right padding (causal
  attention makes the padded positions invisible to the scored ones), the last ``block_size`` tokens kept when too long.
- ``generate_until``: greedy decoding with a KV cache, stopping at EOS, at ``max_gen_toks`` or when the decoded text
  contains a stop string (cut before it, like lm-eval's HF model).
- BOS: by default the tokenizer's own convention (litgpt ``Tokenizer.use_bos``, i.e. ``add_bos_token`` of
  ``tokenizer_config.json``), the analogue of Hugging Face ``add_special_tokens=True`` that lighteval used;
  ``add_bos_token=True/False`` overrides it.
- Fixed batch size, deterministic order (longest first), float32 on CPU by default.
- Every finished request goes to ``cache_hook.add_partial`` at once (lm-eval's request cache, ``use_cache``), so a
  killed or preempted evaluation keeps the requests it finished.

Registered with lm-eval as ``litgpt`` when this module is imported: ``proxlab lm-eval --model litgpt --model_args
checkpoint_dir=...`` (lm-eval's command line after this import). lm-eval 0.4.13 fills its model registry with its own
models (lazily, names only) only while the registry is empty, so ``lm_eval.models`` is imported before ``litgpt`` is
registered; otherwise ``hf``, ``vllm``... would be unknown in the same process.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own models first: see the registration below)
import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from proxlab.core.logs import ProgressBar, progress
from proxlab.models.hf_export import load_lit_state_dict, resolve_checkpoint_dir  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def is_litgpt_checkpoint(path: str | Path) -> bool:
    try:
        resolve_checkpoint_dir(path)
        return True
    except FileNotFoundError:
        return False


def checkpoint_step(checkpoint_dir: str | Path, meta: dict[str, Any] | None = None) -> int | None:
    """The optimizer step of a checkpoint: ``step_count`` saved in ``lit_model.pth``, else the ``step`` of the
    ``trainer_state.json`` proxlab's pretraining writes into every checkpoint (``final/`` too), else the
    ``step-XXXXXXXX`` dir name, else None."""
    if meta and meta.get("step_count") is not None:
        return int(meta["step_count"])
    state = Path(checkpoint_dir) / "trainer_state.json"
    if state.is_file():
        step = json.loads(state.read_text()).get("step")
        if step is not None:
            return int(step)
    m = re.match(r"^step-(\d+)$", Path(checkpoint_dir).name)
    return int(m.group(1)) if m else None


def load_litgpt(checkpoint_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(model in eval mode, litgpt Config, checkpoint metadata) of a LitGPT checkpoint directory."""
    from litgpt import GPT, Config

    ckpt = resolve_checkpoint_dir(checkpoint_dir)
    config = Config.from_file(ckpt / "model_config.yaml")
    state, meta = load_lit_state_dict(ckpt)
    with torch.device("meta"):
        model = GPT(config)
    model = model.to_empty(device=device)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=False)
    if missing or unexpected:
        raise RuntimeError(f"{ckpt}: state dict mismatch: missing={missing[:8]} unexpected={unexpected[:8]}")
    model = model.to(dtype=dtype)
    # the RoPE tables are non-persistent buffers: rebuild them (in float32, like GPT.__init__) on the real device
    model.cos, model.sin = model.rope_cache(device=torch.device(device))
    model.eval()
    return model, config, meta


@register_model("litgpt")
class LitGPTLM(TemplateLM):
    def __init__(self, checkpoint_dir: str | Path, batch_size: int | str = 16, device: str = "cpu",
                 dtype: str = "float32", max_length: int | None = None, add_bos_token: bool | None = None,
                 max_gen_toks: int = 256, **kwargs: Any) -> None:
        super().__init__()
        from litgpt import Tokenizer

        if kwargs:
            log.warning("LitGPTLM ignores arguments %s", sorted(kwargs))
        self.checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
        self._device = torch.device(device)
        self._dtype = _DTYPES[str(dtype)] if not isinstance(dtype, torch.dtype) else dtype
        self.model, self.config, self.meta = load_litgpt(self.checkpoint_dir, str(self._device), self._dtype)
        self.lit_tokenizer = Tokenizer(self.checkpoint_dir)
        self.add_bos_token = self.lit_tokenizer.use_bos if add_bos_token is None else bool(add_bos_token)
        if isinstance(batch_size, str) and not batch_size.isdigit():
            raise ValueError(f"LitGPTLM needs a fixed integer batch size, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self._max_length = int(max_length or self.config.block_size)
        self.max_gen_toks = int(max_gen_toks)

    # -- lm-eval plumbing --------------------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        t = self.lit_tokenizer
        return t.eos_id if t.eos_id is not None else (t.bos_id if t.bos_id is not None else 0)

    @property
    def prefix_token_id(self) -> int:
        t = self.lit_tokenizer
        return t.bos_id if t.bos_id is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return str(self.checkpoint_dir)

    def get_model_info(self) -> dict[str, Any]:
        return {"model_checkpoint": str(self.checkpoint_dir), "model_name": self.config.name,
                "n_params": sum(p.numel() for p in self.model.parameters())}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        bos = self.add_bos_token if add_special_tokens is None else (add_special_tokens and self.add_bos_token)
        return self.lit_tokenizer.encode(string, bos=bool(bos)).tolist()

    def tok_decode(self, tokens: list[int]) -> str:
        return self.lit_tokenizer.decode(torch.tensor(tokens, dtype=torch.long))

    # -- scoring ------------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward_logprobs(self, seqs: list[list[int]]) -> list[torch.Tensor]:
        """Log-softmax over the vocabulary at every real position of each (right-padded) sequence."""
        width = max(len(s) for s in seqs)
        x = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        logits = self.model(x.to(self._device))
        logits = logits[..., : self.config.vocab_size] if logits.shape[-1] > self.config.vocab_size else logits
        return [F.log_softmax(logits[i, : len(s)].float(), dim=-1) for i, s in enumerate(seqs)]

    def score_windows(self, ctx: list[int], cont: list[int]) -> list[tuple[list[int], list[int]]]:
        """(input, targets) windows whose targets are the last positions of the input and together cover `cont`.

        One window when context + continuation fit `max_length`, cut from the left as lm-eval does. A continuation
        longer than the window (a tiny model's short window on a long HellaSwag ending, where lm-eval's HF model
        asserts) is scored in blocks from its end, each with as much preceding text as fits, so P(cont | ctx) is
        still a sum over every continuation token.
        """
        if not ctx:
            raise ValueError("loglikelihood needs a non-empty context (lm-eval prefixes the EOT token)")
        whole, length = list(ctx) + list(cont), self.max_length
        windows = []
        end = len(whole)
        while end > len(ctx):
            start = max(len(ctx), end - length)
            windows.append((whole[max(0, end - 1 - length): end - 1], whole[start:end]))
            end = start
        return windows

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        if not requests:
            return []
        items = []  # (request index, input, targets): one per window
        windows_left = [0] * len(requests)
        for idx, (key, ctx, cont) in enumerate(requests):
            if not cont:
                raise ValueError(f"empty continuation for request {key!r}")
            windows = self.score_windows(list(ctx), list(cont))
            items += [(idx, inp, targets) for inp, targets in windows]
            windows_left[idx] = len(windows)
        order = sorted(range(len(items)), key=lambda i: (-len(items[i][1]), i))
        bs = override_bs or self.batch_size
        lls, greedy = [0.0] * len(requests), [True] * len(requests)
        pbar = ProgressBar(len(requests), "loglikelihood (litgpt)", "requests", disable=disable_tqdm)
        for start in range(0, len(order), bs):
            chunk = [items[i] for i in order[start: start + bs]]
            lps = self._forward_logprobs([inp for _, inp, _ in chunk])
            finished = []
            for (idx, inp, targets), lp in zip(chunk, lps):
                cont_lp = lp[len(inp) - len(targets): len(inp)]
                target = torch.tensor(targets, dtype=torch.long, device=cont_lp.device)
                lls[idx] += float(cont_lp.gather(-1, target[:, None]).sum())
                greedy[idx] = greedy[idx] and bool((cont_lp.argmax(-1) == target).all())
                windows_left[idx] -= 1
                if windows_left[idx] == 0:
                    finished.append(idx)
            # each request as soon as its last window is scored: lm-eval's request cache keeps what a killed or
            # preempted evaluation finished (CachingLM itself stores results only after the whole call returns)
            for idx in finished:
                if requests[idx][0] is not None:  # loglikelihood_rolling's windows: it saves the whole string
                    self.cache_hook.add_partial("loglikelihood", requests[idx][0], (lls[idx], greedy[idx]))
            pbar.update(len(finished))
        pbar.close()
        return list(zip(lls, greedy))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for (string,) in progress([r.args for r in requests], desc="loglikelihood_rolling (litgpt)", unit="requests",
                                  disable=disable_tqdm):
            windows = list(map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string, add_special_tokens=False), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)))
            lls = self._loglikelihood_tokens([(None, c, t) for c, t in windows], disable_tqdm=True)
            total = sum(ll for ll, _ in lls)
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return results

    # -- generation ---------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def greedy_generate(self, context_ids: list[int], max_new_tokens: int, until: list[str]) -> str:
        """Greedy continuation of ``context_ids``; the decoded text, cut before the first stop string."""
        max_new_tokens = max(1, min(max_new_tokens, self.max_length - 1))
        context_ids = context_ids[-(self.max_length - max_new_tokens):] or [self.prefix_token_id]
        total = len(context_ids) + max_new_tokens
        model = self.model
        model.set_kv_cache(batch_size=1, max_seq_length=total, device=self._device, dtype=self._dtype)
        try:
            x = torch.tensor([context_ids], dtype=torch.long, device=self._device)
            logits = model(x, input_pos=torch.arange(len(context_ids), device=self._device))
            generated: list[int] = []
            text = ""
            pos = len(context_ids)
            eos = self.lit_tokenizer.eos_id
            while True:
                nxt = int(logits[0, -1, : self.config.vocab_size].argmax())
                if eos is not None and nxt == eos:
                    break
                generated.append(nxt)
                text = self.tok_decode(generated)
                if any(s and s in text for s in until) or len(generated) >= max_new_tokens:
                    break
                logits = model(torch.tensor([[nxt]], dtype=torch.long, device=self._device),
                               input_pos=torch.tensor([pos], device=self._device))
                pos += 1
        finally:
            model.clear_kv_cache()
        for s in until:
            if s:
                text = text.split(s)[0]
        return text

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        for req in progress(requests, desc="generate_until (litgpt)", unit="requests", disable=disable_tqdm):
            context, gen_kwargs = req.args
            kw = dict(gen_kwargs or {})
            until = kw.pop("until", None) or []
            if isinstance(until, str):
                until = [until]
            max_gen = int(kw.pop("max_gen_toks", self.max_gen_toks))
            if kw.get("do_sample") or float(kw.get("temperature", 0.0) or 0.0) > 0:
                log.warning("LitGPTLM decodes greedily; ignoring sampling arguments %s", kw)
            eos_text = self.tok_decode([self.eot_token_id]) if self.lit_tokenizer.eos_id is not None else None
            stops = list(until) + ([eos_text] if eos_text and eos_text not in until else [])
            text = self.greedy_generate(self.tok_encode(context), max_gen, stops)
            results.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return results
