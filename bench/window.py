"""How much of a prompt the drafter needs: its window over a new prompt against τ, where host speed cannot reach the
result.

The drafter's context over a new prompt is its last n_window tokens (whole k-blocks) and the last block; the target
computes features for those positions only (`SpecStats.n_prompt_features`). For each window, one engine with a
fixed tree budget and drafter-only trees (no n-gram branches, no cost model) decodes the same chat-rendered prompts
greedily, each as a new request: τ (accepted + bonus per cycle) and accepted / drafted, which are deterministic for
given files, and the features each request cost.

    python bench/window.py -m ~/.cache/falcon-edge/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf --windows 256 64 32
"""

from __future__ import annotations

import argparse
import sys

from falcon_edge import EdgeFalcon, drafters, models
from falcon_edge.bench import _write_json, provenance
from falcon_edge.config import SpecConfig
from falcon_edge.datasets import DATASETS, load_prompts


def measure(target: str, drafter: str | None, windows: list[int], n_prompts: int, first: int, max_tokens: int,
            tree_budget: int, n_threads: int) -> dict:
    if min(windows) < 0:
        raise SystemExit(f"windows must be >= 0 (0: the whole prompt), got {min(windows)}")
    drafter = drafter or drafters.shipped_drafter_for_file(models.resolve_model(target))
    if drafter is None:
        raise SystemExit(f"no drafter is shipped for {target}: name one with -md")
    llm = EdgeFalcon(target, drafter=str(drafter), n_threads=n_threads, tree_budget=tree_budget, n_ctx=4096,
                     spec=SpecConfig(ngram_branches=0))
    engine = llm._native_engine()
    prompts = {name: [llm.chat_tokens([{"role": "user", "content": p}]) for p in load_prompts(name, n_prompts, first=first)]
               for name in DATASETS}
    report = {"target": str(target), "drafter": str(drafter), "tree_budget": tree_budget, "n_prompts": n_prompts,
              "first_prompt": first, "max_tokens": max_tokens, "n_threads": n_threads, **provenance(), "windows": {}}
    for window in windows:
        engine.load_drafter(str(drafter), n_threads, window)
        rows = {}
        for name, token_lists in prompts.items():
            cycles = accepted = drafted = 0
            n_prompt, n_features = [], []
            for tokens in token_lists:
                engine.reset()
                st = llm.generate(tokens, max_tokens=max_tokens).stats
                cycles, accepted, drafted = cycles + st.n_cycles, accepted + st.n_accepted, drafted + st.n_drafted
                n_prompt.append(st.n_prompt)
                n_features.append(st.n_prompt_features)
            rows[name] = {"tau": (accepted + cycles) / cycles, "accepted_per_drafted": accepted / max(drafted, 1),
                          "n_prompt": n_prompt, "n_prompt_features": n_features}
        report["windows"][str(window)] = rows
    return report


def format_table(report: dict) -> str:
    names = list(next(iter(report["windows"].values())))
    lines = [f"target {report['target']}  tree budget {report['tree_budget']}  {report['n_prompts']} prompts per set "
             f"from {report['first_prompt']}  {report['max_tokens']} tokens  commit {report['commit']}",
             f"{'window':>7} " + " ".join(f"{n + ' tau':>14} {'features':>9}" for n in names)]
    for window, rows in report["windows"].items():
        cells = [f"{rows[n]['tau']:>14.3f} {sum(rows[n]['n_prompt_features']) / sum(rows[n]['n_prompt']):>8.0%}"
                 for n in names]
        lines.append(f"{window:>7} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=models.DEFAULT_TARGET, help="target: registry name or GGUF path")
    p.add_argument("-md", "--drafter", help="falcon-sar drafter GGUF (default: the one shipped for the target)")
    p.add_argument("--windows", type=int, nargs="+", default=[256, 64, 32], help="drafter windows (0: whole prompt)")
    p.add_argument("--n-prompts", type=int, default=8, help="prompts per set")
    p.add_argument("--first-prompt", type=int, default=20, help="index of each set's first prompt")
    p.add_argument("-n", "--max-tokens", type=int, default=96)
    p.add_argument("--tree-budget", type=int, default=4)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-o", "--output", default="bench/results", help="directory of the JSON report")
    args = p.parse_args(argv)
    report = measure(args.model, args.drafter, args.windows, args.n_prompts, args.first_prompt, args.max_tokens,
                     args.tree_budget, args.threads)
    print(format_table(report))
    print(f"wrote {_write_json(report, args.output, 'window')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
