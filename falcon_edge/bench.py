"""Speculative vs plain decoding, side by side in one process: tokens/s, speedup, τ, acceptance.

``falcon-edge bench`` runs this suite (``--suite speculative``, the default) or the peers suite
(``--suite peers``: every other decoding method on the same target, :mod:`falcon_edge.peers`, which also rebuilds
the generated section of docs/benchmarks.md, :mod:`falcon_edge.bench_report`).

Both modes run on the same engine (``speculative=False`` is the identical loop without drafting), greedy, on the
same prompts; each prompt runs plain first, then speculative. Speed counts decoding only (the prefill is excluded,
and the second run of a prompt reuses its cached prefix). Ratios are the claim; absolute tokens/s are context.
"""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import subprocess
from pathlib import Path

from tqdm import tqdm

from . import __version__, bench_report, models, peers
from .datasets import DATASETS, load_prompts
from .engine import EdgeFalcon


def _commit() -> str:
    """The checkout's short commit, with ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def run(target: str, drafter: str, datasets: list[str], n_prompts: int, max_tokens: int, *, n_threads: int | None = None,
        tree_budget: int = 0, tree: str | None = None, progress: bool = True) -> dict:
    """Runs the comparison and returns the report (see :func:`format_table`); ``tree`` names a preset shape."""
    llm = EdgeFalcon(target, drafter=drafter, n_threads=n_threads, tree_budget=tree_budget, n_ctx=4096, tree=tree)
    report = {
        "target": str(target), "drafter": str(drafter), "max_tokens": max_tokens, "n_threads": n_threads,
        "tree_budget": tree_budget, "tree": tree or "dynamic", "verify_cost": list(llm._native_engine().verify_cost()),
        "machine": platform.processor() or platform.machine(), "commit": _commit(), "version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "datasets": {},
    }
    for name in datasets:
        prompts = load_prompts(name, n_prompts)
        rows = []
        for prompt in tqdm(prompts, desc=name, disable=not progress):
            messages = [{"role": "user", "content": prompt}]
            plain = llm.chat(messages, max_tokens=max_tokens, temperature=0.0, speculative=False)["falcon"]
            spec = llm.chat(messages, max_tokens=max_tokens, temperature=0.0)["falcon"]
            rows.append({"plain": plain, "spec": spec})
        t_plain = sum(r["plain"]["t_total_s"] - r["plain"]["t_prefill_s"] for r in rows)
        t_spec = sum(r["spec"]["t_total_s"] - r["spec"]["t_prefill_s"] for r in rows)
        n_plain = sum(r["plain"]["n_generated"] for r in rows)
        n_spec = sum(r["spec"]["n_generated"] for r in rows)
        cycles = sum(r["spec"]["n_cycles"] for r in rows)
        accepted = sum(r["spec"]["n_accepted"] for r in rows)
        drafted = sum(r["spec"]["n_drafted"] for r in rows)
        passes = sum(r["spec"]["n_draft_passes"] for r in rows)
        report["datasets"][name] = {
            "n_prompts": len(rows),
            "plain_tokens_per_s": n_plain / t_plain,
            "spec_tokens_per_s": n_spec / t_spec,
            "speedup": (n_spec / t_spec) / (n_plain / t_plain),
            "tau": (accepted + cycles) / cycles if cycles else 1.0,
            "alpha": accepted / n_spec if n_spec else 0.0,
            "draft_acceptance": accepted / drafted if drafted else 0.0,
            "mean_tree_nodes": statistics.mean(r["spec"]["n_nodes_max"] for r in rows),
            "draft_s_share": sum(r["spec"]["t_draft_s"] for r in rows) / t_spec,
            # one drafter forward pass relative to one plain target token (the drafter's own cost)
            "draft_pass_cost": (sum(r["spec"]["t_draft_s"] for r in rows) / passes) / (t_plain / n_plain) if passes else 0.0,
            "rows": rows,
        }
    return report


def format_table(report: dict) -> str:
    """A fixed-width table of the per-dataset summary."""
    lines = [(f"target {report['target']}  drafter {report['drafter']}  tree {report.get('tree', 'dynamic')}  threads {report['n_threads']}  "
             f"commit {report['commit']}  {report['date']}"),
             (f"{'dataset':<10} {'plain tok/s':>11} {'spec tok/s':>10} {'speedup':>8} {'tau':>6} {'alpha':>6} {'accept':>7}"
             f" {'pass cost':>9}")]
    for name, d in report["datasets"].items():
        lines.append(f"{name:<10} {d['plain_tokens_per_s']:>11.2f} {d['spec_tokens_per_s']:>10.2f} {d['speedup']:>7.2f}x "
                     f"{d['tau']:>6.2f} {d['alpha']:>6.2f} {d['draft_acceptance']:>7.2f} {d['draft_pass_cost']:>9.3f}")
    return "\n".join(lines)


def add_cli(subparsers) -> None:
    """Registers ``falcon-edge bench``."""
    p = subparsers.add_parser("bench", help="speculative vs plain decoding, or every peer method (--suite peers), "
                                            "on MT-Bench / HumanEval / GSM8K prompts")
    p.add_argument("--suite", choices=("speculative", "peers"), default="speculative",
                   help="speculative: our drafter vs our plain loop; peers: llama-cpp-python and llama.cpp methods too")
    p.add_argument("-m", "--model", default=models.DEFAULT_TARGET, help="target: registry name or GGUF path")
    p.add_argument("-md", "--drafter", default=None,
                   help="speculative suite: 'ngram' (default) or a falcon-sar drafter GGUF; peers suite: the drafter "
                        "of the falcon method ('auto', the default: models/falcon-<target>.gguf; 'none')")
    p.add_argument("--dataset", action="append", choices=list(DATASETS), help="repeatable; default: all three")
    p.add_argument("--n-prompts", type=int, default=5, help="prompts per dataset")
    p.add_argument("-n", "--max-tokens", type=int, default=128, help="tokens generated per prompt")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--tree-budget", type=int, default=0, help="fixed nodes per tree (0: sized from the cost curve)")
    p.add_argument("--tree", default=None,
                   help="speculative suite: a fixed tree preset for the Falcon drafter, e.g. falcon-168 (the paper's tree)")
    p.add_argument("-o", "--output", default="bench/results", help="directory for the JSON report")
    p.add_argument("--methods", default=",".join(peers.DEFAULT_METHODS),
                   help=f"peers suite: comma-separated methods of {', '.join(peers.METHODS)}")
    p.add_argument("--draft-model", default="auto",
                   help="peers suite: small LM drafting for spec-draft-simple ('auto': qwen2.5-coder-0.5b-instruct "
                        "for Qwen2.5-Coder targets; 'none'; or a GGUF path)")
    p.add_argument("-c", "--ctx-size", type=int, default=2048, help="peers suite: context length of every method")
    p.add_argument("--report", default="docs/benchmarks.md",
                   help="peers suite: document whose generated section is rebuilt from the JSON in --output")
    p.add_argument("--img-dir", default="docs/img", help="peers suite: where the plots go")
    p.set_defaults(func=_cli_bench)


def _write_json(report: dict, out_dir: str, prefix: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"{prefix}-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    return path


def _none(value: str) -> str | None:
    return None if value == "none" else value


def _cli_bench(args) -> int:
    datasets = args.dataset or list(DATASETS)
    if args.suite == "peers":
        report = peers.run(args.model, datasets, args.n_prompts, args.max_tokens, n_threads=args.threads,
                           methods=[m for m in args.methods.split(",") if m],
                           falcon_drafter=_none(args.drafter or "auto"),
                           draft_model=_none(args.draft_model), n_ctx=args.ctx_size, commit=_commit())
        path = _write_json(report, args.output, "peers")
        print(peers.format_table(report))
        print(f"wrote {path}")
        plots = bench_report.regenerate(Path(args.output), Path(args.report), Path(args.img_dir))
        print(f"rebuilt the peers section of {args.report} and {len(plots)} plots in {args.img_dir}")
        return 0
    report = run(args.model, args.drafter or "ngram", datasets, args.n_prompts, args.max_tokens,
                 n_threads=args.threads, tree_budget=args.tree_budget, tree=args.tree)
    path = _write_json(report, args.output, "bench")
    print(format_table(report))
    print(f"wrote {path}")
    return 0
