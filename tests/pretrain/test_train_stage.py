"""Stage "pretrain" on CPU, for real (no mocks): exact resume after SIGKILL and after SIGUSR1 with 2 DDP processes,
the same W&B run across restarts, LitGPT-loadable checkpoints, counts and FLOPs in the result."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from conftest import kill_when, log_tail, run_cli, stage_spec, start_stage, wait, write_docs

from proxlab.core.config import TrainConfig, split_settings
from proxlab.core.stage import is_complete, read_jsonl, run_stage

MODULE = "proxlab.pretrain.train"
MODEL = {"preset": "tiny", "n_layer": 2, "n_embd": 64, "n_head": 4, "intermediate_size": 256}
# Explicit where the tests' expectations depend on a value (the LR schedule's warmup and floor, the batch split); the
# rest takes TrainConfig's defaults, as a composed experiment would.
TRAIN = {"recipe": "test", "seq_len": 64, "global_batch_size": 8, "micro_batch_size": 2, "max_steps": 16,
         "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2, "schedule": "cosine", "save_interval": 6, "seed": 1234,
         "precision": "32-true", "log_interval": 1}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, bpe_dir) -> Path:
    """~90 windows of 65 tokens: 16 steps x 8 sequences run over it ~1.4 times, so resume crosses an epoch."""
    from proxlab.pretrain import tokenize

    root = tmp_path_factory.mktemp("small")
    docs = write_docs(root / "docs", 5)
    out = root / "tokenized"
    run_stage(tokenize.main, stage_spec("tokenize", out, {"seq_len": 64}, {"docs": docs, "tokenizer": bpe_dir},
                                        runtime={"settings": {"workers": 1}}))
    return out


def pretrain_spec(out: Path, data: Path, tok: Path, devices: int = 1, train=None, model=None, **kw):
    """A spec as the orchestrator writes it: hashed train settings in config, runtime ones (log_interval...) in
    runtime["settings"]."""
    hashed, settings = split_settings(TrainConfig, {**TRAIN, **(train or {})})
    unknown = set(train or {}) - set(hashed) - set(settings)  # a misspelt key: keep it where the stage will see it
    return stage_spec("pretrain", out, {"model": {**MODEL, **(model or {})},
                                        "train": {**hashed, **{k: train[k] for k in unknown}}},
                      {"data": data, "tokenizer": tok},
                      runtime={"devices": devices, "num_nodes": 1, "accelerator": "cpu", "settings": settings}, **kw)


def step_losses(out: Path) -> dict[int, float]:
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "loss" in r and not r.get("summary")]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"duplicate steps in metrics.jsonl: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def checkpoints(out: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in out.glob("step-*") if (p / "COMPLETE").exists())


def test_ddp_resume_after_sigusr1_and_sigkill_is_exact(tmp_path, small_data, bpe_dir):
    # A: two ranks, uninterrupted.
    ref = tmp_path / "ref"
    pretrain_spec(ref, small_data, bpe_dir, devices=2)
    assert run_cli(MODULE, ref) == 0, log_tail(ref)
    ref_summary = json.loads((ref / "train_summary.json").read_text())
    assert ref_summary["world_size"] == 2 and ref_summary["steps"] == 16 and ref_summary["grad_accum"] == 2
    assert ref_summary["epochs"] > 1  # the data wrapped around
    assert max(r.get("epoch", 0) for r in read_jsonl(ref / "metrics.jsonl")) == 2

    # B: the same run with W&B offline, stopped by SIGUSR1 (to rank 0 only, as the launcher forwards it), then
    # SIGKILLed (every rank) after a periodic checkpoint, then finished.
    run_dir = tmp_path / "run"
    out = tmp_path / "interrupted"
    pretrain_spec(out, small_data, bpe_dir, devices=2, run_dir=str(run_dir), logger={"backend": "wandb",
                                                                                      "mode": "offline"})
    proc = start_stage(MODULE, out)
    assert kill_when(proc, lambda: any(r.get("step", 0) >= 2 for r in read_jsonl(out / "metrics.jsonl")),
                     sig=signal.SIGUSR1, group=False), log_tail(out)
    assert wait(proc) == 3, log_tail(out)  # the requeue code
    (signal_step,) = checkpoints(out)  # one checkpoint, at the step the signal was seen
    assert 2 <= signal_step < 16 and not (out / "final").exists() and not is_complete(out)
    state = json.loads((out / f"step-{signal_step:08d}" / "trainer_state.json").read_text())
    assert state["step"] == signal_step

    target = (signal_step // 6 + 1) * 6  # the next periodic checkpoint
    if target < 16:
        proc = start_stage(MODULE, out)
        assert kill_when(proc, lambda: target in checkpoints(out)), log_tail(out)
        assert wait(proc) == -signal.SIGKILL and not (out / "final").exists()
    assert run_cli(MODULE, out) == 0, log_tail(out)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == (target if target < 16 else signal_step)

    # Same losses at every step (tolerance 1e-5), the same final weights.
    ref_losses, losses = step_losses(ref), step_losses(out)
    assert sorted(losses) == list(range(1, 17))
    assert max(abs(ref_losses[s] - losses[s]) for s in ref_losses) <= 1e-5
    assert abs(summary["final_loss"] - ref_summary["final_loss"]) <= 1e-5
    print(f"final loss: uninterrupted {ref_summary['final_loss']!r}, interrupted {summary['final_loss']!r}")
    import torch

    a = torch.load(ref / "final" / "lit_model.pth", weights_only=True)["model"]
    b = torch.load(out / "final" / "lit_model.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)

    # One W&B run: every restart wrote an offline run directory with the same, stable id (the artifact's), and
    # `proxlab wandb-sync` merges them into one run with every step once, each step's loss the one that led to the
    # final weights (the last attempt's after the checkpoint it resumed from). The SIGKILLed attempt's wandb service
    # died before writing its steps: they come from the stage's metrics.jsonl, found through the run's plan.json.
    from proxlab.core.tracking import artifact_run_id
    from proxlab.report.wandb_sync import find_pieces, history_rows, merge_pieces, read_records, read_run

    run_id = artifact_run_id(out)
    dirs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(dirs) >= 3 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}", d) for d in dirs), dirs
    assert summary["wandb_id"] == run_id
    (run_dir / "plan.json").write_text(json.dumps([{"stage": "pretrain", "key": out.name, "out_dir": str(out)}]))
    pieces = find_pieces(tmp_path)[run_id]
    for piece in pieces:
        read_run(piece.dir, wait_s=20)
    rows = history_rows(read_records(merge_pieces(pieces, tmp_path / "merged") / f"run-{run_id}.wandb"))
    assert sorted(rows) == list(range(1, 17))
    assert all(abs(rows[s]["train/loss"] - losses[s]) <= 1e-6 and rows[s]["train/step"] == s for s in rows)
    assert is_complete(out) and json.loads((out / "manifest.json").read_text())["counts"]["steps"] == 16


def test_checkpoints_are_litgpt_checkpoints_and_result_counts(tmp_path, small_data, bpe_dir):
    """One process, in-process: result counts/FLOPs, early stop, LitGPT-loadable final/, restart after the end."""
    import torch
    from litgpt import GPT, Config, Tokenizer

    from proxlab.core.flops import training_flops
    from proxlab.models.params import non_embedding_params
    from proxlab.pretrain import train

    out = tmp_path / "one"
    spec = pretrain_spec(out, small_data, bpe_dir, train={"max_steps": 10, "early_stop_step": 7, "save_interval": 3,
                                                          "log_interval": 2})
    result = run_stage(train.main, spec)
    tokens = 7 * 8 * 64
    assert result.counts["steps"] == 7 and result.counts["tokens"] == tokens
    cfg = Config.from_file(out / "final" / "model_config.yaml")
    assert cfg.padded_vocab_size == 2048 and cfg.n_layer == 2  # vocab from the tokenizer
    n = non_embedding_params(cfg)
    assert result.flops["train"] == training_flops(n, tokens) == 6 * n * tokens
    assert result.extra["measured_flops_per_step"] > 0 and result.extra["non_embedding_params"] > 0
    assert checkpoints(out) == [3, 6]
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r] == [2, 4, 6, 7]
    lrs = {r["step"]: r["lr"] for r in read_jsonl(out / "metrics.jsonl") if "lr" in r}
    assert lrs[6] > 3e-4 * 1.5  # early stop at 7 of 10: the cosine had not finished

    model = GPT(cfg)
    model.load_state_dict(torch.load(out / "final" / "lit_model.pth", weights_only=True)["model"])
    tok = Tokenizer(out / "final")
    logits = model(tok.encode("Hello world").unsqueeze(0))
    assert logits.shape[-1] == cfg.padded_vocab_size and torch.isfinite(logits).all()
    resume = torch.load(out / "step-00000006" / "rank-0.pth", weights_only=False)
    assert {"data", "rng"} <= set(resume) and {"python", "numpy", "torch"} <= set(resume["rng"])

    # A restart after the end (killed before _SUCCESS) returns the same result without training again.
    (out / "_SUCCESS").unlink()
    again = train.main(spec)
    assert again.counts == result.counts and again.extra["final_loss"] == result.extra["final_loss"]


def test_continual_pretraining_and_errors(tmp_path, small_data, bpe_dir):
    from proxlab.pretrain import train

    base = tmp_path / "base"
    run_stage(train.main, pretrain_spec(base, small_data, bpe_dir, train={"max_steps": 2, "save_interval": 2}))
    cpt = tmp_path / "cpt"
    res = run_stage(train.main, pretrain_spec(cpt, small_data, bpe_dir, model={"init_checkpoint": str(base / "final")},
                                              train={"max_steps": 2, "save_interval": 2, "warmup_steps": 0}))
    first = [r for r in read_jsonl(cpt / "metrics.jsonl") if r.get("step") == 1][0]["loss"]
    scratch = [r for r in read_jsonl(base / "metrics.jsonl") if r.get("step") == 1][0]["loss"]
    assert first < scratch and res.counts["steps"] == 2  # starts from the trained weights

    with pytest.raises(ValueError, match="not divisible"):
        train.main(pretrain_spec(tmp_path / "e1", small_data, bpe_dir, train={"micro_batch_size": 3}))
    with pytest.raises(ValueError, match="seq_len"):
        train.main(pretrain_spec(tmp_path / "e2", small_data, bpe_dir, train={"seq_len": 128}))
    with pytest.raises(FileNotFoundError, match="input 'data'"):
        train.main(pretrain_spec(tmp_path / "e3", tmp_path, bpe_dir))
    with pytest.raises(ValueError, match="early_stop_step"):
        train.main(pretrain_spec(tmp_path / "e4", small_data, bpe_dir, train={"early_stop_step": 99}))
    with pytest.raises(KeyError, match="warmpu_steps"):  # a misspelt setting is named, not ignored
        train.main(pretrain_spec(tmp_path / "e5", small_data, bpe_dir, train={"warmpu_steps": 0}))
