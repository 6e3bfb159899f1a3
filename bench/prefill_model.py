"""The drafter's ceiling against the prefills it prices: what joining a request cost the prefills of
`falcon-edge bench` runs, next to what the cost model charges for it before the prefill.

Before a prefill the engine asks whether the drafter's best case can pay for joining (cost-model.h, `could_pay`).
Part of that price is the target's work for the features: every row of the prompt chunks decoded with embeddings
on runs the last layer (llama.cpp outputs every token of such a decode), charged as 1/n_layer of a prompt token at
the per-token cost of the curve's largest tree, c(n_max) / n_max plain steps. A bench report holds, per prompt, the
prefill times of both modes, the feature rows (`n_prompt_features`) and the plain decoding's step time, so each
prompt gives a measured excess, (spec prefill - plain prefill) / plain step, against the modeled one. Reported per
report: the mean measured / modeled ratio over its prompts and a least-squares line, excess = a + b * rows (b
modeled: c(n_max) / n_max / n_layer). No run is made; the reports' own numbers are read.

    python bench/prefill_model.py bench/results/bench-20261207-1*.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from falcon_edge.train.target_weights import read_target_meta


@functools.cache
def n_layer(target: str) -> int:
    """The target's layer count from its GGUF metadata, read once per target."""
    return read_target_meta(target)["n_layer"]


def prompt_rows(report: dict) -> list[tuple[int, float]]:
    """(feature rows, prefill excess in plain steps) of every prompt of a report whose speculative runs joined."""
    out = []
    for dataset in report["datasets"].values():
        for row in dataset["rows"]:
            plain, spec = row["plain"], row["spec"]
            if not all(run["drafter_joined"] for run in spec):
                continue
            step = statistics.mean((run["t_total_s"] - run["t_prefill_s"]) / max(1, run["n_cycles"]) for run in plain)
            excess = statistics.mean(r["t_prefill_s"] for r in spec) - statistics.mean(r["t_prefill_s"] for r in plain)
            out.append((spec[0]["n_prompt_features"], excess / step))
    return out


def compare(path: Path, layers: int | None) -> dict:
    report = json.loads(path.read_text())
    curve = report["verify_cost"]
    n_layers = layers or n_layer(report["target"])
    slope_model = curve[-1] / len(curve) / n_layers
    rows = prompt_rows(report)
    if len(rows) < 2:
        raise SystemExit(f"{path} has {len(rows)} prompt(s) whose drafter joined; the fit needs 2 or more")
    x = np.array([r for r, _ in rows], dtype=float)  # [n_prompts] feature rows
    y = np.array([e for _, e in rows])                # [n_prompts] measured excess, plain steps
    a, b = np.linalg.lstsq(np.vstack([np.ones_like(x), x]).T, y, rcond=None)[0]
    return {"report": path.name, "target": Path(report["target"]).name, "n_prompts": len(rows),
            "slope_model": slope_model, "slope_fit": float(b), "intercept_fit": float(a),
            "measured_over_model": float(np.mean(y / (x * slope_model)))}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=Path, help="falcon-edge bench JSON reports")
    p.add_argument("--n-layer", type=int, help="the target's layer count (default: read from the report's target GGUF)")
    args = p.parse_args(argv)
    results = [compare(path, args.n_layer) for path in args.reports]
    print(f"{'report':<28} {'target':<40} {'prompts':>7} {'b model':>8} {'b fit':>8} {'a fit':>6}"
          f" {'measured/model':>14}")
    for r in results:
        print(f"{r['report']:<28} {r['target']:<40} {r['n_prompts']:>7} {r['slope_model']:>8.4f} {r['slope_fit']:>8.4f}"
              f" {r['intercept_fit']:>6.2f} {r['measured_over_model']:>13.2f}x")
    print(f"mean measured/model over {len(results)} reports: "
          f"{statistics.mean(r['measured_over_model'] for r in results):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
