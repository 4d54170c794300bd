"""Stage "tokenizer": train a byte-level BPE on the corpus, or copy a pretrained tokenizer directory.

    python -m proxlab.pretrain.tokenizer --spec spec.json

spec.config is a TokenizerConfig dict {kind, path, vocab_size, train_docs} (typed with the schema's defaults); input
"docs" is a directory of `docs-*.parquet`. The output directory is a LitGPT `tokenizer_dir` and loads with HF
`AutoTokenizer`: `tokenizer.json` + `tokenizer_config.json` (tokenizer_class, bos_token, eos_token, add_bos_token).

- kind=train_bpe: byte-level BPE (`tokenizers`) on the first `train_docs` documents in corpus order, with special tokens
  <s> (bos, id 0) </s> (eos, id 1) <unk> <pad>. The post-processor prepends <s>, so HF and LitGPT agree on BOS; the
  tokenize stage encodes without it and appends </s>, as the paper did.
- kind=pretrained: `path` is an absolute directory, or a name under `<data_dir>/tokenizers/` (data_dir: spec.runtime
  "data_dir", else $PROXLAB_DATA_DIR, else <repo>/../shared/data), e.g. "llama_hf", "gpt-neox-20b" (a hub id
  "EleutherAI/gpt-neox-20b" is looked up as <data_dir>/tokenizers/EleutherAI/gpt-neox-20b). A missing one fails the
  stage with the key, the directories looked in and the download command (`proxlab plan` warns of it first); it never
  falls back to another tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from proxlab.core.config import TokenizerConfig, load
from proxlab.core.logs import get_logger
from proxlab.core.paths import tokenizer_candidates
from proxlab.core.stage import StageResult, StageSpec, atomic_write_text, stage_cli
from proxlab.models.presets import fetch_hint

log = get_logger("tokenizer")

SPECIALS = ("<s>", "</s>", "<unk>", "<pad>")
COPY_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "generation_config.json")


def train_bpe(texts, vocab_size: int):
    """A byte-level BPE over an iterator of text batches; deterministic for a given corpus order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return tok


def bpe_tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000_000,
    }


def resolve_pretrained(path: str | None, runtime: dict[str, Any], where: str = "model.tokenizer") -> Path:
    """The directory of the pretrained tokenizer `path` names; a missing one is an error naming the key, where it was
    looked for and how to get it (never a fallback to another tokenizer)."""
    if not path:
        raise ValueError(f"{where}.kind=pretrained needs {where}.path (a directory or a name under "
                         f"<data_dir>/tokenizers, e.g. llama_hf)")
    found, candidates = tokenizer_candidates(path, runtime.get("data_dir"))
    if found is not None:
        return found
    raise FileNotFoundError(missing_pretrained(path, candidates, where))


def missing_pretrained(path: str, candidates: list[Path], where: str = "model.tokenizer") -> str:
    """What to tell the user about a pretrained tokenizer that is not here (the tokenizer stage's error, and
    `proxlab plan`'s warning): the key, the directories looked in, and where to get it."""
    looked = str(candidates[0])
    if len(candidates) > 1:  # a name: under the data directory, else relative to here
        looked += (f" (<data_dir>/tokenizers/{path}; data_dir: paths.data_dir, else $PROXLAB_DATA_DIR) nor in "
                   f"./{candidates[1]}")
    return f"{where}.path={path!r}: no tokenizer.json in {looked}; {fetch_hint(path, str(candidates[0]))}"


def copy_pretrained(src: Path, out: Path) -> None:
    for name in COPY_FILES:
        if (src / name).is_file():
            tmp = out / f".{name}.tmp"
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, out / name)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    # LitGPT reads tokenizer_class unconditionally and needs bos_token; fill what a bare tokenizer.json lacks.
    cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    for key in ("bos_token", "eos_token"):
        if key not in cfg:
            raise ValueError(f"{src}/tokenizer_config.json has no {key!r}: the tokenize stage needs bos/eos tokens")
    cfg.setdefault("add_bos_token", True)
    atomic_write_text(cfg_path, json.dumps(cfg, indent=2))


def vocab_size_of(tokenizer_dir: Path) -> int:
    """Every id the tokenizer can emit is below this (added tokens included)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def main(spec: StageSpec) -> StageResult:
    # The refiner's base (runner/graph.py: build_refiners) has its own tokenizer settings.
    where = "refiner.base.model.tokenizer" if spec.stage.startswith("refiner.") else "model.tokenizer"
    cfg = load(TokenizerConfig, spec.config, where=where)
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "train_bpe":
        from proxlab.core.formats import corpus_shards, iter_texts

        files = corpus_shards(spec.input("docs"))
        tok = train_bpe((t for batch in iter_texts(files, 0, cfg.train_docs) for t in batch), cfg.vocab_size)
        atomic_write_text(out / "tokenizer.json", tok.to_str(pretty=True))
        atomic_write_text(out / "tokenizer_config.json", json.dumps(bpe_tokenizer_config(), indent=2))
        atomic_write_text(out / "special_tokens_map.json", json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, indent=2))
        atomic_write_text(out / "generation_config.json", json.dumps(
            {"bos_token_id": tok.token_to_id("<s>"), "eos_token_id": tok.token_to_id("</s>")}, indent=2))
    elif cfg.kind == "pretrained":
        copy_pretrained(resolve_pretrained(cfg.path, spec.runtime, where), out)
    else:
        raise ValueError(f"model.tokenizer.kind={cfg.kind!r}: expected train_bpe or pretrained")
    vocab = vocab_size_of(out)
    log.info(f"tokenizer ({cfg.kind}): vocab {vocab} -> {out}")
    return StageResult(counts={"vocab_size": vocab})


if __name__ == "__main__":
    stage_cli(main)
