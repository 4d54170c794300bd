"""Table 3's Pythia runs and their tokenizer: `proxlab plan` warns when GPT-NeoX's is not here (and still plans), the
Llama-2 stand-in is asked for by name and warned of, and the report marks the stand-in's rows."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

from proxlab.report.paper import TABLES
from proxlab.report.paper_tables import write_paper_table

LLAMA_STANDIN = "tokenizer: Llama-2 (llama_hf) stand-in, not the paper's GPT-NeoX"


@contextmanager
def warnings_of_proxlab():
    """The warnings the `proxlab` loggers emit (whether or not they propagate to the root logger)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("proxlab")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def tiny_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, models

    directory.mkdir(parents=True)
    Tokenizer(models.WordLevel({"<|endoftext|>": 0, "a": 1}, unk_token="<|endoftext|>")).save(
        str(directory / "tokenizer.json"))


def planned(overrides: list[str]):
    from proxlab.runner.compose import compose_config
    from proxlab.runner.graph import plan
    from proxlab.runner.validate import validate

    cfg = compose_config(["exp=table3", *overrides])
    with warnings_of_proxlab() as records:
        validate(cfg)
    stages = {s.name: s for s in plan(cfg, Path(cfg.paths.data_dir) / "artifacts")}
    return cfg, [r.getMessage() for r in records], stages


def test_plan_warns_without_gpt_neox_and_still_plans(tmp_path):
    data = tmp_path / "data"
    (data / "tokenizers").mkdir(parents=True)
    _, warnings, stages = planned([f"paths.data_dir={data}"])
    target = data / "tokenizers" / "gpt-neox-20b"
    missing = [w for w in warnings if w.startswith("model.tokenizer.path='gpt-neox-20b': no tokenizer.json in ")]
    assert len(missing) == 1 and len(warnings) == 1, warnings
    assert f"{target} (<data_dir>/tokenizers/gpt-neox-20b" in missing[0]
    assert f"`hf download EleutherAI/gpt-neox-20b tokenizer.json tokenizer_config.json special_tokens_map.json " \
           f"--local-dir {target}`" in missing[0]
    assert stages["tokenizer"].sources == {"tokenizer": {"missing": "gpt-neox-20b"}}
    # Once the tokenizer is there: no warning, and its files key the tokenizer stage (and all after it).
    tiny_tokenizer(target)
    _, warnings, again = planned([f"paths.data_dir={data}"])
    assert warnings == []
    assert again["tokenizer"].key != stages["tokenizer"].key and again["pretrain"].key != stages["pretrain"].key
    assert again["prepare"].key == stages["prepare"].key


def test_llama_standin_is_asked_by_name_and_marked_in_the_report(tmp_path):
    from omegaconf import OmegaConf

    from proxlab.report.sweep import table
    from proxlab.runner.run import run_labels

    data = tmp_path / "data"
    tiny_tokenizer(data / "tokenizers" / "llama_hf")
    cfg, warnings, stages = planned([f"paths.data_dir={data}", "model.tokenizer.path=llama_hf"])
    assert warnings == [f"model.tokenizer.path='llama_hf' on pythia_410m: {LLAMA_STANDIN}; the report marks these "
                        f"runs' rows"]
    assert stages["tokenizer"].config["path"] == "llama_hf"

    tasks = [task for _, task in TABLES["table3"].columns]
    scores = {f"eval/{t}": 0.4 for t in tasks}
    standin = {**run_labels(cfg, tmp_path / "standin"), **scores}
    assert standin["tokenizer_standin"] == LLAMA_STANDIN and standin["report_row"] == "pythia_410m/selection/doc"
    paper = {**standin, "report_row": "pythia_410m/selection/raw", "variant": "raw", "tokenizer_standin": None,
             "run_dir": str(tmp_path / "paper")}
    # A run from before the label: its saved config says which tokenizer it ran with.
    (tmp_path / "old").mkdir()
    OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), tmp_path / "old" / "config.yaml",
                   resolve=True)  # as run.py saves it
    old = {k: v for k, v in standin.items() if k != "tokenizer_standin"}
    old.update(report_row="pythia_1b/selection/doc", model="pythia_1b", run_dir=str(tmp_path / "old"))

    md = write_paper_table(TABLES["table3"], [standin, paper, old], tmp_path / "report")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if " | ours | " in line}
    labels = {TABLES["table3"].row_labels[k] for k in ("pythia_410m/selection/doc", "pythia_1b/selection/doc")}
    assert set(rows) == {f"{label} ‡" for label in labels} | {TABLES["table3"].row_labels["pythia_410m/selection/raw"]}
    note = [line for line in md.splitlines() if line.startswith("‡ Our runs of ")]
    assert len(note) == 1 and note[0].endswith(f": {LLAMA_STANDIN} (docs/pretrain.md, \"Tokenizer\")."), note
    assert all(label in note[0] for label in labels) and "Random" not in note[0]
    assert LLAMA_STANDIN.replace("_", r"\_") in (tmp_path / "report" / "table3.tex").read_text()

    header, body = table([standin, paper])
    assert [row[header.index("model")] for row in body] == ["pythia_410m ‡", "pythia_410m"]
    assert json.loads(json.dumps(standin))["tokenizer_standin"] == LLAMA_STANDIN  # summary.json keeps it
