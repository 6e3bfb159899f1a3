"""What a drafter that joins a request costs its prefill: the same prompts prefilled for plain decoding and with the
target's features for the drafter, in one process.

One engine with a fixed tree budget, so that the drafter joins every speculative request (whether it joins is the
cost model's question, answered before the prefill; this measures what joining costs). Each prompt length runs as
a new request (the cache reset) without, with, with, without, ... (`falcon-edge bench`'s balanced order), one token
generated, so that the time is the prefill and the first token's logits. With features every token of the prompt's
chunks (256 tokens) that hold the drafter's window (its last 256, or `--window`; 0: all) is an output: the last layer
runs for every such row (without features, for the last token only), each feature row of the window is copied out,
and on a CPU with the path head the last token's logits come from it. Reported per length: the median of the
speculative/plain time ratios of the repeat pairs, and the ratio of the fastest runs of each. No speed-up claim: the
end-to-end ratios of whole requests are `falcon-edge bench`'s.

    python bench/prefill.py -m ~/.cache/falcon-edge/models/qwen2.5-coder-1.5b-instruct-q8_0.gguf --lengths 64 128 256
"""

from __future__ import annotations

import argparse
import statistics
import sys

from falcon_edge import EdgeFalcon, drafters, models
from falcon_edge.bench import _abba, _write_json, provenance
from falcon_edge.datasets import DATASETS, load_prompts

N_CTX = 4096


def measure(target: str, drafter: str | None, lengths: list[int], repeats: int, n_threads: int,
            window: int | None = None) -> dict:
    if max(lengths) >= N_CTX or min(lengths) < 1:
        raise SystemExit(f"prompt lengths must be in [1, {N_CTX}), got {min(lengths)}..{max(lengths)}")
    drafter = drafter or drafters.shipped_drafter_for_file(models.resolve_model(target))
    if drafter is None:
        raise SystemExit(f"no drafter is shipped for {target}: name one with -md")
    llm = EdgeFalcon(target, drafter=str(drafter), n_threads=n_threads, tree_budget=8, n_ctx=N_CTX)
    if window is not None:
        llm._native_engine().load_drafter(str(drafter), n_threads, window)
    # one long text from every set's prompts, cut to each length
    text = "\n\n".join(p for name in DATASETS for p in load_prompts(name, 20))
    tokens = llm.tokenize(text)
    if len(tokens) < max(lengths):
        raise SystemExit(f"the prompts give {len(tokens)} tokens, fewer than the longest length {max(lengths)}")
    report = {"target": str(target), "drafter": str(drafter), "window": window, "repeats": repeats,
              "n_threads": n_threads, "path_head": llm.path_head_active, **provenance(), "lengths": {}}
    engine = llm._native_engine()
    for n in lengths:
        times = {"plain": [], "spec": []}
        n_features = 0
        for mode in _abba(repeats):
            engine.reset()
            res = llm.generate(tokens[:n], max_tokens=1, speculative=mode == "spec")
            if res.stats.drafter_joined != (mode == "spec"):
                raise SystemExit(f"a {mode} run of {n} tokens had the drafter joined={res.stats.drafter_joined}")
            times[mode].append(res.stats.t_prefill_s)
            n_features = max(n_features, res.stats.n_prompt_features)
        ratios = [s / p for p, s in zip(times["plain"], times["spec"])]
        report["lengths"][str(n)] = {
            "prefill_s_plain": times["plain"], "prefill_s_spec": times["spec"], "n_prompt_features": n_features,
            "median_ratio": statistics.median(ratios), "fastest_ratio": min(times["spec"]) / min(times["plain"]),
        }
    return report


def format_table(report: dict) -> str:
    lines = [f"target {report['target']}  path head {report['path_head']}  threads {report['n_threads']}  "
             f"{report['repeats']} runs per mode  commit {report['commit']}",
             f"{'tokens':>7} {'features':>8} {'plain s':>8} {'spec s':>8} {'median ratio':>12} {'fastest ratio':>13}"]
    for n, r in report["lengths"].items():
        lines.append(f"{n:>7} {r['n_prompt_features']:>8} {statistics.median(r['prefill_s_plain']):>8.3f}"
                     f" {statistics.median(r['prefill_s_spec']):>8.3f} {r['median_ratio']:>11.3f}x {r['fastest_ratio']:>12.3f}x")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", default=models.DEFAULT_TARGET, help="target: registry name or GGUF path")
    p.add_argument("-md", "--drafter", help="falcon-sar drafter GGUF (default: the one shipped for the target)")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512], help="prompt lengths in tokens")
    p.add_argument("--repeats", type=int, default=6, help="runs per mode and length")
    p.add_argument("--window", type=int,
                   help="the drafter's window over the prompt in tokens (0: all of it; default: the drafter's own, 256)")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-o", "--output", default="bench/results", help="directory of the JSON report")
    args = p.parse_args(argv)
    report = measure(args.model, args.drafter, args.lengths, args.repeats, args.threads, args.window)
    print(format_table(report))
    print(f"wrote {_write_json(report, args.output, 'prefill')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
