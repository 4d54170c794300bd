"""OpenAI-compatible completions backend: any ``/v1/completions`` endpoint (e.g. ``vllm serve`` on another node).

* Prompts are sent as **token ids** (``"prompt": [ids]``, which vLLM accepts), rendered locally with the refiner's
  tokenizer (``refine.*.tokenizer``, else ``refine.*.model``), so the server sees exactly what the offline backends see.
* Greedy: ``temperature=0``; ``max_tokens`` per prompt as capped by ``Backend.generate`` (the context length is taken
  from the local config, or ``max_model_len``).
* ``return_token_ids`` (vLLM ≥ 0.10) returns the generated ids, decoded here like the other backends; a server that
  ignores it is handled by re-encoding its text (and counting ``usage.completion_tokens``).
* Bounded concurrency (``concurrency`` requests in flight, a thread pool) and retries with exponential backoff on
  connection errors, timeouts, 408/429/5xx (``max_retries``). Other HTTP errors fail the stage at once, naming the
  server's message; the shard is redone on the next run.
* The model name sent is the served model that matches ``refine.*.model``, or the only model the server lists.

Standard library only (urllib), so it runs in either environment.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from proxlab.core.config import GenerateConfig
from proxlab.refine.backends.base import Backend, load_tokenizer, model_context_len

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointError(RuntimeError):
    pass


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model_path: str, cfg: GenerateConfig, served_name: str | None = None):
        super().__init__(model_path, cfg)
        endpoint = cfg.endpoint
        if not endpoint:
            raise ValueError("refine backend=openai needs refine.<level>.endpoint (base URL, e.g. http://host:8000/v1)")
        endpoint = endpoint.rstrip("/")
        self.base = endpoint if endpoint.endswith("/v1") else endpoint + "/v1"
        self.concurrency = max(1, int(cfg.concurrency))
        self.max_retries = max(0, int(cfg.max_retries))
        self.timeout_s = float(cfg.request_timeout_s)
        self.tokenizer = load_tokenizer(cfg.tokenizer or model_path)
        has_config = (Path(model_path) / "config.json").exists() or not Path(model_path).is_absolute()
        self.context_len = int(cfg.max_model_len or (model_context_len(model_path) if has_config else 0))
        self.served = served_name or self._served_model(cfg.model, model_path)
        self.retries = 0

    # -- HTTP ---------------------------------------------------------------------------------------------------------
    def _request(self, path: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        delay = 0.5
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(self.base + path, data=data, method="GET" if data is None else "POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as e:
                body = e.read().decode(errors="replace")[:500]
                if e.code not in RETRY_STATUS or attempt == self.max_retries:
                    raise EndpointError(f"{self.base}{path}: HTTP {e.code}: {body}") from e
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                if attempt == self.max_retries:
                    raise EndpointError(f"{self.base}{path}: {e} (after {attempt + 1} attempts)") from e
            self.retries += 1
            time.sleep(delay * (1 + random.random() * 0.25))
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _served_model(self, wanted: str, model_path: str) -> str:
        ids = [m["id"] for m in self._request("/models").get("data", [])]
        for name in (wanted, model_path):
            if name in ids:
                return name
        if len(ids) == 1:
            return ids[0]
        raise EndpointError(f"{self.base} serves {ids}; none matches refine model {wanted!r}")

    def _one(self, ids: list[int], max_tokens: int) -> tuple[list[int], str]:
        resp = self._request("/completions", {
            "model": self.served, "prompt": ids, "max_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0,
            "n": 1, "stream": False, "return_token_ids": True, "skip_special_tokens": True,
        })
        choice = resp["choices"][0]
        out_ids = choice.get("token_ids")
        if out_ids is None:  # not a vLLM server: re-encode the text (approximate token ids)
            out_ids = self.tokenizer.encode(choice.get("text", ""), add_special_tokens=False)
        reason = "stop" if choice.get("finish_reason") == "stop" else "length"
        return list(out_ids), reason

    def _generate(self, prompts: list[list[int]], max_tokens: list[int]) -> list[tuple[list[int], str]]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts, max_tokens))
