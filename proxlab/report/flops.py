"""The FLOPs comparison of the paper's Fig. 8 (§4.2): for each run, training and refining FLOPs stacked, at the end of
training and at the point where its average accuracy first reaches a target.

The target is `report.target_avg_by_model[<model>]` or `report.target_avg` (percent), else the final average of the
raw run of the same model and corpus, so "FLOPs to target" reads: what did each variant spend to match the raw
baseline. It is interpolated linearly on the run's accuracy-by-step curve (training FLOPs at each evaluated step,
summary.json's `eval_by_step`); a run evaluated only at the end has one point, so its FLOPs to target are an upper
bound (marked ≤). Refining FLOPs are spent before training starts and are counted whole.

Optionally (`report.include_refiner_pretraining`, off as in the paper, whose footnote 2 leaves out ≈5.3e19) each
refined run also carries the refining model's own pretraining: 6·N·D of each distinct refiner size_preset with
D = `report.refiner_pretraining_tokens` (the doc and chunk refiners of one size share one pretrained base, paper §3.1),
or the literal `report.refiner_pretraining_flops`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxlab.core.config import ReportConfig
from proxlab.runner.ledger import BY_STEP
from proxlab.report.paper import FIG8_NOTES
from proxlab.report.paper_tables import latex_table
from proxlab.report.part import ReportPart, markdown_table
from proxlab.report.steps import row_label, run_name

STEM = "flops"
_TOLERANCE = 1e-9  # a target typed as 42.1 (%) is 0.42100000000000004 as a fraction; 0.421 must reach it


@dataclass(frozen=True)
class FlopsRow:
    label: str
    run: str
    variant: str | None
    model: str | None
    corpus: str | None
    train: float
    refine: float
    refiner_pretraining: float | None  # None: not counted (option off, not a refined run, or refiner size unknown)
    final_avg: float | None
    target: float | None  # a fraction, like the summaries' accuracies
    train_to_target: float | None  # None: never reached (or no target)
    upper_bound: bool = False  # reached at the first evaluated point: the true crossing is at or before it
    notes: tuple[str, ...] = ()

    @property
    def overhead(self) -> float:
        """FLOPs spent before training: refining, plus the refiner's pretraining when counted."""
        return self.refine + (self.refiner_pretraining or 0.0)

    @property
    def total(self) -> float:
        return self.train + self.overhead

    @property
    def total_to_target(self) -> float | None:
        return None if self.train_to_target is None else self.train_to_target + self.overhead


def flops_to_reach(curve: list[tuple[float, float]], target: float) -> tuple[float | None, bool]:
    """Training FLOPs at which the curve [(FLOPs, avg)] first reaches `target`, interpolated linearly between the
    evaluated points, and whether that is an upper bound (the first point already reaches it). (None, False): never."""
    for i, (flops, avg) in enumerate(curve):
        if avg + _TOLERANCE >= target:
            if i == 0:
                return flops, True
            f0, a0 = curve[i - 1]
            return f0 + (target - a0) / (avg - a0) * (flops - f0), False
    return None, False


def accuracy_curve(summary: dict[str, Any]) -> list[tuple[float, float]]:
    """(training FLOPs, avg) per evaluated step; the final result alone when the run has no per-step results."""
    points = [(p["flops/train"], p["avg"]) for p in summary.get(BY_STEP, [])
              if p.get("flops/train") is not None and p.get("avg") is not None]
    if not points and summary.get("eval/avg") is not None:
        points = [(float(summary.get("flops/train") or 0.0), summary["eval/avg"])]
    return points


def refiner_presets(summary: dict[str, Any]) -> dict[str, str | None]:
    """The run's refining levels and their size presets; summaries written before runs recorded them give None."""
    if "refiner_presets" in summary:
        return dict(summary["refiner_presets"])
    return {level: None for level in {"doc": ("doc",), "prox": ("doc", "chunk")}.get(summary.get("variant"), ())}


def refiner_pretraining_flops(summary: dict[str, Any], options: ReportConfig) -> tuple[float | None, str]:
    """(FLOPs, note) of pretraining the run's refining model(s), when the report counts them."""
    presets = refiner_presets(summary)
    if not options.include_refiner_pretraining or not presets:
        return None, ""
    if options.refiner_pretraining_flops is not None:
        return float(options.refiner_pretraining_flops), "refiner pretraining as given"
    if any(p is None for p in presets.values()):
        return None, "refiner size unknown (refine.*.size_preset unset): its pretraining is not counted"
    from proxlab.core.flops import training_flops
    from proxlab.models.params import non_embedding_params
    from proxlab.models.presets import model_config

    flops = sum(training_flops(non_embedding_params(model_config(p)), options.refiner_pretraining_tokens)
                for p in set(presets.values()))
    return flops, f"refiner pretraining: 6·N·D of {', '.join(sorted(set(presets.values())))}"


def flops_rows(rows: list[dict[str, Any]], options: ReportConfig) -> list[FlopsRow]:
    baselines: dict[tuple[Any, Any], float] = {}
    for s in rows:
        if s.get("variant") == "raw" and s.get("eval/avg") is not None:
            baselines.setdefault((s.get("model"), s.get("corpus")), s["eval/avg"])
    out = []
    for s in rows:
        given = options.target_avg_by_model.get(s.get("model") or "", options.target_avg)
        target = given / 100 if given is not None else baselines.get((s.get("model"), s.get("corpus")))
        reached, bound = flops_to_reach(accuracy_curve(s), target) if target is not None else (None, False)
        pretraining, note = refiner_pretraining_flops(s, options)
        no_target = "no target: no raw run of this model and corpus" if target is None else ""
        notes = tuple(filter(None, [note, no_target]))
        out.append(FlopsRow(row_label(s), run_name(s), s.get("variant"), s.get("model"), s.get("corpus"),
                            float(s.get("flops/train") or 0.0), float(s.get("flops/refine") or 0.0), pretraining,
                            s.get("eval/avg"), target, reached, bound, notes))
    return out


def _e(v: float | None) -> str:
    return "–" if v is None else f"{v:.2e}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def table(rows: list[FlopsRow]) -> tuple[list[str], list[list[str]]]:
    """FLOPs at the end of training and to reach the target; `vs raw`: total to target over the raw run's (paper:
    "ProX reaches comparable performance with only 58% of the total FLOPs")."""
    header = ["row", "run", "train", "refine", "refiner pretraining", "total", "final AVG", "target AVG",
              "train to target", "total to target", "vs raw"]
    raw_total: dict[tuple[str | None, str | None], float | None] = {}
    for r in rows:
        if r.variant == "raw":
            raw_total.setdefault((r.model, r.corpus), r.total_to_target)
    body = []
    for r in rows:
        reached = r.total_to_target
        if r.target is None:
            to_train = to_total = "–"
        elif reached is None:
            to_train = to_total = "not reached"
        else:
            mark = "≤" if r.upper_bound else ""
            to_train, to_total = mark + _e(r.train_to_target), mark + _e(reached)
        base = raw_total.get((r.model, r.corpus))
        mark = "≤" if r.upper_bound else ""
        ratio = f"{mark}{100 * reached / base:.0f}%" if reached is not None and base else "–"
        body.append([r.label, r.run, _e(r.train), _e(r.refine), _e(r.refiner_pretraining), _e(r.total),
                     _pct(r.final_avg), _pct(r.target), to_train, to_total, ratio])
    return header, body


def plot(rows: list[FlopsRow], path: Path, counted_pretraining: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.label}\n{r.run}" for r in rows]
    xs = range(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows) + 3), 4.2), dpi=120, sharey=False)
    targets = {round(100 * r.target, 1) for r in rows if r.target is not None}
    goal = f"AVG {targets.pop():.1f}" if len(targets) == 1 else "the raw run's final AVG (per model and corpus)"
    for ax, title, train in ((axes[0], "end of training", [r.train for r in rows]),
                             (axes[1], f"to reach {goal}", [r.train_to_target or 0.0 for r in rows])):
        refine = [r.refine for r in rows]
        pre = [r.refiner_pretraining or 0.0 for r in rows]
        ax.bar(xs, train, label="training")
        ax.bar(xs, refine, bottom=train, label="refining (inference)")
        if counted_pretraining:
            ax.bar(xs, pre, bottom=[a + b for a, b in zip(train, refine)], hatch="//", color="lightgrey",
                   edgecolor="grey", label="refiner pretraining")
        ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("FLOPs")
        ax.grid(axis="y", alpha=0.3)
    # At 2% of the axis height (x in data, y in axes units): with no run reaching its target the axis holds no bar,
    # and a label at a data height far above its range overflows the text rasterizer.
    low = axes[1].get_xaxis_transform()
    for i, r in enumerate(rows):
        if r.target is None:
            axes[1].text(i, 0.02, "no target", ha="center", rotation=90, fontsize=7, transform=low)
        elif r.total_to_target is None:
            axes[1].text(i, 0.02, "not reached", ha="center", rotation=90, fontsize=7, color="red", transform=low)
        else:
            axes[1].text(i, r.total_to_target, ("≤" if r.upper_bound else "") + f"{r.total_to_target:.2e}",
                         ha="center", va="bottom", fontsize=6)
        axes[0].text(i, r.total, f"{r.total:.2e}", ha="center", va="bottom", fontsize=6)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_flops_report(summaries: list[dict[str, Any]], out_dir: Path, options: ReportConfig) -> ReportPart:
    """Write flops.{md,csv,tex,png} (paper Fig. 8) for the sweep's runs."""
    rows = flops_rows(summaries, options)
    header, body = table(rows)
    if options.target_avg_by_model:
        target = ", ".join(f"{v:.1f} for {m}" for m, v in options.target_avg_by_model.items())
        if options.target_avg is not None:
            target += f", {options.target_avg:.1f} for other models"
    elif options.target_avg is not None:
        target = f"{options.target_avg:.1f}"
    else:
        target = "the final AVG of the raw run of the same model and corpus"
    pretraining = ("counted" if options.include_refiner_pretraining
                   else "not counted, as in the paper (footnote 2); report.include_refiner_pretraining=true counts it")
    lines = ["### FLOPs: training + refining, at the end and to reach the target AVG (paper Fig. 8)", "",
             f"Target AVG: {target}. Refiner pretraining: {pretraining}. ≤: reached at the first evaluated step (an "
             "upper bound).", "", *markdown_table(header, body)]
    notes: dict[str, list[str]] = {}
    for r in rows:
        for note in r.notes:
            notes.setdefault(note, []).append(r.run)
    if notes:
        lines += ["", *[f"- {note}: {', '.join(runs)}" for note, runs in notes.items()]]
    lines += ["", *[f"Note: {note}" for note in FIG8_NOTES]]  # the paper's FLOPs that do not add up
    markdown = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{STEM}.md").write_text(markdown)
    (out_dir / f"{STEM}.tex").write_text(latex_table(
        f"FLOPs to the end of training and to reach the target AVG ({target}); refiner pretraining {pretraining}",
        header, body))
    with open(out_dir / f"{STEM}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "run", "model", "corpus", "flops_train", "flops_refine", "flops_refiner_pretraining",
                    "flops_total", "final_avg", "target_avg", "flops_train_to_target", "flops_total_to_target",
                    "upper_bound", "note"])
        for r in rows:
            w.writerow([r.label, r.run, r.model, r.corpus, r.train, r.refine, r.refiner_pretraining, r.total,
                        r.final_avg, r.target, r.train_to_target, r.total_to_target, r.upper_bound, "; ".join(r.notes)])
    plot(rows, out_dir / f"{STEM}.png", options.include_refiner_pretraining)
    return ReportPart(markdown, {STEM: (header, body)}, {STEM: out_dir / f"{STEM}.png"})
