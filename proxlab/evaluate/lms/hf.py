"""lm-eval's Hugging Face model (``HFLM``) with shared-context scoring for multiple-choice log-likelihoods.

lm-eval scores every (context, choice) request as a separate full sequence. Multiple-choice tasks send k requests
with the same context, so on CPU most of the time goes into recomputing the context k times. ``SharedContextHFLM``
runs each distinct context once (``use_cache=True``), repeats its KV cache k times and scores the k continuations in
one batch. The token sequences and positions are exactly those HFLM scores (``context_enc + continuation_enc``,
after lm-eval's whitespace move), so log-likelihoods agree with ``HFLM`` to float rounding (tested). Requests that
would need truncation (longer than the model window) fall back to ``HFLM``'s own path. Generation and everything else
is ``HFLM``'s.

Registered with lm-eval as ``hf-shared``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from proxlab.core.logs import progress

log = logging.getLogger(__name__)


@register_model("hf-shared")
class SharedContextHFLM(HFLM):
    @torch.inference_mode()
    def _score_group(self, ctx: list[int], conts: list[list[int]]) -> list[tuple[float, bool]]:
        dev = self.device
        ids = torch.tensor([ctx], dtype=torch.long, device=dev)
        if getattr(self, "_logits_to_keep", True):
            try:  # only the last position's logits are needed: skips the LM head on the rest of the context
                out = self.model(ids, use_cache=True, logits_to_keep=1)
            except TypeError:
                self._logits_to_keep = False
                out = self.model(ids, use_cache=True)
        else:
            out = self.model(ids, use_cache=True)
        first = F.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each continuation's first token
        rest_len = max(len(c) for c in conts) - 1
        rest_lp = None
        if rest_len > 0:
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(conts))
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            x = torch.full((len(conts), rest_len), pad, dtype=torch.long, device=dev)
            for i, c in enumerate(conts):
                if len(c) > 1:
                    x[i, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            pos = torch.arange(len(ctx), len(ctx) + rest_len, device=dev)
            out2 = self.model(x, past_key_values=cache, use_cache=False,
                              position_ids=pos.unsqueeze(0).expand(len(conts), -1), cache_position=pos)
            rest_lp = F.log_softmax(out2.logits.float(), dim=-1)
        results = []
        for i, c in enumerate(conts):
            lps = [first]
            if len(c) > 1:
                lps.append(rest_lp[i, : len(c) - 1])
            lp = torch.cat([lps[0][None]] + lps[1:], dim=0) if len(lps) > 1 else lps[0][None]
            target = torch.tensor(c, dtype=torch.long, device=lp.device)
            ll = float(lp.gather(-1, target[:, None]).sum())
            greedy = bool((lp.argmax(-1) == target).all())
            results.append((ll, greedy))
        return results

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        if getattr(self, "backend", "causal") != "causal" or not getattr(self, "_shared_ok", True):
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: OrderedDict[tuple[int, ...], list[int]] = OrderedDict()
        long_idx = []
        for i, (_, ctx, cont) in enumerate(requests):
            if len(ctx) + len(cont) > self.max_length or not ctx or not cont:
                long_idx.append(i)
            else:
                groups.setdefault(tuple(ctx), []).append(i)
        if long_idx:
            fallback = super()._loglikelihood_tokens([requests[i] for i in long_idx], disable_tqdm=True,
                                                     override_bs=override_bs)
            for i, r in zip(long_idx, fallback):
                out[i] = r
        order = sorted(groups, key=lambda k: -len(k))
        for ctx in progress(order, desc="loglikelihood (shared context)", unit="contexts", disable=disable_tqdm):
            idx = groups[ctx]
            try:
                scored = self._score_group(list(ctx), [list(requests[i][2]) for i in idx])
            except (AttributeError, TypeError, NotImplementedError) as e:  # e.g. a legacy tuple KV cache
                log.warning("shared-context scoring unsupported by this model (%s); using HFLM's path", e)
                self._shared_ok = False
                todo = [i for i, r in enumerate(out) if r is None]
                for i, r in zip(todo, super()._loglikelihood_tokens([requests[i] for i in todo], disable_tqdm=True,
                                                                    override_bs=override_bs)):
                    out[i] = r
                return out  # type: ignore[return-value]
            for i, r in zip(idx, scored):
                out[i] = r
                key = requests[i][0]
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, r)
        return out  # type: ignore[return-value]
