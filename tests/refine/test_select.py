"""Stage refiner.select on CPU, for real: two epoch checkpoints in the refiner.finetune layout, each converted to HF and
run by the hf backend from the stored prompt ids; F1 per epoch, the argmax exported as an HF refiner directory that
transformers and the hf backend load and generate with. The checkpoints are built to be known: every block adds zero
to the residual stream, so the model is a bigram table (next token = f(current token)) written into the output head,
and epoch-01 answers "drop_doc()", epoch-02 "keep_doc()" whatever the document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxlab.core.stage import run_stage
from proxlab.refine.build import select
from proxlab.refine.prompts import encode_prompt, render_doc_prompt_text
from proxlab.refine.refiner_metrics import doc_f1, line_f1_corpus
from tiny_model import make_spec, web_texts

GOLD = ["keep_doc()", "keep_doc()", "drop_doc()", "keep_doc()", "drop_doc()", "keep_doc()"]  # 4 keep, 2 drop


@pytest.fixture(scope="module")
def tok_dir() -> Path:
    from proxlab.models.tiny_llama import ensure_tiny_llama

    return ensure_tiny_llama()


@pytest.fixture(scope="module")
def tokenizer(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tok_dir))


def distinct_ids(tokenizer, text: str, avoid: set[int]) -> list[int]:
    """Token ids that decode to `text`, no id twice and none in `avoid`: a bigram chain can emit them."""
    vocab = tokenizer.get_vocab()

    def search(i: int, used: list[int]):
        if i == len(text):
            return used
        for j in range(len(text), i, -1):
            tid = vocab.get(text[i:j])
            if tid is not None and tid not in used and tid not in avoid:
                found = search(j, used + [tid])
                if found:
                    return found
        return None

    ids = search(0, [])
    assert ids and tokenizer.decode(ids) == text, text
    return ids


def bigram_checkpoint(out: Path, tok_dir: Path, chain: list[int], seed: int) -> Path:
    """A LitGPT checkpoint (the finetune stage's epoch layout) that, after token chain[i], emits chain[i + 1]."""
    import torch
    from litgpt import GPT, Config
    from litgpt.utils import save_config

    from proxlab.models.hf_export import write_hf_files

    config = Config(n_layer=1, n_head=1, n_query_groups=1, n_embd=64, head_size=64, intermediate_size=128,
                    block_size=512, vocab_size=4096, padded_vocab_size=4096, mlp_class_name="LLaMAMLP",
                    norm_class_name="RMSNorm", bias=False, rotary_percentage=1.0, parallel_residual=False)
    torch.manual_seed(seed)
    state = GPT(config).state_dict()
    for name in state:
        if name.endswith(("attn.proj.weight", "mlp.proj.weight")):  # blocks add nothing: the last hidden = wte[token]
            state[name] = torch.zeros_like(state[name])
    wte, head = state["transformer.wte.weight"], torch.zeros_like(state["lm_head.weight"])
    for cur, nxt in zip(chain, chain[1:]):
        head[nxt] += wte[cur] / wte[cur].pow(2).mean().sqrt()  # = ln_f(wte[cur]): logit n_embd, others ~N(0, 8)
    state["lm_head.weight"] = head
    out.mkdir(parents=True)
    torch.save({"model": state}, out / "lit_model.pth")
    save_config(config, out)
    write_hf_files(config, tok_dir, out)
    (out / "COMPLETE").write_text("")
    return out


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tok_dir, tokenizer):
    root = tmp_path_factory.mktemp("select")
    sft = root / "sft"
    rows = []
    for i, (text, answer) in enumerate(zip(web_texts(len(GOLD), max_chars=300), GOLD)):
        prompt = render_doc_prompt_text(text, tokenizer, "llama2")
        rows.append({"id": f"doc-{i}", "level": "doc", "chunk": None, "prompt": prompt, "answer": answer,
                     "text": text, "prompt_ids": encode_prompt(prompt, tokenizer),
                     "answer_ids": tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]})
    last = {r["prompt_ids"][-1] for r in rows}
    assert len(last) == 1  # every prompt ends with the same " [/INST]" token: the chain's start
    (sft / "doc").mkdir(parents=True)
    (sft / "doc" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    finetune = root / "finetune"
    eos = tokenizer.eos_token_id
    for epoch, answer in ((1, "drop_doc()"), (2, "keep_doc()")):
        chain = [*last, *distinct_ids(tokenizer, answer, last | {eos}), eos]
        bigram_checkpoint(finetune / f"epoch-{epoch:02d}", tok_dir, chain, seed=epoch)
    spec = make_spec("refiner.select", root / "out", {"level": "doc", "max_new_tokens": 12, "batch_size": 4,
                                                      "threads": 1}, sft=sft, finetune=finetune)
    result = run_stage(select.main, spec)
    return {"out": spec.out, "result": result, "rows": rows}


def test_scores_are_the_f1_of_the_saved_predictions_and_the_argmax_is_exported(artifacts):
    out = artifacts["out"]
    scores = json.loads((out / "scores.json").read_text())
    gold = [a == "keep_doc()" for a in GOLD]
    for name, expected in (("epoch-01", "drop_doc()"), ("epoch-02", "keep_doc()")):
        preds = [json.loads(line) for line in (out / "predictions" / f"{name}.jsonl").read_text().splitlines()]
        assert [p["prediction"] for p in preds] == [expected] * len(GOLD)  # greedy from the stored ids
        assert [p["finish_reason"] for p in preds] == ["stop"] * len(GOLD)
        recomputed = doc_f1([p["prediction"] != "drop_doc()" for p in preds], gold)
        for key in ("f1", "precision", "recall", "tp", "fp", "fn", "tn"):
            assert scores["epochs"][name][key] == recomputed[key], (name, key)
        assert scores["epochs"][name]["unparsable"] == 0
    assert scores["epochs"]["epoch-01"]["f1"] == 0.0 and scores["epochs"]["epoch-02"]["f1"] == pytest.approx(0.8)
    assert scores["best_checkpoint"] == "epoch-02" and scores["best_epoch"] == 2
    assert artifacts["result"].counts["best_epoch"] == 2.0
    assert json.loads((out / "refiner" / "selection.json").read_text())["checkpoint"] == "epoch-02"
    assert not list(out.glob(".hf-*")) and not (out / ".tmp-refiner").exists()


def test_the_exported_refiner_loads_and_generates(artifacts):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from proxlab.refine.backends import make_backend

    refiner = artifacts["out"] / "refiner"
    assert (refiner / "model.safetensors").is_file() and (refiner / "config.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(refiner))
    model = AutoModelForCausalLM.from_pretrained(str(refiner)).eval()
    row = artifacts["rows"][0]
    inputs = tok(row["prompt"], add_special_tokens=False, return_tensors="pt")
    assert "token_type_ids" not in inputs and inputs["input_ids"][0].tolist() == row["prompt_ids"]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True) == "keep_doc()"
    backend = make_backend({"backend": "hf", "model": str(refiner), "dtype": "float32", "threads": 1})
    assert [g.text for g in backend.generate([r["prompt_ids"] for r in artifacts["rows"][:2]], 12)] == \
        ["keep_doc()"] * 2


def test_a_rerun_reuses_finished_predictions(artifacts):
    """A killed run keeps its finished epochs: a predictions file that matches the examples is read, not redone."""
    out = artifacts["out"]
    path = out / "predictions" / "epoch-01.jsonl"
    before = path.read_bytes()
    spec = make_spec("refiner.select", out, {"level": "doc", "max_new_tokens": 12, "batch_size": 4},
                     sft=artifacts["out"].parent / "sft", finetune=artifacts["out"].parent / "finetune")
    records = select.score_epoch(spec, select.load(select.SelectConfig, spec.config), 1,
                                 out.parent / "finetune" / "epoch-01", artifacts["rows"])
    assert path.read_bytes() == before and [r["prediction"] for r in records] == ["drop_doc()"] * len(GOLD)
    assert not (out / ".hf-epoch-01").exists()  # nothing was converted


def test_ties_go_to_the_earlier_epoch():
    assert select.best_epoch({1: {"f1": 0.5}, 2: {"f1": 0.7}, 3: {"f1": 0.7}}) == 2
    assert select.best_epoch({1: {"f1": 0.0}, 2: {"f1": 0.0}}) == 1


def test_chunk_scoring_rules():
    """Removed-line sets from the strict parser; unparsable (syntax, drop_doc, lines outside the chunk, empty)
    removes nothing; remove_all is the whole chunk; normalize is not scored; micro F1 over the split."""
    text = "\n".join(f"[{i:03d}]line {i}" for i in range(10, 16))
    gold = "remove_lines(line_start=10, line_end=11)\nnormalize(source_str=\"line\", target_str=\"l\")"
    example = {"id": "d", "chunk": 1, "text": text, "answer": gold}
    cases = {
        "remove_lines(line_start=10, line_end=12)": ([10, 11, 12], []),
        "keep_chunk()": ([], []),
        "remove_lines(line_start=10, line_end=": ([], ["syntax_error"]),
        "remove_lines(line_start=9, line_end=11)": ([], ["line_out_of_range"]),
        "drop_doc()": ([], ["wrong_level"]),
        "": ([], ["empty_program"]),
        "remove_lines(all=True)": (list(range(10, 16)), []),
        'normalize(source_str="line", target_str="l")': ([], []),
    }
    records = []
    for prediction, (removed, kinds) in cases.items():
        scored = select.score_example("chunk", example, prediction)
        assert (scored["pred_removed"], scored["unparsable"], scored["gold_removed"]) == (removed, kinds, [10, 11])
        records.append({**scored, "finish_reason": "stop"})
    scores = select.epoch_scores("chunk", records)
    assert scores["f1"] == line_f1_corpus((r["pred_removed"], r["gold_removed"]) for r in records)["f1"]
    assert (scores["tp"], scores["fp"], scores["fn"], scores["unparsable"]) == (4, 5, 12, 4)
    # doc level: garbage is unparsable and scored as keep
    doc = select.score_example("doc", {"id": "d", "text": "x", "answer": "drop_doc()"}, "hello")
    assert doc == {"pred_keep": True, "gold_keep": False, "unparsable": ["no_decision", "not_a_call"]}
