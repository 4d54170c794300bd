"""`proxlab report [sweep=NAME]`: compare the experiments of a sweep from their run directories' `summary.json`.

Writes `runs/<sweep>/report/` with a markdown and a CSV table (variant, kept docs and tokens, FLOPs, accuracy per task,
average) and a PNG of average accuracy against total FLOPs; prints the table. Reads only local files, so it works
offline and in tests. Also the last step of a Hydra multirun (`SweepReportCallback`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from proxlab.experiments.ledger import SUMMARY

VARIANT_ORDER = {"raw": 0, "rules": 1, "doc": 2, "prox": 3}


def load_summaries(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).glob(f"*/{SUMMARY}"))]
    return sorted(rows, key=lambda r: (r.get("model", ""), VARIANT_ORDER.get(r.get("variant"), 9), r["run_dir"]))


def task_names(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in rows:
        for k in r:
            if k.startswith("eval/") and k.count("/") == 1 and k not in ("eval/avg", "eval/metric"):
                if k[5:] not in names:
                    names.append(k[5:])
    return names


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    tasks = task_names(rows)
    header = ["variant", "model", "docs kept", "train tokens", "FLOPs refine", "FLOPs train", "FLOPs total",
              *tasks, "avg"]
    body = []
    for r in rows:
        kept = f"{r.get('docs/kept')}/{r.get('docs/raw')}"
        body.append([r.get("variant"), r.get("model"), kept, r.get("tokens/train"), r.get("flops/refine"),
                     r.get("flops/train"), r.get("flops/total"), *[r.get(f"eval/{t}") for t in tasks],
                     r.get("eval/avg")])
    return header, body


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2e}" if abs(v) >= 1e4 else f"{100 * v:.1f}" if 0 <= v <= 1 else f"{v:.3g}"
    return str(v)


def markdown(header: list[str], body: list[list[Any]], metric: str) -> str:
    out = io.StringIO()
    out.write(f"Accuracy columns: {metric} × 100.\n\n")
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for row in body:
        out.write("| " + " | ".join(_fmt(v) for v in row) + " |\n")
    return out.getvalue()


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in rows:
        if r.get("eval/avg") is None:
            continue
        ax.scatter(r["flops/total"], 100 * r["eval/avg"], s=40)
        ax.annotate(f"{r['variant']} ({r['model']})", (r["flops/total"], 100 * r["eval/avg"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("total FLOPs (refining + training)")
    ax.set_ylabel(f"average {rows[0].get('eval/metric', 'acc_norm') if rows else ''} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_report(sweep_dir: Path, log_wandb: bool = False, logger_cfg: dict | None = None) -> Path:
    rows = load_summaries(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no {SUMMARY} under {sweep_dir}/*/: run the sweep's experiments first")
    out = Path(sweep_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    header, body = table(rows)
    metric = rows[0].get("eval/metric", "acc_norm")
    md = markdown(header, body, metric)
    (out / "table.md").write_text(md)
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)
    plot(rows, out / "accuracy_vs_flops.png", f"{Path(sweep_dir).name}: accuracy vs FLOPs")
    print(md, flush=True)
    for name in sorted({r["paper_table"] for r in rows if r.get("paper_table")}):
        from proxlab.experiments.paper import TABLES
        from proxlab.experiments.paper_report import write_paper_table

        if name not in TABLES:
            raise KeyError(f"paper_table={name!r} is not one of {sorted(TABLES)}")
        print(write_paper_table(TABLES[name], [r for r in rows if r.get("paper_table") == name], out), flush=True)
    print(f"[proxlab] report written to {out}", flush=True)
    if log_wandb:
        from proxlab.experiments.tracking import MetricsLogger

        logger = MetricsLogger(out / "metrics.jsonl", job="report", logger_cfg=logger_cfg, run_dir=sweep_dir)
        logger.table("report/table", header, [[v for v in row] for row in body])
        logger.close()
    return out


class SweepReportCallback(Callback):
    """Hydra callback: after a multirun, build the report of the sweep its jobs wrote to."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = config.get("sweep") or config.get("name")
        sweep_dir = Path(config.paths.runs_dir).resolve() / sweep
        if sweep_dir.exists() and not config.get("dry_run"):
            logger_cfg = {"backend": config.logger.backend, "mode": config.logger.mode,
                          "project": config.logger.project, "group": sweep}
            build_report(sweep_dir, log_wandb=config.logger.backend == "wandb", logger_cfg=logger_cfg)
