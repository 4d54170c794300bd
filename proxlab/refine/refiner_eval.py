"""`proxlab refine eval`: score a refiner's doc-level keep/drop decisions against human-labelled documents.

The paper (§A.3, Table 4) reports doc-level F1 of its refining models on held-out SFT labels (keep = 1, drop = 0).
Here the labels are DCLM's human quality judgements on CommonCrawl pages (``web/dclm_human_quality_annotated.jsonl``:
``text``, ``label`` 1 = good / 0 = bad, ``in_agreement_subset``), and any decision function can be scored:

* rule filters (datatrove's Gopher, C4, FineWeb quality rules, alone or chained), the `rules` variant's decisions;
* a refining model through any backend: the doc-level prompt of the released refiners (``--prompt prox``), its
  output executed by ``run_doc_program`` (compat: "drop" anywhere drops; strict: parsed);
* ``--prompt judge``: an instruction to answer ``keep_doc()`` or ``drop_doc()``, for general chat models (SmolLM2)
  that were never trained on the ProX format.

API: ``evaluate_refiner(labelled_jsonl, decide)`` with ``decide(texts) -> list[bool]`` (True = keep).
CLI::

    proxlab refine eval --rules gopher,c4,fineweb,all    # or python -m proxlab.refine.refiner_eval ...
    proxlab refine eval --model proxlab:smollm2-135m-instruct --backend hf --prompt judge
    .venv-vllm/bin/python -m proxlab.refine.refiner_eval --model gair-prox/web-doc-refining-lm --backend vllm

prints one table row per refiner (keep-class precision/recall/F1, drop F1, macro F1, accuracy, and keep F1 on the
annotators' agreement subset); ``--json`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from proxlab.refine.refiner_metrics import doc_f1

Decide = Callable[[list[str]], list[bool]]
DCLM_FILE = "web/dclm_human_quality_annotated.jsonl"
# `--rules` name -> the refine variant (conf/refine/<variant>.yaml) whose rules it scores: the stage's own settings
# (filters, C4's terminal-punctuation rule, language), so both run the same datatrove filters (rules.build_filters).
RULE_SETS = {"gopher": "rules_gopher", "c4": "rules_c4", "fineweb": "rules_fineweb", "all": "rules"}

JUDGE_PROMPT = (
    "Decide whether the following web document is worth keeping for training a language model. Keep informative, "
    "well-written, coherent text; drop spam, boilerplate, navigation menus, lists of links, adverts and "
    "incoherent text.\n\n[doc]\n{text}\n[/doc]\n\nAnswer with exactly one call: keep_doc() or drop_doc()."
)


def load_labelled(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append({"text": r["text"], "keep": int(r["label"]) == 1,
                             "agreement": bool(r.get("in_agreement_subset", False))})
            if limit and len(rows) == limit:
                break
    return rows


def evaluate_refiner(labelled_jsonl: str | Path, decide: Decide, limit: int | None = None) -> dict[str, Any]:
    """Doc-level keep/drop scores of `decide` against the labels (keep = positive class, as paper §A.3)."""
    rows = load_labelled(labelled_jsonl, limit)
    t0 = time.perf_counter()
    pred = [bool(p) for p in decide([r["text"] for r in rows])]
    wall = time.perf_counter() - t0
    if len(pred) != len(rows):
        raise ValueError(f"decide returned {len(pred)} decisions for {len(rows)} documents")
    gold = [r["keep"] for r in rows]
    scores = doc_f1(pred, gold)
    agree = [i for i, r in enumerate(rows) if r["agreement"]]
    sub = doc_f1([pred[i] for i in agree], [gold[i] for i in agree]) if agree else {}
    return {**scores, "kept_ratio": sum(pred) / max(len(pred), 1), "gold_keep_ratio": sum(gold) / max(len(gold), 1),
            "agreement_f1": sub.get("f1"), "agreement_macro_f1": sub.get("macro_f1"), "agreement_n": len(agree),
            "wall_s": round(wall, 2)}


# ---------------------------------------------------------------------------------------------------------------------
# Deciders


def rules_decider(rules: str | Any) -> Decide:
    """Keep iff stage refine.rules keeps: `rules` is a refine variant's name (a value of RULE_SETS, e.g.
    "rules_gopher", read from conf/refine/) or a RulesConfig. The filters come from `rules.build_filters`, the
    stage's code, so e.g. "rules_gopher" runs Gopher repetition + quality, "rules" the whole FineWeb chain (with
    FineWeb's C4 setting: no terminal-punctuation line rule)."""
    from proxlab.refine.rules import apply_filters, build_filters, variant_rules

    flts = build_filters(variant_rules(rules) if isinstance(rules, str) else rules)

    def decide(texts: list[str]) -> list[bool]:
        return [apply_filters(flts, t, str(i))[1] is None for i, t in enumerate(texts)]

    return decide


def model_decider(cfg: dict[str, Any], prompt: str = "prox", mode: str = "compat", data_dir: str | None = None,
                  outputs: list | None = None) -> Decide:
    """Keep iff the refiner's doc-level program keeps. `cfg` holds GenerateConfig settings (backend, model, ...);
    settings it omits take the refine stage's doc-level defaults (RefineConfig.doc: the Llama-2-chat prompt format)."""
    from proxlab.core.config import GenerateConfig, RefineConfig, load
    from proxlab.refine.backends import make_backend
    from proxlab.refine.programs import run_doc_program
    from proxlab.refine.prompts import encode_prompt, render_chat, render_doc_prompt

    cfg = load(GenerateConfig, {"chat_format": RefineConfig().doc.chat_format, **cfg}, where="refiner")
    backend = make_backend(cfg, data_dir=data_dir)
    tok = backend.tokenizer
    max_prompt = cfg.max_prompt_tokens

    def prompt_ids(text: str) -> list[int]:
        if prompt == "prox":
            return render_doc_prompt(text, tok, max_prompt, cfg.truncation, cfg.chat_format)
        if prompt != "judge":
            raise ValueError(f"prompt must be prox or judge, not {prompt!r}")
        # Cut the document, not the instruction: shorten the text until the prompt fits.
        text_ids = tok.encode(text, add_special_tokens=False)
        budget = max_prompt - len(encode_prompt(render_chat(JUDGE_PROMPT.format(text=""), tok), tok))
        if len(text_ids) > budget:
            text = tok.decode(text_ids[: max(budget, 0)])
        return encode_prompt(render_chat(JUDGE_PROMPT.format(text=text), tok), tok)

    def decide(texts: list[str]) -> list[bool]:
        gens = backend.generate([prompt_ids(t) for t in texts], cfg.max_new_tokens)
        if outputs is not None:
            outputs.extend(g.text for g in gens)
        return [not run_doc_program(t, g.text, mode=mode).dropped for t, g in zip(texts, gens)]

    return decide


# ---------------------------------------------------------------------------------------------------------------------
# CLI

COLUMNS = ("refiner", "n", "kept %", "keep P", "keep R", "keep F1", "drop F1", "macro F1", "acc", "keep F1 (agree)")


def table_row(name: str, r: dict[str, Any]) -> list[str]:
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}"  # noqa: E731
    return [name, str(r["n"]), pct(r["kept_ratio"]), pct(r["precision"]), pct(r["recall"]), pct(r["f1"]),
            pct(r["drop_f1"]), pct(r["macro_f1"]), pct(r["accuracy"]), pct(r["agreement_f1"])]


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_row(name, r)) + " |" for name, r in results.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    p = argparse.ArgumentParser(prog="proxlab refine eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help=f"labelled jsonl (text, label, in_agreement_subset); default <data_dir>/{DCLM_FILE}")
    p.add_argument("--rules", default="", help="comma-separated rule sets: gopher,c4,fineweb,all")
    p.add_argument("--model", action="append", default=[], help="refining model(s): HF id, path, proxlab:tiny-llama, "
                                                               "proxlab:smollm2-135m-instruct")
    p.add_argument("--backend", default="hf", choices=("hf", "vllm", "openai"))
    p.add_argument("--endpoint", default=None, help="openai backend: base URL")
    p.add_argument("--prompt", default="prox", choices=("prox", "judge"), help="ProX doc prompt or a judge prompt")
    p.add_argument("--mode", default="compat", choices=("compat", "strict"))
    p.add_argument("--max-new-tokens", type=int, default=32, help="enough to see keep_doc()/drop_doc() (default 32)")
    p.add_argument("--max-prompt-tokens", type=int, default=2000)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="first N labelled documents only")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--outputs", type=Path, default=None, help="write the models' raw outputs here (jsonl)")
    args = p.parse_args(argv)

    if args.data:
        data = Path(args.data)
    else:
        from proxlab.core.paths import data_dir

        try:
            data = data_dir() / DCLM_FILE
        except FileNotFoundError as e:
            p.error(str(e))
    if not data.is_file():  # before any model is loaded
        p.error(f"labelled documents file {data} does not exist (give --data PATH)")
    results: dict[str, dict[str, Any]] = {}
    for name in [r for r in args.rules.split(",") if r]:
        if name not in RULE_SETS:
            p.error(f"--rules: unknown rule set {name!r}; known: {', '.join(RULE_SETS)}")
        label = "rules: " + ("Go+C4+FW" if name == "all" else name)
        results[label] = evaluate_refiner(data, rules_decider(RULE_SETS[name]), args.limit)
        print(f"[proxlab] {label}: keep F1 {results[label]['f1']:.3f}", file=sys.stderr, flush=True)
    for model in args.model:
        cfg = {"backend": args.backend, "model": model, "max_new_tokens": args.max_new_tokens,
               "max_prompt_tokens": args.max_prompt_tokens, "dtype": args.dtype, "batch_size": args.batch_size,
               "endpoint": args.endpoint, "threads": args.threads, "enforce_eager": True}
        outputs: list[str] = []
        label = f"{model} ({args.backend}, {args.prompt} prompt, {args.mode})"
        results[label] = evaluate_refiner(data, model_decider(cfg, args.prompt, args.mode, outputs=outputs),
                                          args.limit)
        print(f"[proxlab] {label}: keep F1 {results[label]['f1']:.3f}", file=sys.stderr, flush=True)
        if args.outputs:
            with open(args.outputs, "a") as f:
                for text in outputs:
                    f.write(json.dumps({"refiner": label, "output": text}) + "\n")
    if not results:
        p.error("nothing to evaluate: give --rules and/or --model")
    print(f"Doc-level keep/drop against {data.name} ({next(iter(results.values()))['n']} documents; keep = "
          f"label 1; {100 * next(iter(results.values()))['gold_keep_ratio']:.1f}% of them)\n")
    print(markdown_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
