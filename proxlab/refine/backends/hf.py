"""transformers backend: batched greedy ``generate`` with length-sorted, left-padded batches, on CPU or GPU.

Runs in the main environment (or any environment with transformers + torch). Prompts are sorted by length so a batch
holds prompts of similar length (little padding); results are returned in the input order. ``batch_size=1`` is the
unbatched reference (no padding at all), used by the benchmark.

Decoding is greedy (``do_sample=False``); generation stops at the model's EOS ids (generation_config.json) or at the
per-prompt cap computed by ``Backend.generate``. The weights are loaded in ``refine.<level>.dtype`` (``auto``: float16
on CUDA, bfloat16 on CPU; ``proxlab.core.config.resolve_refine_dtype``).
"""

from __future__ import annotations

from proxlab.core.config import GenerateConfig, resolve_refine_dtype
from proxlab.refine.backends.base import (Backend, checked_dtype, eos_token_ids, load_tokenizer, model_context_len,
                                          torch_dtype)


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model_path: str, cfg: GenerateConfig, device: str | None = None):
        super().__init__(model_path, cfg)
        import time

        import torch
        from transformers import AutoModelForCausalLM

        t0 = time.perf_counter()
        self.tokenizer = load_tokenizer(cfg.tokenizer or model_path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        threads = cfg.threads
        if not threads and self.device == "cpu" and _hidden_size(model_path) <= 256:
            threads = 1  # tiny matrices: intra-op threads only add synchronization (4-10x slower on 2 busy cores)
        if threads:
            torch.set_num_threads(int(threads))
        self.dtype = resolve_refine_dtype(cfg.dtype, "gpu" if self.device.startswith("cuda") else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(self.dtype))
        self.model = self.model.to(self.device).eval()
        checked_dtype(self.dtype, self.model.dtype)
        self.context_len = model_context_len(model_path, cfg.max_model_len)
        self.eos_ids = eos_token_ids(model_path, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self.batch_size = max(1, int(cfg.batch_size))
        self.stats.load_s = time.perf_counter() - t0

    def _generate(self, prompts: list[list[int]], max_tokens: list[int]) -> list[tuple[list[int], str]]:
        import torch

        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
        results: list[tuple[list[int], str] | None] = [None] * len(prompts)
        eos = set(self.eos_ids)
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            width = max(len(prompts[i]) for i in idx)
            cap = max(max_tokens[i] for i in idx)
            input_ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: the prompts end where generation starts
                ids = prompts[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                mask[row, width - len(ids):] = 1
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=cap,
                    do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=1,
                    eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id,
                )
            new = out[:, width:].tolist()
            for row, i in enumerate(idx):
                ids, reason = [], "length"
                for tok in new[row][: max_tokens[i]]:
                    ids.append(tok)
                    if tok in eos:
                        reason = "stop"
                        break
                results[i] = (ids, reason)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None


def _hidden_size(model_path: str) -> int:
    import json
    from pathlib import Path

    cfg = Path(model_path) / "config.json"
    try:
        return int(json.loads(cfg.read_text()).get("hidden_size", 1 << 30))
    except (OSError, ValueError):
        return 1 << 30
