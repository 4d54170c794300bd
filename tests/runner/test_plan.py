"""`proxlab plan` from configs alone reproduces the paper's compute statements (§4.2)."""

import pytest

from proxlab.runner.compose import compose_config
from proxlab.runner.planning import describe_costs, refining_flops
from proxlab.runner.validate import typed


RELEASED = ["refine.doc.model=gair-prox/web-doc-refining-lm", "refine.chunk.model=gair-prox/web-chunk-refining-lm"]


def compose(overrides: list[str]):
    return typed(compose_config(overrides))


def test_refining_redpajama_with_the_03b_refiners_costs_5e19():
    cfg = compose(["exp=table2", "refine=prox_xs", *RELEASED])  # table2 builds TLM-S refiners by default
    _, refine = refining_flops(cfg)
    # 2·313.3M·(62.5B raw + 19B doc-kept) ≈ 5.1e19 ("C ≈ 5×10^19")
    assert refine == pytest.approx(5.1e19, rel=0.01)
    lines = describe_costs(cfg)
    more = next(line for line in lines if line.startswith("refining equals training"))
    assert float(more.split()[3]) == pytest.approx(12e9, rel=0.05)  # "an additional 12B tokens on TLM-S"


def test_same_cost_is_5b_tokens_at_17b():
    cfg = compose(["exp=table2", "refine=prox_xs", "model=tlm_m", "train=tlm_m_12k5", *RELEASED])
    more = next(line for line in describe_costs(cfg) if line.startswith("refining equals training"))
    assert float(more.split()[3]) == pytest.approx(5e9, rel=0.05)  # "and 5B tokens on TLM-M"


def test_raw_has_no_refining_cost_and_gpu_hours_are_printed():
    lines = describe_costs(compose(["exp=table2", "refine=raw"]))
    assert any("refine 0.000e+00" in line for line in lines)
    assert any("H100" in line for line in lines) and any("A100" in line for line in lines)


def test_sweep_total_counts_a_shared_refining_once():
    from proxlab.runner.planning import CostEstimate, describe_sweep_costs

    fig5 = [CostEstimate("xs_raw", 26.2e9, 4.9e19, 0.0, {}, "p1"),
            CostEstimate("xs_prox", 26.2e9, 4.9e19, 5.1e19, {"g1": 3.9e19, "g2": 1.2e19}, "p2"),
            CostEstimate("s_prox", 26.2e9, 1.1e20, 5.1e19, {"g1": 3.9e19, "g2": 1.2e19}, "p3"),  # same corpus
            CostEstimate("s_doc", 26.2e9, 1.1e20, 3.9e19, {"g1": 3.9e19}, "p4")]  # ProX-D: ProX-D+C's doc level
    lines = describe_sweep_costs(fig5)
    assert "4 trainings over 1.05e+11 tokens; 2 distinct refining stages for 3 refined experiments" in lines[0]
    assert lines[1] == "sweep FLOPs: refine 5.100e+19 + train 3.180e+20 = 3.690e+20"
    assert any(line.startswith("sweep GPU-hours at 40% MFU on H100") for line in lines)


def test_table2_sweep_counts_the_doc_level_of_doc_and_prox_once():
    from proxlab.runner.planning import cost_estimate, describe_sweep_costs

    costs = [cost_estimate(compose(["exp=table2", f"refine={v}"]), {f"refine.generate_{lvl}": f"{lvl}-key"
                                                                   for lvl in ("doc", "chunk")})
             for v in ("doc", "prox")]
    doc, prox = costs
    assert prox.refine_flops > doc.refine_flops > 0
    total = float(describe_sweep_costs(costs)[1].split()[3])
    assert total == pytest.approx(prox.refine_flops, rel=1e-3)  # doc's refining is prox's doc level, counted once


def test_plan_of_a_sweep_prints_each_experiment_and_the_total(tmp_path):
    import subprocess
    import sys

    from proxlab.core.paths import REPO_ROOT

    r = subprocess.run([sys.executable, "-m", "proxlab.cli", "plan", "-m", "exp=fig5", "model=tlm_xs,tlm_s",
                        "refine=prox_xs", f"paths.runs_dir={tmp_path / 'runs'}",
                        f"paths.artifacts_dir={tmp_path / 'artifacts'}"],
                       capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line.removeprefix("[proxlab] ") for line in r.stdout.splitlines()]
    assert "FLOPs: refine 5.107e+19 + train 4.928e+19 = 1.004e+20" in lines  # TLM-XS on ProX-xs data
    assert "FLOPs: refine 5.107e+19 + train 1.116e+20 = 1.627e+20" in lines  # TLM-S on the same refined corpus
    assert "sweep FLOPs: refine 5.107e+19 + train 1.609e+20 = 2.120e+20" in lines  # refined once for both
    assert not (tmp_path / "artifacts").exists()  # planned, not run


# ---------------------------------------------------------------------------------------------------------------------
# The pool's measured size (issue "Corpora at paper scale", part 7)


def _prepare_key_of_the_graph(overrides):
    from pathlib import Path

    from proxlab.runner.graph import plan

    return {s.name: s for s in plan(compose_config(overrides), Path("/unused"))}["prepare"].key


def _fake_prepare_artifact(cfg, tokens, se, tokenizer="/data/tokenizers/llama_hf", missing=0):
    import json

    from proxlab.runner.planning import prepare_artifact

    out = prepare_artifact(cfg)
    out.mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({"counts": {"tokens_estimate": tokens, "tokens_estimate_se": se,
                                                              "pool_files_missing": missing},
                                                   "extra": {"tokens": {"tokenizer": tokenizer}}}))
    (out / "_SUCCESS").write_text("")
    return out


def test_planning_finds_the_prepare_artifact_the_graph_keys(tmp_path):
    from proxlab.runner.planning import prepare_artifact

    overrides = ["exp=table2", "refine=prox", f"paths.artifacts_dir={tmp_path}"]
    out = prepare_artifact(compose(overrides))
    assert out == tmp_path.resolve() / "prepare" / _prepare_key_of_the_graph(overrides)
    other = compose([*overrides, "corpus=redpajama_v2_2dumps"])
    assert prepare_artifact(other).name != out.name and prepare_artifact(other).name == _prepare_key_of_the_graph(
        [*overrides, "corpus=redpajama_v2_2dumps"])


def test_plan_uses_the_measured_pool_for_epochs_beside_table7(tmp_path):
    overrides = ["exp=table2", "refine=prox", f"paths.artifacts_dir={tmp_path}"]
    cfg = compose(overrides)
    before = describe_costs(cfg)
    assert "variant pool ≈ 1.6e+10 tokens (corpus.tokens) → 1.64 epochs for 2.62e+10 train tokens" in before
    table7 = ("paper Table 7 (table2, RedPajama-V2, after ProX-D+C): corpus 16B, train 26.2B, 1.64 epochs | ours: "
              "corpus 16.0B, train 26.2B, 1.64 epochs")
    assert table7 in before
    _fake_prepare_artifact(cfg, 70e9, 0.1e9)  # the dump measured 70B tokens (12% more than the paper's 62.5B)
    lines = describe_costs(cfg)
    assert any(line.startswith("pool redpajama_v2 dumps [0]: measured 7e+10 ± 1e+08 tokens with llama_hf")
               and "corpus.tokens 6.25e+10 (+12.0%)" in line for line in lines)
    pool = 70e9 * cfg.refine.expected_doc_kept * cfg.refine.expected_chunk_kept
    epochs = 12500 * 1024 * 2048 / pool
    assert f"variant pool ≈ {pool:.3g} tokens (measured) → {epochs:.2f} epochs for 2.62e+10 train tokens" in lines
    assert any(line.startswith("paper Table 7 (table2, RedPajama-V2, after ProX-D+C): corpus 16B, train 26.2B, 1.64 "
                               f"epochs | ours: corpus {pool / 1e9:.1f}B") for line in lines)
    refine = refining_flops(cfg, 70e9)[1]  # refining FLOPs follow the measured pool too
    assert any(line.startswith(f"FLOPs: refine {refine:.3e}") for line in lines)


def test_a_measurement_with_another_tokenizer_is_shown_but_not_used(tmp_path):
    cfg = compose(["exp=table2", f"paths.artifacts_dir={tmp_path}"])
    _fake_prepare_artifact(cfg, 80e9, 0.1e9, tokenizer="/data/tokenizers/gpt_neox")
    lines = describe_costs(cfg)
    assert any("another tokenizer than this experiment's: corpus.tokens is used" in line for line in lines)
    assert "variant pool ≈ 6.25e+10 tokens (corpus.tokens) → 0.42 epochs for 2.62e+10 train tokens" in lines


def test_table7_rows_beside_each_papers_experiment():
    fig6 = describe_costs(compose(["exp=fig6", "corpus=c4"]))
    assert any(line.startswith("paper Table 7 (fig6, C4, raw data size): corpus 198B, train 52.4B, 0.53 epochs as "
                               "printed (train / corpus = 0.26) | ours: corpus 198.0B, train 52.4B, 0.26 epochs")
               for line in fig6)
    xs = describe_costs(compose(["exp=fig5", "model=tlm_xs", "refine=prox_xs"]))
    assert any("(fig5, RedPajama-V2, after ProX-D+C (using ProX-xs)): corpus 14.5B" in line for line in xs)
    math7b = describe_costs(compose(["exp=table5_mistral", "refine=raw"]))
    assert any("(table5, OpenWebMath, raw data size): corpus 15B, train 10.5B, 0.70 epochs" in line for line in math7b)
    assert not any(line.startswith("paper Table 7") for line in describe_costs(compose(["exp=smoke"])))


def test_a_sweep_over_seeds_counts_a_training_per_seed_and_the_shared_refining_once():
    """`plan -m ... train.seed=1,2,3`: the graph keys each seed's pretraining apart (so each has its own run
    directory) and shares everything before it; the sweep's total has three trainings and one refining."""
    from pathlib import Path

    from proxlab.runner.graph import plan, run_key
    from proxlab.runner.planning import cost_estimate, describe_sweep_costs

    base = ["exp=smoke", "refine=prox", "refine.doc.size_preset=tlm_xs", "refine.chunk.size_preset=tlm_xs",
            "corpus.tokens=1e6"]
    costs, graphs = [], []
    for seed in ("train.seed=1", "train.seed=2", "train.data_seed=7"):
        cfg = compose_config(base + [seed])
        stages = {s.name: s for s in plan(cfg, Path("/unused"))}
        graphs.append(stages)
        costs.append(cost_estimate(typed(cfg), {n: s.key for n, s in stages.items()}))
    for name in ("prepare", "refine.generate_doc", "refine.apply_chunk", "tokenizer", "tokenize"):
        assert len({g[name].key for g in graphs}) == 1, name
    assert len({g["pretrain"].key for g in graphs}) == 3 and len({g["evaluate"].key for g in graphs}) == 3
    assert len({run_key(list(g.values())) for g in graphs}) == 3  # run directories apart
    lines = describe_sweep_costs(costs)
    assert "3 trainings (3 seeds: 1, 2, 1234/data 7)" in lines[0] and "2 distinct refining stages" in lines[0]
    refine, train = float(lines[1].split()[3]), float(lines[1].split()[6])
    assert refine == pytest.approx(costs[0].refine_flops, rel=1e-3)  # as printed: 4 digits
    assert train == pytest.approx(3 * costs[0].train_flops, rel=1e-3)
