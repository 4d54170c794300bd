"""Stage "refiner.finetune": full-parameter SFT of a refiner on a refiner.sft_data artifact, with Lightning Fabric.

    python -m proxlab.pretrain.finetune --spec spec.json

spec.config = {"finetune": FinetuneConfig's hashed fields}; inputs "sft" (a refiner.sft_data artifact: its
`<level>/train.jsonl` and `<level>/val.jsonl` rows hold `prompt_ids` and `answer_ids`) and "base" (a LitGPT checkpoint
directory -- the pretrain stage's `final/` or a `step-*` -- or a Hugging Face Llama-style model directory, converted
once into `<out>/.base-litgpt/`). spec.runtime: "accelerator", "devices", "num_nodes", "threads", "settings"
(FinetuneConfig's runtime fields), as for the pretrain stage, whose pieces this reuses: Fabric and strategy
(`distributed.make_fabric`), the optimizer setup (`train.setup_training`), the cosine (`schedule.cosine_lr`),
checkpoints (`checkpoint.save` / `load`) and preemption (`signals.StopFlag`).

The example is `prompt_ids + answer_ids`; the loss is the cross-entropy over the answer tokens only (the targets at
prompt positions are -100), summed over the tokens of the whole optimizer step and divided by their number, so a
micro-batch's padding and the split into micro-batches and ranks do not weigh examples differently. An example longer
than the model's block size is an error here, naming it: sft_data skips those by its stated rule.

Each epoch visits every training example once in an order drawn from (seed, epoch), in steps of `global_batch_size`
examples (the last step of an epoch takes the rest). After each epoch: the validation loss over all of
`<level>/val.jsonl` and a checkpoint `<out>/epoch-NN/` (the pretrain stage's format: LitGPT files plus the HF
config/tokenizer side files, so `proxlab export`, vLLM and transformers take it). The newest epoch checkpoint also
holds the resume state; SIGUSR1/SIGTERM saves `<out>/step-XXXXXXXX/` at the current step and exits 3, and a restart
continues from the newest of them exactly (the order of an epoch is a function of the seed). `final/` is the last
epoch's weights; `refiner.select` picks among the epochs by validation F1. docs/refiners.md, "Fine-tuning".
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from proxlab.core.config import FinetuneConfig, ModelConfig, check_finetune, load
from proxlab.core.logs import get_logger
from proxlab.core.stage import (EXIT_REQUEUE, StageResult, StageSpec, atomic_write_text, rank_and_world,
                                record_process, stage_cli)
from proxlab.pretrain.signals import StopFlag

log = get_logger("pretrain")

SUMMARY = "train_summary.json"
IGNORE_INDEX = -100  # targets at prompt and padding positions
BASE_CACHE = ".base-litgpt"  # an HF base converted to LitGPT's format (removed when the stage completes)
_EPOCH_DIR = re.compile(r"^epoch-(\d{2,})$")
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def main(spec: StageSpec) -> StageResult | None:
    ft = stage_config(spec)
    train_rows, val_rows = read_examples(spec.input("sft"), ft.level)
    if (spec.out / "final" / "COMPLETE").is_file() and (spec.out / SUMMARY).is_file():  # killed after the end
        rank, _ = rank_and_world(spec.runtime.get("rank"), spec.runtime.get("world_size"))
        return _result(json.loads((spec.out / SUMMARY).read_text())) if rank == 0 else None
    stop = StopFlag().install()  # from the start: a signal during setup checkpoints at the first step boundary
    try:
        run = setup(spec, ft, train_rows, val_rows)
        if not fit(run, stop):
            exit_for_requeue(run, stop)
        return finish(run)
    finally:
        stop.uninstall()


def stage_config(spec: StageSpec) -> FinetuneConfig:
    if "finetune" not in spec.config:
        raise KeyError("refiner.finetune: spec.config lacks the 'finetune' section")
    ft = load(FinetuneConfig, spec.config["finetune"], spec.runtime.get("settings"), where="finetune")
    check_finetune(ft)
    return ft


# ---------------------------------------------------------------------------------------------------------------------
# examples


@dataclass(frozen=True)
class Example:
    id: str
    prompt_ids: list[int]
    answer_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


def read_examples(sft_dir: Path, level: str) -> tuple[list[Example], list[Example]]:
    """(train, val) examples of `level` from a refiner.sft_data artifact; a malformed row fails naming file and line."""
    files = [Path(sft_dir) / level / f"{split}.jsonl" for split in ("train", "val")]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"refiner.finetune: input 'sft' has no {f} (finetune.level={level!r}): "
                                    f"is {sft_dir} a refiner.sft_data artifact?")
    train, val = (_read_jsonl_examples(f) for f in files)
    if not train:
        raise ValueError(f"refiner.finetune: {files[0]} holds no examples")
    return train, val


def _read_jsonl_examples(path: Path) -> list[Example]:
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                ex = Example(str(row["id"]), [int(i) for i in row["prompt_ids"]], [int(i) for i in row["answer_ids"]])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"refiner.finetune: {path}:{n}: not an SFT example with id, prompt_ids and "
                                 f"answer_ids ({type(e).__name__}: {e})") from None
            if not ex.prompt_ids or not ex.answer_ids:
                raise ValueError(f"refiner.finetune: {path}:{n}: example {ex.id!r} has an empty "
                                 f"{'prompt_ids' if not ex.prompt_ids else 'answer_ids'}")
            out.append(ex)
    return out


def check_examples(examples: list[Example], where: str, block_size: int, vocab_size: int,
                   eos_id: int | None) -> None:
    """Every example fits the model and speaks its tokenizer, else an error naming the first that does not."""
    for ex in examples:
        if ex.length > block_size:
            raise ValueError(f"refiner.finetune: example {ex.id!r} in {where} has {ex.length} tokens "
                             f"({len(ex.prompt_ids)} prompt + {len(ex.answer_ids)} answer), more than the base "
                             f"model's block_size {block_size}; refiner.sft_data skips such examples: was it built "
                             f"for this model's context?")
        top = max(max(ex.prompt_ids), max(ex.answer_ids))
        if top >= vocab_size or min(min(ex.prompt_ids), min(ex.answer_ids)) < 0:
            raise ValueError(f"refiner.finetune: example {ex.id!r} in {where} holds token id {top} outside the "
                             f"base model's vocabulary of {vocab_size}: built with another tokenizer?")
        if eos_id is not None and ex.answer_ids[-1] != eos_id:
            raise ValueError(f"refiner.finetune: example {ex.id!r} in {where}: its answer_ids end with "
                             f"{ex.answer_ids[-1]}, not the base tokenizer's EOS id {eos_id}: built with another "
                             f"tokenizer?")


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the training examples in `epoch` (0-based): a pure function, so a resumed run sees the same."""
    import random

    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def micro_batches(step_examples: list[Example], rank: int, world: int,
                  micro_batch_size: int) -> list[list[Example] | None]:
    """This rank's micro-batches of one step: examples rank, rank + world, ...; every rank gets the same number
    (FSDP and DDP need each rank to run as many forward/backward passes), None where a rank has nothing left."""
    mine = step_examples[rank::world]
    per_rank = math.ceil(len(step_examples) / world)
    count = math.ceil(per_rank / micro_batch_size)
    chunks: list[list[Example] | None] = [mine[i:i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]
    return chunks + [None] * (count - len(chunks))


def collate(examples: list[Example], pad_id: int = 0):
    """(inputs, targets) of shape (B, T), right-padded: the inputs are `prompt + answer` without its last token, the
    targets the next tokens, with IGNORE_INDEX at prompt positions and padding: only the answer is learnt."""
    import torch

    width = max(ex.length for ex in examples) - 1
    x = torch.full((len(examples), width), pad_id, dtype=torch.long)
    y = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, ex in enumerate(examples):
        seq = ex.prompt_ids + ex.answer_ids
        x[i, :len(seq) - 1] = torch.tensor(seq[:-1])
        first = len(ex.prompt_ids) - 1  # the position whose next token is the answer's first
        y[i, first:first + len(ex.answer_ids)] = torch.tensor(ex.answer_ids)
    return x, y


def answer_loss_sum(logits, targets):
    """Summed cross-entropy over the positions whose target is not IGNORE_INDEX (the answer tokens)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


# ---------------------------------------------------------------------------------------------------------------------
# setup


@dataclass
class Run:
    """What `setup` builds for one process, and where the loop stands."""

    spec: StageSpec
    ft: FinetuneConfig
    fabric: Any
    cfg: Any  # the litgpt.Config
    model: Any
    optimizer: Any
    train_rows: list[Example]
    val_rows: list[Example]
    tokenizer_dir: Path  # the base's tokenizer files: the refiner keeps its base model's tokenizer
    steps_per_epoch: int = 0
    total_steps: int = 0
    warmup_steps: int = 0
    logger: Any = None
    step: int = 0
    loss: float = math.nan  # the last logged step loss
    epoch_sums: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "tokens": 0.0})  # this epoch so far
    epochs: list[dict[str, Any]] = field(default_factory=list)  # {epoch, train_loss, val_loss} per finished epoch
    resumed_from: int = 0
    train_s: float = 0.0

    @property
    def rank(self) -> int:
        return self.fabric.global_rank


def setup(spec: StageSpec, ft: FinetuneConfig, train_rows: list[Example], val_rows: list[Example]) -> Run:
    """Processes, the base model and its optimizer, the step plan, the resumed position and the logger."""
    from lightning.fabric.strategies import FSDPStrategy
    from litgpt import Config
    from litgpt.model import GPT

    from proxlab.core.tracking import MetricsLogger
    from proxlab.models.hf_export import token_ids
    from proxlab.pretrain.distributed import make_fabric, set_threads
    from proxlab.pretrain.model import load_initial_weights
    from proxlab.pretrain.distributed import set_determinism
    from proxlab.pretrain.train import setup_training

    threads = set_threads(spec.runtime)
    fabric = make_fabric(spec.runtime, ft)  # FinetuneConfig names strategy/precision/activation_checkpointing alike
    fabric.launch()
    record_process(spec, "fabric", fabric_local_rank=fabric.local_rank, fabric_global_rank=fabric.global_rank,
                   fabric_device=str(fabric.device))
    base = litgpt_base(spec.input("base"), spec.out / BASE_CACHE, fabric)
    cfg = Config.from_file(base / "model_config.yaml")
    eos = token_ids(base).get("eos_token_id")
    for rows, name in ((train_rows, "train"), (val_rows, "val")):
        check_examples(rows, f"{spec.input('sft')}/{ft.level}/{name}.jsonl", cfg.block_size, cfg.padded_vocab_size,
                       eos)
    set_determinism(fabric, ft)
    fabric.seed_everything(ft.seed)
    fsdp = isinstance(fabric.strategy, FSDPStrategy)
    with fabric.init_module(empty_init=fsdp):
        model = GPT(cfg)
    model.max_seq_length = max(ex.length for ex in train_rows + val_rows)
    if not fsdp:  # under FSDP, setup_training loads the weights into the shards
        model.load_state_dict(load_initial_weights(base))
    model, optimizer = setup_training(fabric, model, ModelConfig(init_checkpoint=str(base)), ft)
    run = Run(spec, ft, fabric, cfg, model, optimizer, train_rows, val_rows, tokenizer_dir=base)
    run.steps_per_epoch = math.ceil(len(train_rows) / ft.global_batch_size)
    run.total_steps = ft.epochs * run.steps_per_epoch
    run.warmup_steps = int(ft.warmup_ratio * run.total_steps)
    log.info(f"refiner.finetune: {cfg.name} from {spec.input('base')}, level {ft.level}: {len(train_rows)} train / "
             f"{len(val_rows)} val examples, {ft.epochs} epochs x {run.steps_per_epoch} steps, "
             f"{fabric.world_size} rank(s) x {threads} thread(s)")
    resume(run)
    run.logger = MetricsLogger.for_stage(spec, run.rank)
    return run


def litgpt_base(base: Path, cache: Path, fabric) -> Path:
    """`base` when it is a LitGPT checkpoint dir (a pretrain artifact: its `final/`); an HF Llama-style dir is converted
    into `cache` (rank 0, once)."""
    base = Path(base)
    if (base / "final" / "lit_model.pth").is_file():  # the experiment graph passes the pretrain stage's artifact
        base = base / "final"
    if (base / "lit_model.pth").is_file() and (base / "model_config.yaml").is_file():
        return base
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"refiner.finetune: input 'base' {base} is neither a LitGPT checkpoint "
                                f"(lit_model.pth + model_config.yaml) nor a Hugging Face model (config.json)")
    if fabric.global_rank == 0 and not (cache / "COMPLETE").is_file():
        hf_to_litgpt(base, cache)
    fabric.barrier()
    return cache


def hf_to_litgpt(hf_dir: Path, out: Path) -> Path:
    """An HF Llama-style model dir -> a LitGPT checkpoint dir (litgpt's own weight mapping, `copy_weights_hf_llama`;
    its `convert_hf_checkpoint` wants a model name from litgpt's table, which a locally built model lacks). Tied
    embeddings are copied into the output head, so the fine-tuned model is untied."""
    import torch
    from litgpt import Config
    from litgpt.scripts.convert_hf_checkpoint import copy_weights_hf_llama
    from litgpt.utils import copy_config_files, save_config

    hf = json.loads((hf_dir / "config.json").read_text())
    unsupported = {k: hf.get(k) for k in ("rope_scaling", "attention_bias", "mlp_bias", "sliding_window") if hf.get(k)}
    if hf.get("model_type") not in ("llama", "mistral") or unsupported:
        raise NotImplementedError(f"refiner.finetune: input 'base' {hf_dir}: only Llama-style HF models are "
                                  f"converted here (model_type {hf.get('model_type')!r}, {unsupported or 'ok'}); "
                                  f"convert it with `litgpt convert_to_litgpt` and pass the LitGPT directory")
    n_head = hf["num_attention_heads"]
    cfg = Config(name=Path(hf.get("_name_or_path") or hf_dir.name).name, block_size=hf["max_position_embeddings"],
                 vocab_size=hf["vocab_size"], padded_vocab_size=hf["vocab_size"], n_layer=hf["num_hidden_layers"],
                 n_head=n_head, n_embd=hf["hidden_size"], n_query_groups=hf.get("num_key_value_heads") or n_head,
                 head_size=hf.get("head_dim") or hf["hidden_size"] // n_head, rotary_percentage=1.0,
                 parallel_residual=False, bias=False, norm_class_name="RMSNorm", norm_eps=hf.get("rms_norm_eps", 1e-5),
                 mlp_class_name="LLaMAMLP", intermediate_size=hf["intermediate_size"],
                 rope_base=int(hf.get("rope_theta", 10000)))
    hf_weights: dict[str, Any] = {}
    files = sorted(hf_dir.glob("*.safetensors")) or sorted(hf_dir.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"refiner.finetune: input 'base' {hf_dir} has config.json but no weights")
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            hf_weights.update(load_file(str(f)))
        else:
            hf_weights.update(torch.load(f, map_location="cpu", weights_only=True))
    if "lm_head.weight" not in hf_weights:  # tie_word_embeddings
        hf_weights["lm_head.weight"] = hf_weights["model.embed_tokens.weight"]
    state: dict[str, Any] = {}
    copy_weights_hf_llama(cfg, {}, state, hf_weights)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"model": {k: v.clone() for k, v in state.items()}}, tmp / "lit_model.pth")
    save_config(cfg, tmp)
    copy_config_files(hf_dir, tmp)  # tokenizer files, config.json, generation_config.json
    (tmp / "COMPLETE").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    log.info(f"refiner.finetune: converted HF model {hf_dir} to LitGPT ({cfg.n_layer} layers, d={cfg.n_embd})")
    return out


def resume(run: Run) -> None:
    """Continue from the newest checkpoint that holds a resume state (an epoch's or a signal's), exactly."""
    from proxlab.pretrain import checkpoint
    from proxlab.pretrain.checkpoint import truncate_metrics

    out = run.spec.out
    if run.rank == 0:
        checkpoint.clean_partial(out)
    run.fabric.barrier()
    ckpt = latest_resumable(out)
    if ckpt is None:
        return
    state, data_state = checkpoint.load(run.fabric, ckpt, run.model, run.optimizer)
    run.step, run.loss = int(state["step"]), float(state.get("loss", math.nan))
    run.epoch_sums, run.epochs = dict(data_state["epoch_sums"]), list(data_state["epochs"])
    run.resumed_from = run.step
    log.info(f"refiner.finetune: resumed from {ckpt} at step {run.step}")
    if run.rank == 0:
        truncate_metrics(out / "metrics.jsonl", run.step)


def latest_resumable(out: Path) -> Path | None:
    best: tuple[int, Path] | None = None
    for p in Path(out).iterdir() if Path(out).is_dir() else ():
        if (_EPOCH_DIR.match(p.name) or _STEP_DIR.match(p.name)) and (p / "COMPLETE").is_file() \
                and (p / "resume.pth").is_file():
            step = int(json.loads((p / "trainer_state.json").read_text())["step"])
            if best is None or step > best[0]:
                best = (step, p)
    return best[1] if best else None


# ---------------------------------------------------------------------------------------------------------------------
# fit


def fit(run: Run, stop: StopFlag) -> bool:
    """All epochs' optimizer steps; validation and `epoch-NN/` after each epoch. False when a signal stopped it (every
    rank saved `step-*` first)."""
    from proxlab.pretrain.schedule import cosine_lr

    ft, fabric = run.ft, run.fabric
    fabric.barrier()
    start = last = time.perf_counter()
    while run.step < run.total_steps:
        epoch, k = divmod(run.step, run.steps_per_epoch)
        order = epoch_order(len(run.train_rows), ft.seed, epoch)
        step_examples = [run.train_rows[i] for i in order[k * ft.global_batch_size:(k + 1) * ft.global_batch_size]]
        lr = cosine_lr(run.step, ft.lr, ft.min_lr, run.warmup_steps, run.total_steps)
        loss_sum, tokens = train_step(run, step_examples, lr)
        run.step += 1
        if fabric.world_size > 1:
            loss_sum = fabric.all_reduce(loss_sum, reduce_op="sum")
        run.loss = float(loss_sum.item()) / tokens
        run.epoch_sums["loss"] += run.loss * tokens
        run.epoch_sums["tokens"] += tokens
        if run.step % ft.log_interval == 0 or run.step % run.steps_per_epoch == 0:
            now = time.perf_counter()
            run.logger.log({"loss": run.loss, "lr": lr, "epoch": run.step / run.steps_per_epoch,
                            "step_time_s": (now - last) / ft.log_interval}, step=run.step)
            log.info(f"step {run.step}/{run.total_steps} | loss {run.loss:.4f} | lr {lr:.3e} | epoch {epoch + 1}")
            last = now
        epoch_end = run.step % run.steps_per_epoch == 0
        if epoch_end:
            end_epoch(run, epoch + 1)
        if run.step < run.total_steps and stop.any_rank(fabric):
            if not epoch_end:  # an epoch's checkpoint already holds the resume state
                save(run, f"step-{run.step:08d}", with_resume_state=True)
            return False
    run.train_s = time.perf_counter() - start
    return True


def train_step(run: Run, step_examples: list[Example], lr: float):
    """One optimizer step over `step_examples` (all ranks'); returns (this rank's summed answer loss as a detached
    tensor, the step's answer tokens over all ranks). Each rank's gradient is scaled so that the ranks' mean is the
    gradient of the mean loss per answer token of the whole step."""
    import torch

    fabric, model, optimizer = run.fabric, run.model, run.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    tokens = sum(len(ex.answer_ids) for ex in step_examples)
    scale = fabric.world_size / tokens
    batches = micro_batches(step_examples, fabric.global_rank, fabric.world_size, run.ft.micro_batch_size)
    loss_sum = torch.zeros((), device=fabric.device)
    for i, batch in enumerate(batches):
        x, y = collate(batch or step_examples[:1])  # a rank without examples here runs one with weight 0
        x, y = x.to(fabric.device), y.to(fabric.device)
        with fabric.no_backward_sync(model, enabled=i < len(batches) - 1):
            s = answer_loss_sum(model(x), y)
            fabric.backward(s * (scale if batch else 0.0))
        if batch:
            loss_sum += s.detach()
    if run.ft.grad_clip:
        fabric.clip_gradients(model, optimizer, max_norm=run.ft.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, tokens


def validate(run: Run) -> float | None:
    """Mean loss per answer token over every validation example (all ranks), or None without any."""
    import torch

    fabric, rows = run.fabric, run.val_rows
    if not rows:
        return None
    total = torch.zeros(2, device=fabric.device)
    run.model.eval()
    with torch.no_grad():
        for batch in micro_batches(rows, fabric.global_rank, fabric.world_size, run.ft.micro_batch_size):
            x, y = collate(batch or rows[:1])
            s = answer_loss_sum(run.model(x.to(fabric.device)), y.to(fabric.device))
            if batch:
                total += torch.stack([s.float(), total.new_tensor(float(sum(len(e.answer_ids) for e in batch)))])
    run.model.train()
    if fabric.world_size > 1:
        total = fabric.all_reduce(total, reduce_op="sum")
    return float(total[0] / total[1])


def end_epoch(run: Run, epoch: int) -> None:
    """Validation loss, the epoch's record, `epoch-NN/` with the resume state (which older checkpoints then drop)."""
    val_loss = validate(run)
    train_loss = run.epoch_sums["loss"] / run.epoch_sums["tokens"] if run.epoch_sums["tokens"] else None
    record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "step": run.step}
    run.epochs.append(record)
    run.epoch_sums = {"loss": 0.0, "tokens": 0.0}
    run.logger.log({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}, step=run.step)
    log.info(f"refiner.finetune: epoch {epoch}/{run.ft.epochs} | train loss {train_loss:.4f} | val loss "
             f"{'-' if val_loss is None else f'{val_loss:.4f}'}")
    name = epoch_dir_name(epoch)
    save(run, name, with_resume_state=True)
    if run.rank == 0:
        drop_older_resume_states(run.spec.out, keep=name)


def epoch_dir_name(epoch: int) -> str:
    return f"epoch-{epoch:02d}"


def drop_older_resume_states(out: Path, keep: str) -> None:
    """Only the newest checkpoint keeps its optimizer and RNG state; signal checkpoints go entirely."""
    for p in Path(out).iterdir():
        if p.name == keep:
            continue
        if _STEP_DIR.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
        elif _EPOCH_DIR.match(p.name):
            for f in [p / "resume.pth", *p.glob("rank-*.pth")]:
                f.unlink(missing_ok=True)


def save(run: Run, name: str, with_resume_state: bool) -> None:
    from proxlab.pretrain import checkpoint

    state = {"step": run.step, "epoch": run.step / run.steps_per_epoch, "loss": run.loss,
             "total_steps": run.total_steps, "level": run.ft.level}
    data_state = {"epoch_sums": run.epoch_sums, "epochs": run.epochs}
    checkpoint.save(run.fabric, run.spec.out, name, run.model, run.cfg, run.tokenizer_dir, state,
                    optimizer=run.optimizer if with_resume_state else None,
                    data_state=data_state if with_resume_state else None)


def exit_for_requeue(run: Run, stop: StopFlag) -> NoReturn:
    from proxlab.pretrain.distributed import is_local_child

    log.info(f"refiner.finetune: signal {stop.signum}: saved step {run.step}; exit {EXIT_REQUEUE} to requeue")
    run.logger.close()
    raise SystemExit(0 if is_local_child(run.fabric) else EXIT_REQUEUE)


# ---------------------------------------------------------------------------------------------------------------------
# finish


def finish(run: Run) -> StageResult | None:
    """`final/` (the last epoch's weights), `train_summary.json`; the StageResult on rank 0."""
    save(run, "final", with_resume_state=False)
    summary = _summary(run)
    if run.rank == 0:
        atomic_write_text(run.spec.out / SUMMARY, json.dumps(summary, indent=2, sort_keys=True))
        run.logger.summary({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        shutil.rmtree(run.spec.out / BASE_CACHE, ignore_errors=True)
    run.logger.close()
    run.fabric.barrier()
    return _result(summary) if run.rank == 0 else None


def _summary(run: Run) -> dict[str, Any]:
    from proxlab.core.flops import training_flops
    from proxlab.models.params import param_counts

    total, non_embedding = param_counts(run.cfg)
    tokens = run.ft.epochs * sum(ex.length for ex in run.train_rows)  # prompt + answer: what the forward passes see
    steps_here = run.step - run.resumed_from
    return {
        "level": run.ft.level, "epochs": run.ft.epochs, "steps": run.total_steps,
        "steps_per_epoch": run.steps_per_epoch, "train_examples": len(run.train_rows),
        "val_examples": len(run.val_rows), "tokens": tokens,
        "answer_tokens": run.ft.epochs * sum(len(ex.answer_ids) for ex in run.train_rows),
        "per_epoch": run.epochs, "final_loss": run.loss, "val_loss": run.epochs[-1]["val_loss"] if run.epochs else None,
        "params": total, "non_embedding_params": non_embedding, "sft_flops": training_flops(non_embedding, tokens),
        "train_seconds": run.train_s, "steps_per_s": steps_here / run.train_s if run.train_s else None,
        "world_size": run.fabric.world_size, "resumed_from_step": run.resumed_from, "model": run.cfg.name,
        "wandb_id": run.logger.wandb_id,
    }


def _result(summary: dict[str, Any]) -> StageResult:
    return StageResult(
        counts={k: summary[k] for k in ("train_examples", "val_examples", "epochs", "steps", "tokens",
                                        "answer_tokens")},
        flops={"sft": summary["sft_flops"]},
        extra={k: summary.get(k) for k in ("level", "final_loss", "val_loss", "per_epoch", "params",
                                           "non_embedding_params", "model", "wandb_id")},
    )


if __name__ == "__main__":
    stage_cli(main)
