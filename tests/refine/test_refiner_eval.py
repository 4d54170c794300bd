"""`proxlab refine eval`: doc-level keep/drop F1 of rules and refining models against labelled documents."""

from __future__ import annotations

import json

import pytest

from proxlab.refine import refiner_eval
from tiny_model import DCLM, tiny_model_path


def labelled(tmp_path):
    rows = [("good one", 1, True), ("good two", 1, False), ("bad one", 0, True), ("bad two", 0, True)]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y, "in_agreement_subset": a}) + "\n" for t, y, a in rows))
    return path


def test_scores_of_a_decision_function(tmp_path):
    r = refiner_eval.evaluate_refiner(labelled(tmp_path), lambda texts: ["good" in t or t == "bad one" for t in texts])
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 0, 1)
    assert r["f1"] == pytest.approx(0.8) and r["kept_ratio"] == 0.75 and r["gold_keep_ratio"] == 0.5
    assert r["agreement_n"] == 3 and r["agreement_f1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="decisions"):
        refiner_eval.evaluate_refiner(labelled(tmp_path), lambda texts: [True])


@pytest.mark.skipif(not DCLM.exists(), reason="shared DCLM labels absent")
def test_rules_on_dclm_labels():
    r = refiner_eval.evaluate_refiner(DCLM, refiner_eval.rules_decider(refiner_eval.RULE_SETS["gopher"]), limit=60)
    assert r["n"] == 60 and 0.0 < r["kept_ratio"] < 1.0 and 0.5 < r["f1"] <= 1.0


def test_rule_sets_are_the_rules_variants():
    """`--rules X` scores what `refine=rules_X` runs: the variant's settings, the stage's filters."""
    from proxlab.core.config import RulesConfig
    from proxlab.refine import rules

    assert refiner_eval.RULE_SETS == {"gopher": "rules_gopher", "c4": "rules_c4", "fineweb": "rules_fineweb",
                                      "all": "rules"}
    steps = {k: rules.filter_steps(rules.variant_rules(v).filters) for k, v in refiner_eval.RULE_SETS.items()}
    assert steps == {"gopher": ["gopher_rep", "gopher_qual"], "c4": ["c4"], "fineweb": ["fineweb"],
                     "all": ["gopher_rep", "gopher_qual", "c4", "fineweb"]}
    assert rules.variant_rules("rules_c4").c4_terminal_punct and not rules.variant_rules("rules").c4_terminal_punct
    prose = ["The town council met on Tuesday evening to discuss the future of the old stone bridge over the river.",
             "Engineers told the members that the structure has become unsafe and that repairs would cost more.",
             "Several residents spoke in favour of keeping the bridge open to walkers and cyclists during the work.",
             "Others argued that a new crossing would serve the growing neighbourhood on the east bank much better.",
             "After a long debate, the council agreed to ask the regional government for help with the funding.",
             "A final decision is expected in the spring, once the survey of the foundations has been completed."]
    banner = "Subscribe to our newsletter to get the latest stories from the valley delivered to your inbox."
    good, repetitive = "\n".join(prose), "\n\n".join(prose[:3] + [banner] * 4 + prose[3:])
    assert refiner_eval.rules_decider("rules_gopher")([good, repetitive]) == [True, False]  # repetition rules run
    assert refiner_eval.rules_decider(RulesConfig(filters=["gopher_qual"]))([good, repetitive]) == [True, True]


def test_cli_with_a_model_and_rules(tmp_path, capsys):
    out = tmp_path / "res.json"
    results = refiner_eval.main(["--data", str(labelled(tmp_path)), "--rules", "c4", "--model", str(tiny_model_path()),
                                 "--max-new-tokens", "4", "--threads", "1", "--json", str(out),
                                 "--outputs", str(tmp_path / "outputs.jsonl")])
    table = capsys.readouterr().out
    assert "| rules: c4 | 4 |" in table and f"| {tiny_model_path()} (hf, prox prompt, compat) | 4 |" in table
    assert json.loads(out.read_text()).keys() == results.keys()
    assert len((tmp_path / "outputs.jsonl").read_text().splitlines()) == 4
    with pytest.raises(SystemExit):
        refiner_eval.main(["--data", str(labelled(tmp_path)), "--rules", "dolma"])


def test_proxlab_command_runs_refine_eval(tmp_path):
    """`proxlab refine eval` / `proxlab refine-eval` reach the evaluator; a missing labels file fails naming it."""
    import subprocess
    import sys

    from tiny_model import REPO

    def proxlab(*args):
        return subprocess.run([sys.executable, "-m", "proxlab.cli", *args], capture_output=True,
                              text=True, timeout=120, cwd=REPO)

    for words in (["refine", "eval"], ["refine-eval"]):
        r = proxlab(*words, "--help")
        assert r.returncode == 0, r.stderr
        assert "proxlab refine eval" in r.stdout and "--rules" in r.stdout
    missing = tmp_path / "no_such_labels.jsonl"
    r = proxlab("refine", "eval", "--data", str(missing), "--rules", "c4")
    assert r.returncode != 0
    assert str(missing) in r.stderr and "Traceback" not in r.stderr
    assert "refine eval" in proxlab("--help").stdout
