"""Stage "refiner.finetune" on CPU, for real: the answer-only loss, two epochs of SFT from an HF base (the tiny Llama
with its real BPE tokenizer), epoch checkpoints that LitGPT loads and `proxlab export` turns into an HF directory
transformers loads with the same logits, and an exact resume after SIGUSR1."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import kill_when, log_tail, run_cli, stage_spec, start_stage, texts, wait

from proxlab.core.config import FinetuneConfig, split_settings
from proxlab.core.stage import is_complete, read_jsonl, run_stage

MODULE = "proxlab.pretrain.finetune"
# A random tiny model learns nothing at the paper's 1e-5 in 6 steps: a larger LR, the rest as in a composed config.
FINETUNE = {"level": "doc", "epochs": 2, "global_batch_size": 8, "micro_batch_size": 3, "lr": 3e-3, "min_lr": 3e-4,
            "seed": 7, "log_interval": 1}


def _examples(tok, n: int, offset: int) -> list[dict]:
    """Doc-level SFT rows as refiner.sft_data writes them: the refine stage's prompt, a program, token ids."""
    from proxlab.refine.prompts import encode_prompt, render_doc_prompt_text

    rows = []
    for i, text in enumerate(texts(offset + n)[offset:]):
        text = text[:400]
        prompt = render_doc_prompt_text(text, tok, "llama2")
        answer = "drop_doc()" if "the" in text.lower().split()[:20] else "keep_doc()"
        rows.append({"id": f"doc-{offset + i}", "level": "doc", "chunk": None, "prompt": prompt, "answer": answer,
                     "text": text, "prompt_ids": encode_prompt(prompt, tok),
                     "answer_ids": tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]})
    return rows


@pytest.fixture(scope="module")
def base() -> Path:
    from proxlab.models.tiny_llama import ensure_tiny_llama

    return ensure_tiny_llama()


@pytest.fixture(scope="module")
def sft(tmp_path_factory, base) -> Path:
    """24 train / 6 val doc-level examples."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    out = tmp_path_factory.mktemp("sft")
    (out / "doc").mkdir()
    for split, n, offset in (("train", 24, 0), ("val", 6, 24)):
        rows = _examples(tok, n, offset)
        (out / "doc" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def finetune_spec(out: Path, sft: Path, base: Path, **overrides):
    hashed, settings = split_settings(FinetuneConfig, {**FINETUNE, **overrides})
    return stage_spec("refiner.finetune", out, {"finetune": hashed}, {"sft": sft, "base": base},
                      runtime={"devices": 1, "num_nodes": 1, "accelerator": "cpu", "threads": 1,
                               "settings": settings})


def test_the_loss_counts_the_answer_tokens_only():
    import torch
    from litgpt import Config
    from litgpt.model import GPT

    from proxlab.pretrain.finetune import Example, answer_loss_sum, collate, micro_batches

    torch.manual_seed(0)
    model = GPT(Config(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=50, padded_vocab_size=50)).eval()
    a = Example("a", prompt_ids=[5, 6, 7, 8], answer_ids=[9, 10, 2])
    b = Example("b", prompt_ids=[11, 12], answer_ids=[13, 2])
    x, y = collate([a, b])
    assert x.tolist() == [[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]]
    assert y.tolist() == [[-100, -100, -100, 9, 10, 2], [-100, 13, 2, -100, -100, -100]]

    with torch.no_grad():
        logits = model(x)
        loss = answer_loss_sum(logits, y)
        logp = logits.log_softmax(-1)
        manual = -(logp[0, 3, 9] + logp[0, 4, 10] + logp[0, 5, 2] + logp[1, 1, 13] + logp[1, 2, 2])
        assert torch.allclose(loss, manual, atol=1e-5)
        # Whatever the model predicts at prompt and padding positions does not count ...
        noisy = logits.clone()
        noisy[0, :3] = torch.randn_like(noisy[0, :3]) * 10
        noisy[1, 0] = torch.randn_like(noisy[1, 0]) * 10
        noisy[1, 3:] = torch.randn_like(noisy[1, 3:]) * 10
        assert torch.equal(answer_loss_sum(noisy, y), loss)
        # ... what it predicts for an answer token does, and so does the answer itself.
        noisy[0, 4] += torch.randn_like(noisy[0, 4])
        assert not torch.allclose(answer_loss_sum(noisy, y), loss)
        _, y2 = collate([Example("a", [5, 6, 7, 8], [9, 11, 2]), b])
        assert not torch.allclose(answer_loss_sum(logits, y2), loss)
        # Padding does not change an example's loss: alone it sums to the same.
        xb, yb = collate([b])
        alone = answer_loss_sum(model(xb), yb) + answer_loss_sum(model(collate([a])[0]), collate([a])[1])
        assert torch.allclose(alone, loss, atol=1e-5)

    # Every rank runs as many micro-batches; one with nothing left is None (run at weight 0).
    step = [Example(str(i), [1], [2]) for i in range(5)]
    per_rank = [micro_batches(step, r, 2, 2) for r in range(2)]
    assert [[None if m is None else [e.id for e in m] for m in p] for p in per_rank] == \
        [[["0", "2"], ["4"]], [["1", "3"], None]]


def test_two_epochs_checkpoints_export_and_exact_resume(tmp_path, sft, base):
    import torch
    from litgpt import GPT, Config
    from transformers import AutoModelForCausalLM

    from proxlab.evaluate.lms.convert import litgpt_to_hf
    from proxlab.pretrain import finetune

    # A: uninterrupted, in-process.
    ref = tmp_path / "ref"
    result = run_stage(finetune.main, finetune_spec(ref, sft, base))
    assert result.counts["steps"] == 6 and result.counts["train_examples"] == 24  # 2 epochs x ceil(24 / 8)
    assert result.flops["sft"] > 0 and is_complete(ref)
    for name in ("epoch-01", "epoch-02", "final"):
        assert (ref / name / "COMPLETE").is_file() and (ref / name / "config.json").is_file(), name
    assert not (ref / "epoch-01" / "resume.pth").exists() and (ref / "epoch-02" / "resume.pth").is_file()
    assert not (ref / finetune.BASE_CACHE).exists()

    rows = read_jsonl(ref / "metrics.jsonl")
    epochs = [r for r in rows if "val_loss" in r and not r.get("summary")]
    assert [r["epoch"] for r in epochs] == [1, 2] and [r["step"] for r in epochs] == [3, 6]
    steps = {r["step"]: r["loss"] for r in rows if "loss" in r and "lr" in r}
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    print("step losses", steps, "epochs", epochs)
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"] and steps[6] < steps[1]
    assert epochs[1]["val_loss"] < epochs[0]["val_loss"]

    # The epoch checkpoints are LitGPT checkpoints, and differ; `proxlab export` gives the same model to transformers.
    cfg = Config.from_file(ref / "epoch-01" / "model_config.yaml")
    models = {}
    for name in ("epoch-01", "epoch-02"):
        models[name] = GPT(cfg).eval()
        models[name].load_state_dict(torch.load(ref / name / "lit_model.pth", weights_only=True)["model"])
    row = json.loads((sft / "doc" / "val.jsonl").read_text().splitlines()[0])
    ids = torch.tensor([row["prompt_ids"] + row["answer_ids"]])
    with torch.no_grad():
        lit_logits = models["epoch-01"](ids)
        assert not torch.allclose(lit_logits, models["epoch-02"](ids))
        hf_dir = litgpt_to_hf(ref / "epoch-01", tmp_path / "hf")
        hf_logits = AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()(ids).logits
    assert torch.allclose(lit_logits, hf_logits, atol=1e-4)

    # B: the same run in its own process, SIGUSR1 during setup: it saves step 1 and exits 3; a restart finishes it.
    out = tmp_path / "interrupted"
    finetune_spec(out, sft, base)
    proc = start_stage(MODULE, out)
    assert kill_when(proc, lambda: "train / 6 val examples" in log_tail(out), sig=signal.SIGUSR1, group=False), \
        log_tail(out)
    assert wait(proc) == 3, log_tail(out)
    assert [p.name for p in out.glob("step-*")] == ["step-00000001"] and not (out / "final").exists()
    assert run_cli(MODULE, out) == 0, log_tail(out)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == 1 and not list(out.glob("step-*"))
    again = {r["step"]: r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r and "lr" in r}
    assert sorted(again) == sorted(steps) and max(abs(again[s] - steps[s]) for s in steps) <= 1e-5
    a = torch.load(ref / "final" / "lit_model.pth", weights_only=True)["model"]
    b = torch.load(out / "final" / "lit_model.pth", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def test_bad_input_is_named(tmp_path, sft, base):
    from proxlab.pretrain import finetune

    long = tmp_path / "long"
    (long / "doc").mkdir(parents=True)
    (long / "doc" / "train.jsonl").write_text((sft / "doc" / "train.jsonl").read_text() + json.dumps(
        {"id": "too-long", "prompt_ids": [5] * 5000, "answer_ids": [9, 2]}) + "\n")
    (long / "doc" / "val.jsonl").write_text("")
    lit_base = finetune.hf_to_litgpt(base, tmp_path / "lit-base")  # a LitGPT directory is a base as it is
    with pytest.raises(ValueError, match=r"'too-long'.*5002 tokens.*block_size 4096"):
        finetune.main(finetune_spec(tmp_path / "e1", long, lit_base))
    assert not (tmp_path / "e1" / finetune.BASE_CACHE).exists()
    with pytest.raises(FileNotFoundError, match="chunk/train.jsonl"):
        finetune.main(finetune_spec(tmp_path / "e2", sft, base, level="chunk"))
    with pytest.raises(ValueError, match="finetune.level"):
        finetune.main(finetune_spec(tmp_path / "e3", sft, base, level="line"))
    with pytest.raises(FileNotFoundError, match="neither a LitGPT checkpoint"):
        finetune.main(finetune_spec(tmp_path / "e4", sft, tmp_path))
