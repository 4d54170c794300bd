"""Stage `refiner.select`: the validation F1 of every epoch checkpoint of a refiner fine-tune, and the best checkpoint
exported as the refiner (paper §2.3: "the checkpoint is chosen by validation F1"; §A.3 for the F1s).

    python -m proxlab.refine.build.select --spec spec.json

Inputs: `sft` (a refiner.sft_data artifact: `<level>/val.jsonl`) and `finetune` (a refiner.finetune artifact:
`epoch-NN/` LitGPT checkpoints with a `COMPLETE` marker). Config: `SelectConfig` (level, backend, dtype, batch size,
max_new_tokens, limit). Outputs:

* `predictions/epoch-NN.jsonl`: per validation example its id, chunk, the generated program, finish reason, the
  failure kinds that made it unparsable, and what was scored (doc: pred_keep / gold_keep; chunk: pred_removed /
  gold_removed line numbers);
* `scores.json`: per epoch F1, precision, recall, the counts and the unparsable count; the best epoch;
* `refiner/`: the best epoch as an HF directory (float32 safetensors, config.json, generation_config.json, tokenizer
  without token_type_ids), which transformers, vLLM and proxlab's refine backends load.

Each epoch checkpoint is converted to HF (`proxlab.models.hf_export.litgpt_to_hf`, the one conversion) into a scratch
directory, served by a refine backend (`make_backend`: hf on CPU, vllm where configured), and asked for a greedy
program from each example's `prompt_ids` exactly as stored, so inference sees the ids training saw. A killed run keeps
the epochs whose predictions file is complete and redoes only the others.

Scoring (docs/refiners.md, "Selection by F1"): both the prediction and the target are read with the strict parser.

* doc: keep = positive class, `refiner_metrics.doc_f1`. A prediction is unparsable when the strict doc executor
  counts any error (syntax, unknown call, no decision, keep and drop both, ...); it is scored as keep.
* chunk: line F1 over the sets of removed line numbers (`remove_lines` ranges; `remove_all` = every line of the
  chunk; `normalize` is not evaluated, as in the paper), micro-averaged over the split (TP/FP/FN summed:
  `refiner_metrics.line_f1_corpus`; the per-example mean is reported as `macro_f1`). A prediction is unparsable
  when the strict parser counts any error, when it calls `drop_doc()`, or when a range leaves the chunk's lines;
  it is scored as removing nothing. Both sets empty: no TP/FP/FN (an agreeing no-op adds nothing to the micro
  counts; its per-example F1 is 1.0).

Runs in the main environment: the conversion needs torch and litgpt, which the vLLM environment lacks (imported
inside `proxlab.models.hf_export`'s functions). With `backend: vllm`, vLLM must be importable there too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from proxlab.core.config import ConfigError, SelectConfig, load, refine_dtype_name
from proxlab.core.logs import get_logger
from proxlab.core.stage import StageResult, StageSpec, atomic_write_text, stage_cli
from proxlab.refine.programs import ERROR_KINDS, FAILURE_KINDS, DecisionRules, parse_program, run_doc_program
from proxlab.refine.refiner_metrics import doc_f1, line_f1_corpus

log = get_logger("refiner.select")

LEVELS = ("doc", "chunk")
SELECT_BACKENDS = ("hf", "vllm")  # openai would serve a model the stage does not start
EPOCH_DIR = re.compile(r"^epoch-(\d{2,})$")
COMPLETE = "COMPLETE"  # proxlab.pretrain.checkpoint.COMPLETE: written last into a finished checkpoint
SCORES, PREDICTIONS, REFINER = "scores.json", "predictions", "refiner"
NUMBERED_LINE = re.compile(r"^\[(\d+)\]")  # proxlab.refine.chunking's "[007]line" numbering
STRICT_ONE_ERROR = DecisionRules(max_errors=1)  # any error discards a doc program: it is then scored as keep


def check_config(cfg: SelectConfig) -> None:
    if cfg.level not in LEVELS:
        raise ConfigError("refiner.select.level", cfg.level, f"expected one of {list(LEVELS)}")
    if cfg.backend not in SELECT_BACKENDS:
        raise ConfigError("refiner.select.backend", cfg.backend, f"expected one of {list(SELECT_BACKENDS)}")
    refine_dtype_name(cfg.dtype, "refiner.select.dtype")
    for name in ("batch_size", "max_new_tokens"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"refiner.select.{name}", getattr(cfg, name), "must be > 0")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError("refiner.select.limit", cfg.limit, "must be > 0 (or null: every validation example)")


# ---------------------------------------------------------------------------------------------------------------------
# Inputs


def read_val(sft: Path, level: str, limit: int | None) -> list[dict[str, Any]]:
    path = sft / level / "val.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"refiner.select: no {level}/val.jsonl in the sft input {sft}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                missing = [k for k in ("id", "answer", "text", "prompt_ids") if k not in row]
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object ({e})") from None
            if missing:
                raise ValueError(f"{path}:{n}: an SFT example without {missing}")
            rows.append(row)
    if not rows:
        raise ValueError(f"refiner.select: {path} holds no validation example; F1 would be meaningless")
    return rows


def epoch_checkpoints(finetune: Path) -> list[tuple[int, Path]]:
    """(epoch, directory) of every complete `epoch-NN/` checkpoint, in epoch order."""
    found = sorted((int(m.group(1)), p) for p in finetune.iterdir()
                   if (m := EPOCH_DIR.match(p.name)) and (p / COMPLETE).is_file() and (p / "lit_model.pth").is_file())
    if not found:
        raise FileNotFoundError(f"refiner.select: no complete epoch-NN/ checkpoint in the finetune input {finetune}")
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Reading programs: the strict parser decides what a program says


def doc_keep(text: str, program: str) -> tuple[bool, list[str]]:
    """(keep?, failure kinds). Any strict error makes the program unparsable, and an unparsable program keeps."""
    result = run_doc_program(text, program, mode="strict", rules=STRICT_ONE_ERROR)
    if result.errors:
        return True, sorted(k for k, n in result.failure_kinds.items() if n and k in ERROR_KINDS)
    return not result.dropped, []


def chunk_line_numbers(numbered_text: str) -> list[int]:
    """The document line numbers of a chunk's numbered text (`[007]...` per line)."""
    return [int(m.group(1)) for line in numbered_text.split("\n") if (m := NUMBERED_LINE.match(line))]


def chunk_removed(numbered_text: str, program: str) -> tuple[list[int], list[str]]:
    """(sorted removed line numbers, failure kinds). Unparsable (any kind) removes nothing."""
    lines = chunk_line_numbers(numbered_text)
    lo, hi = (lines[0], lines[-1]) if lines else (0, -1)
    kinds = dict.fromkeys(FAILURE_KINDS, 0)
    calls, errors = parse_program(program or "", kinds=kinds)
    failures = Counter({k: n for k, n in kinds.items() if n and k in ERROR_KINDS})
    removed: set[int] = set()
    for call in calls:
        if call[0] == "drop_doc":
            failures["wrong_level"] += 1
        elif call[0] == "remove_all":
            removed.update(lines)
        elif call[0] == "remove_lines":
            if call[1] < lo or call[2] > hi:
                failures["line_out_of_range"] += 1
            else:
                removed.update(range(call[1], call[2] + 1))
    if not calls and not errors:
        failures["empty_program"] += 1
    if errors or failures:
        return [], sorted(failures)
    return sorted(removed), []


def score_example(level: str, example: dict[str, Any], prediction: str) -> dict[str, Any]:
    """What the F1 counts for one example; the target must read cleanly (sft_data checked it)."""
    if level == "doc":
        gold, bad = doc_keep(example["text"], example["answer"])
        pred, unparsable = doc_keep(example["text"], prediction)
        scored = {"pred_keep": pred, "gold_keep": gold}
    else:
        gold, bad = chunk_removed(example["text"], example["answer"])
        pred, unparsable = chunk_removed(example["text"], prediction)
        scored = {"pred_removed": pred, "gold_removed": gold}
    if bad:
        raise ValueError(f"refiner.select: the target of validation example {example['id']!r} (chunk "
                         f"{example.get('chunk')}) does not read as a {level} program ({bad}): {example['answer']!r}")
    return {**scored, "unparsable": unparsable}


def epoch_scores(level: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """F1, precision, recall and counts of one epoch's prediction records (what `predictions/epoch-NN.jsonl` holds)."""
    if level == "doc":
        scores = doc_f1([r["pred_keep"] for r in records], [r["gold_keep"] for r in records])
    else:
        scores = line_f1_corpus((r["pred_removed"], r["gold_removed"]) for r in records)
    kinds = Counter(k for r in records for k in r["unparsable"])
    return {**scores, "n": len(records), "unparsable": sum(1 for r in records if r["unparsable"]),
            "unparsable_kinds": dict(sorted(kinds.items())),
            "finish_reasons": dict(sorted(Counter(r["finish_reason"] for r in records).items()))}


# ---------------------------------------------------------------------------------------------------------------------
# Generation


def predict(cfg: SelectConfig, hf_dir: Path, examples: list[dict[str, Any]], cache_root: Path) -> list[Any]:
    """Greedy programs of a converted checkpoint for the examples, from their stored prompt ids."""
    from proxlab.refine.backends import make_backend

    backend = make_backend({"backend": cfg.backend, "model": str(hf_dir), "dtype": cfg.dtype,
                            "batch_size": cfg.batch_size, "max_new_tokens": cfg.max_new_tokens,
                            "threads": cfg.threads, "env": "vllm" if cfg.backend == "vllm" else "main"},
                           cache_root=cache_root)
    try:
        return backend.generate([e["prompt_ids"] for e in examples], cfg.max_new_tokens)
    finally:
        backend.close()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def score_epoch(spec: StageSpec, cfg: SelectConfig, epoch: int, ckpt: Path,
                examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epoch's prediction records: read back when a previous run finished them, else generated and written."""
    from proxlab.models.hf_export import litgpt_to_hf

    path = spec.out / PREDICTIONS / f"{ckpt.name}.jsonl"
    if path.is_file():
        records = read_jsonl(path)
        if [(r["id"], r["chunk"]) for r in records] == [(e["id"], e.get("chunk")) for e in examples]:
            log.info(f"refiner.select: {ckpt.name}: predictions of an earlier run reused")
            return records
    scratch = spec.out / f".hf-{ckpt.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        litgpt_to_hf(ckpt, scratch)
        generations = predict(cfg, scratch, examples, spec.out / ".cache")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    records = []
    for example, gen in zip(examples, generations):
        records.append({"id": example["id"], "chunk": example.get("chunk"), "epoch": epoch,
                        "prediction": gen.text, "answer": example["answer"], "finish_reason": gen.finish_reason,
                        "output_tokens": gen.output_tokens, **score_example(cfg.level, example, gen.text)})
    write_jsonl(path, records)
    return records


# ---------------------------------------------------------------------------------------------------------------------
# The stage


def best_epoch(scores: dict[int, dict[str, Any]]) -> int:
    """The epoch with the highest F1; ties go to the earlier epoch (fewer steps, the same validation quality)."""
    return max(scores, key=lambda e: (scores[e]["f1"], -e))


def export_refiner(ckpt: Path, out: Path) -> Path:
    """The chosen checkpoint as an HF directory `out`, written under a temporary name and renamed."""
    from proxlab.models.hf_export import litgpt_to_hf

    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    litgpt_to_hf(ckpt, tmp)
    (tmp / "selection.json").write_text(json.dumps({"checkpoint": ckpt.name, "source": str(ckpt)}, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def main(spec: StageSpec) -> StageResult:
    cfg = load(SelectConfig, spec.config, spec.runtime.get("settings"), where="refiner.select")
    check_config(cfg)
    examples = read_val(spec.input("sft"), cfg.level, cfg.limit)
    checkpoints = epoch_checkpoints(spec.input("finetune"))
    log.info(f"refiner.select: {cfg.level} level, {len(examples)} validation examples, "
             f"{len(checkpoints)} checkpoints ({', '.join(p.name for _, p in checkpoints)}), backend {cfg.backend}")
    per_epoch: dict[int, dict[str, Any]] = {}
    for epoch, ckpt in checkpoints:
        per_epoch[epoch] = epoch_scores(cfg.level, score_epoch(spec, cfg, epoch, ckpt, examples))
        s = per_epoch[epoch]
        log.info(f"refiner.select: {ckpt.name}: F1 {s['f1']:.4f} (P {s['precision']:.4f}, R {s['recall']:.4f}), "
                 f"{s['unparsable']}/{s['n']} unparsable")
    best = best_epoch(per_epoch)
    names = dict(checkpoints)
    export_refiner(names[best], spec.out / REFINER)
    summary = {"level": cfg.level, "metric": "f1", "best_epoch": best, "best_checkpoint": names[best].name,
               "best_f1": per_epoch[best]["f1"], "config": asdict(cfg),
               "epochs": {names[e].name: s for e, s in per_epoch.items()}}
    atomic_write_text(spec.out / SCORES, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(spec.out / ".cache", ignore_errors=True)
    log.info(f"refiner.select: best {names[best].name} (F1 {per_epoch[best]['f1']:.4f}) -> {spec.out / REFINER}")
    return StageResult(counts={"val_examples": float(len(examples)), "epochs": float(len(checkpoints)),
                               "best_epoch": float(best), "best_f1": float(per_epoch[best]["f1"])},
                       extra={"best_checkpoint": names[best].name,
                              "f1_per_epoch": {names[e].name: s["f1"] for e, s in per_epoch.items()}})


if __name__ == "__main__":
    stage_cli(main)
