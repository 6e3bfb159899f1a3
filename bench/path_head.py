"""What the path head saves per verification: the same trees verified with and without it, in one process.

Two engines on one target and drafter, one with the path head (a tree decoded up to the final norm, the LM head for
the rows the acceptance walk reads only) and one without (every node's logits from the decode, as llama.cpp
verifies), decode the same prompts greedily with a fixed tree budget, so that both verify the same trees. Per tree
budget the report gives the verification time per cycle of each (the decode, plus the path head's calls), their
ratio, and the head rows per cycle against the nodes per cycle. Each prompt runs without, with, with, without
(`falcon-edge bench`'s order) so that a drift of the host's speed hits both alike. Decoding time only; no speed-up claim: the end-to-end ratios are `falcon-edge bench`'s.

    python bench/path_head.py -m qwen2.5-coder-1.5b-instruct --budgets 4 8 16 -o bench/results
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from falcon_edge import EdgeFalcon, drafters, models
from falcon_edge.bench import _abba, _write_json, provenance
from falcon_edge.datasets import DATASETS, load_prompts


def _cycle_ms(runs: list) -> float:
    """Verification milliseconds per cycle over the runs (decode plus path-head calls)."""
    return 1e3 * sum(s.t_verify_s + s.t_head_s for s in runs) / sum(s.n_cycles for s in runs)


def measure(target: str, drafter: str | None, budgets: list[int], n_prompts: int, max_tokens: int, n_threads: int) -> dict:
    if drafter is None:
        if not models.is_registry_name(target):
            raise SystemExit(f"{target} is not a registry name: name its drafter with -md")
        drafter = drafters.shipped_drafter(target)
    prompts = [p for name in DATASETS for p in load_prompts(name, n_prompts)]
    report = {"target": target, "drafter": str(drafter), "n_prompts_per_set": n_prompts, "max_tokens": max_tokens,
              "n_threads": n_threads, **provenance(), "budgets": {}}
    for budget in budgets:
        engines = {on: EdgeFalcon(target, drafter=drafter, n_threads=n_threads, tree_budget=budget, path_head=on)
                   for on in (True, False)}
        if not engines[True].path_head_active:
            raise SystemExit(f"{target}: the path head is not active here (a GPU, or a head that failed its check)")
        runs = {True: [], False: []}
        same = 0
        for p in prompts:
            llm = engines[True]
            tokens = llm.chat_tokens([{"role": "user", "content": p}])
            out = {}
            for on in (mode == "spec" for mode in _abba(2)):  # without, with, with, without: the bench's balanced order
                res = engines[on].generate(tokens, max_tokens=max_tokens)
                runs[on].append(res.stats)
                out[on] = res.tokens
            same += out[True] == out[False]
        with_head, without = _cycle_ms(runs[True]), _cycle_ms(runs[False])
        st = runs[True]
        row = report["budgets"][str(budget)] = {
            "verify_ms_per_cycle_path_head": with_head,
            "verify_ms_per_cycle_decode_head": without,
            "ratio": with_head / without,
            "per_prompt_ratio_median": statistics.median(
                _cycle_ms([a]) / _cycle_ms([b]) for a, b in zip(runs[True], runs[False])),
            "head_rows_per_cycle": sum(s.n_head_rows for s in st) / sum(s.n_cycles for s in st),
            "nodes_per_cycle": sum(s.n_drafted + s.n_cycles for s in st) / sum(s.n_cycles for s in st),
            "tau": sum(s.n_accepted + s.n_cycles for s in st) / sum(s.n_cycles for s in st),
            "same_text": f"{same}/{len(prompts)}",
        }
        print(f"budget {budget:3d}: {with_head:7.1f} ms per cycle with the path head, {without:7.1f} without "
              f"({with_head / without:.3f}x); head rows {row['head_rows_per_cycle']:.2f} of "
              f"{row['nodes_per_cycle']:.2f} nodes per cycle; same text {row['same_text']}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=models.DEFAULT_TARGET, help="target: registry name or GGUF path")
    ap.add_argument("-md", "--drafter", default=None, help="falcon-sar drafter GGUF (default: the shipped one)")
    ap.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16], help="fixed tree budgets, root included")
    ap.add_argument("--n-prompts", type=int, default=2, help="prompts per set (MT-Bench, HumanEval, GSM8K)")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-o", "--output", default="bench/results", help="directory for the JSON report")
    args = ap.parse_args(argv)
    report = measure(args.model, args.drafter, args.budgets, args.n_prompts, args.max_tokens, args.threads)
    path = _write_json(report, args.output, f"path-head-{Path(args.model).stem}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
