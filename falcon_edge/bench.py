"""Speculative vs plain decoding, side by side in one process: tokens/s, speedup, τ, acceptance.

``falcon-edge bench`` runs this suite (``--suite speculative``, the default) or the peers suite
(``--suite peers``: every other decoding method on the same target, :mod:`falcon_edge.peers`, which also rebuilds
the generated section of docs/benchmarks.md, :mod:`falcon_edge.bench_report`).

Both modes run on the same engine (``speculative=False`` is the identical loop without drafting), greedy by default,
on the same prompts; each prompt runs ``repeats`` times in each mode, alternating plain, speculative, speculative,
plain, ... so that a machine whose speed drifts (shared hosts, clock changes) slows both modes alike. Speed counts
decoding only (the prefill is excluded, and the later runs of a prompt reuse its cached prefix). Ratios are the claim;
absolute tokens/s are context. Every run keeps its text and tokens. Greedy runs of a prompt produce the same tokens
up to genuine ties: CPU kernels round a batch of tree nodes differently from one token, so two near-equal logits
can swap places; where a speculative run leaves the plain one, the report gives the position and the logit gap
there (near 0 for a tie, large for a wrong acceptance). At a temperature above 0 the two modes sample the same
distribution but not the same text (repeat r of both modes uses seed ``seed + r``), so their speeds compare texts that
differ.
"""

from __future__ import annotations

import datetime
import json
import statistics
import subprocess
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__, bench_report, drafters, host, models, peers
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


def provenance() -> dict:
    """Where and when a benchmark report was measured: the CPU, the checkout's commit and the UTC time."""
    return {"machine": host.cpu_name(), "commit": _commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run(target: str, drafter: str, datasets: list[str], n_prompts: int, max_tokens: int, *, n_threads: int | None = None,
        tree_budget: int = 0, tree: str | None = None, repeats: int = 2, first_prompt: int = 0,
        temperature: float = 0.0, seed: int = 0, progress: bool = True) -> dict:
    """Runs the comparison and returns the report (see :func:`format_table`); ``tree`` names a preset shape.

    ``drafter``: ``"auto"`` (the drafter shipped for the target, else ``"ngram"``), ``"ngram"`` or a drafter GGUF.

    ``n_prompts`` prompts of each set from its ``first_prompt`` (0-based, file order).

    ``repeats`` runs of each prompt per mode, in the order plain, spec, spec, plain, plain, spec, ...

    ``temperature`` 0 decodes greedily; above 0 the runs sample (top-k 40, top-p 0.95, min-p 0.05, the chat
    defaults), repeat r of each mode with seed ``seed + r``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if temperature < 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if drafter == "auto":
        shipped = drafters.shipped_drafter_for_file(models.resolve_model(target))
        drafter = str(shipped) if shipped is not None else "ngram"
    prompts_of = {name: load_prompts(name, n_prompts, first=first_prompt) for name in datasets}
    llm = EdgeFalcon(target, drafter=drafter, n_threads=n_threads, tree_budget=tree_budget, n_ctx=4096, tree=tree)
    report = {
        "target": str(target), "drafter": str(drafter), "max_tokens": max_tokens, "n_threads": n_threads, "repeats": repeats,
        "first_prompt": first_prompt, "tree_budget": tree_budget, "tree": tree or "dynamic",
        "temperature": temperature, "seed": seed,
        "verify_cost": list(llm._native_engine().verify_cost()),
        "path_head": llm.path_head_active, "head_cost": list(llm._native_engine().head_cost()),
        **provenance(), "version": __version__, "datasets": {},
    }
    for name, prompts in prompts_of.items():
        rows = []
        for prompt in tqdm(prompts, desc=name, disable=not progress):
            tokens = llm.chat_tokens([{"role": "user", "content": prompt}])
            row = {"plain": [], "spec": []}
            for i, mode in enumerate(_abba(repeats)):
                run_seed = seed + i // 2  # _abba runs one plain and one spec per repeat
                # every run a new request, as a user's is: the prompt prefilled anew and the drafter catching up on
                # all of it (a second run would find both cached and skip the drafter's catch-up)
                llm._native_engine().reset()
                res = llm.generate(tokens, max_tokens=max_tokens, temperature=temperature, seed=run_seed,
                                   speculative=mode == "spec")
                row[mode].append(dict(res.stats.as_dict(), seed=run_seed, text=res.text, tokens=res.tokens))
            if temperature == 0.0:
                ref = row["plain"][0]["tokens"]
                row["divergences"] = [dict(d, run=i) for i, s in enumerate(row["spec"])
                                      if (d := divergence(llm, tokens, ref, s["tokens"])) is not None]
            rows.append(row)
        report["datasets"][name] = _summary(rows)
    return report


def divergence(llm: EdgeFalcon, prompt: list[int], ref: list[int], out: list[int]) -> dict | None:
    """Where greedy tokens ``out`` leave the plain run's ``ref`` after ``prompt``: None where they agree, else
    ``{"at": position, "gap": logit gap}``.

    The gap is the larger of the two chosen tokens' distances below the best logit of that position, decoded one
    token at a time (plain decoding's kernels): near 0 for a genuine tie, large for a wrong acceptance. It is None
    where one run ended (an end-of-generation token) while the other went on with the same tokens.
    """
    at = next((i for i, (a, b) in enumerate(zip(ref, out)) if a != b), None)
    if at is None:
        return None if len(ref) == len(out) else {"at": min(len(ref), len(out)), "gap": None}
    context = prompt + ref[:at]
    eng = llm._native_engine()
    eng.prefill_only(context[:-1])
    logits = np.frombuffer(eng.tree_logits([context[-1]], [-1]), dtype=np.float32)  # [n_vocab]
    return {"at": at, "gap": float(max(logits.max() - logits[ref[at]], logits.max() - logits[out[at]]))}


def _abba(repeats: int) -> list[str]:
    """plain, spec, spec, plain, plain, spec, ...: each mode ``repeats`` times, balanced in time."""
    order = []
    for r in range(repeats):
        order += ["plain", "spec"] if r % 2 == 0 else ["spec", "plain"]
    return order


def _summary(rows: list[dict]) -> dict:
    """Per-dataset figures over every run of every prompt (rows: {"plain": [stats], "spec": [stats]})."""
    # speeds are read on the prompts where every run decoded: an answer that ends on its first token (sampled from
    # the prefill's logits) has no decoding time to divide by
    timed = [r for r in rows if all(s["n_cycles"] > 0 for s in r["plain"] + r["spec"])]
    if not timed:
        raise ValueError(f"no prompt of {len(rows)} decoded past its first token in every run: no speed to compare")
    plain = [s for r in timed for s in r["plain"]]
    spec = [s for r in timed for s in r["spec"]]

    def steps(runs):
        # decode cost in plain steps by the verify-cost curve (the path head's calls included), the drafting
        # converted at each run's own pace
        return sum(s["verify_units"] * (1.0 + s["t_draft_s"] / (s["t_verify_s"] + s.get("t_head_s", 0.0)))
                   for s in runs)

    t_plain, t_spec = _decode_s(plain), _decode_s(spec)
    steps_plain, steps_spec = steps(plain), steps(spec)
    n_plain, n_spec = sum(s["n_generated"] for s in plain), sum(s["n_generated"] for s in spec)
    cycles = sum(s["n_cycles"] for s in spec)
    accepted = sum(s["n_accepted"] for s in spec)
    drafted = sum(s["n_drafted"] for s in spec)
    passes = sum(s["n_draft_passes"] for s in spec)
    per_prompt = [(sum(s["n_generated"] for s in r["spec"]) / _decode_s(r["spec"]))
                  / (sum(s["n_generated"] for s in r["plain"]) / _decode_s(r["plain"])) for r in timed]
    return {
        "n_prompts": len(rows),
        "n_prompts_timed": len(timed),
        # how far plain runs of one prompt differ from each other: the host's noise, against which "speedup" is read
        "plain_noise": _plain_noise(timed),
        "plain_tokens_per_s": n_plain / t_plain,
        "spec_tokens_per_s": n_spec / t_spec,
        "speedup": (n_spec / t_spec) / (n_plain / t_plain),
        "speedup_per_prompt": per_prompt,
        # the same ratio with the time of every run replaced by its cost in plain steps (SpecStats.verify_units):
        # what the engine's choices are worth on this device's curve, out of reach of the host's speed noise
        "modeled_speedup": (n_spec / steps_spec) / (n_plain / steps_plain) if steps_plain > 0 else 1.0,
        # what a user waits for: the speculative prefill's time over the plain one's (the same prompts, every run a
        # new request), and the speed-up with the prefill counted (tokens over prefill + decoding)
        "prefill_ratio": sum(s["t_prefill_s"] for s in spec) / sum(s["t_prefill_s"] for s in plain),
        "end_to_end_speedup": ((n_spec / sum(s["t_total_s"] for s in spec))
                               / (n_plain / sum(s["t_total_s"] for s in plain))),
        "tau": (accepted + cycles) / cycles if cycles else 1.0,
        "alpha": accepted / n_spec if n_spec else 0.0,
        "draft_acceptance": accepted / drafted if drafted else 0.0,
        "ngram_share": sum(s.get("n_accepted_ngram", 0) for s in spec) / accepted if accepted else 0.0,
        "mean_tree_nodes": statistics.mean(s["n_nodes_max"] for s in spec),
        # logits rows the path head computed per cycle (0: every node's logits came from the decode)
        "head_rows_per_cycle": sum(s.get("n_head_rows", 0) for s in spec) / cycles if cycles else 0.0,
        "draft_s_share": sum(s["t_draft_s"] for s in spec) / t_spec,
        # speculative runs the drafter took part in (the others found before their prefill that it could not pay)
        "drafter_joined": sum(s.get("drafter_joined", False) for s in spec),
        # one drafter forward pass relative to one plain target token (the drafter's own cost)
        "draft_pass_cost": (sum(s["t_draft_s"] for s in spec) / passes) / (t_plain / n_plain) if passes else 0.0,
        # prompts whose runs, plain and speculative, all produced the same tokens (greedy: all but genuine ties)
        "identical": sum(len({tuple(s["tokens"]) for s in r["plain"] + r["spec"]}) == 1 for r in rows),
        # greedy: the largest logit gap where a speculative run left the plain tokens (None: none did, or only by
        # ending); a tie has a gap near 0
        "max_divergence_gap": max((d["gap"] for r in rows for d in r.get("divergences", []) if d["gap"] is not None),
                                  default=None),
        "rows": rows,
    }


def _decode_s(runs: list[dict]) -> float:
    """Decoding time of the runs, their prefill excluded."""
    return sum(s["t_total_s"] - s["t_prefill_s"] for s in runs)


def _plain_noise(rows: list[dict]) -> float | None:
    """Pooled relative standard deviation of the plain runs' decode speed within each prompt (None under 2 runs)."""
    squares, dof = 0.0, 0
    for r in rows:
        speeds = [s["n_generated"] / _decode_s([s]) for s in r["plain"]]
        if len(speeds) > 1:
            mean = statistics.mean(speeds)
            squares += sum((v / mean - 1.0) ** 2 for v in speeds)
            dof += len(speeds) - 1
    return (squares / dof) ** 0.5 if dof else None


def format_table(report: dict) -> str:
    """A fixed-width table of the per-dataset summary."""
    decoding = "greedy" if report["temperature"] == 0 else f"temperature {report['temperature']:g} seed {report['seed']}"
    lines = [(f"target {report['target']}  drafter {report['drafter']}  tree {report.get('tree', 'dynamic')}  {decoding}  "
              f"threads {report['n_threads']}  commit {report['commit']}  {report['date']}"),
             (f"{'dataset':<10} {'plain tok/s':>11} {'spec tok/s':>10} {'speedup':>8} {'prompts min-max':>15} {'tau':>6}"
              f" {'alpha':>6} {'accept':>7} {'n-gram':>6} {'pass cost':>9} {'modeled':>8} {'prefill':>8} {'end-to-end':>10}"
              f" {'identical':>9} {'plain noise':>11}")]
    for name, d in report["datasets"].items():
        spread = f"{min(d['speedup_per_prompt']):.2f}-{max(d['speedup_per_prompt']):.2f}"
        noise = "-" if d["plain_noise"] is None else f"{100 * d['plain_noise']:.1f}%"
        same = f"{d['identical']}/{d['n_prompts']}"
        lines.append(f"{name:<10} {d['plain_tokens_per_s']:>11.2f} {d['spec_tokens_per_s']:>10.2f} {d['speedup']:>7.2f}x "
                     f"{spread:>15} {d['tau']:>6.2f} {d['alpha']:>6.2f} {d['draft_acceptance']:>7.2f} {d['ngram_share']:>6.2f}"
                     f" {d['draft_pass_cost']:>9.3f} {d['modeled_speedup']:>7.2f}x {d['prefill_ratio']:>7.2f}x"
                     f" {d['end_to_end_speedup']:>9.2f}x {same:>9} {noise:>11}")
        for i, r in enumerate(d["rows"]):
            for dv in r.get("divergences", []):
                gap = "an end of generation" if dv["gap"] is None else f"a top-2 logit gap of {dv['gap']:.3f}"
                lines.append(f"  {name} prompt {report.get('first_prompt', 0) + i}: speculative run {dv['run']} leaves "
                             f"the plain tokens at {dv['at']}, {gap}")
    return "\n".join(lines)


def add_cli(subparsers) -> None:
    """Registers ``falcon-edge bench``."""
    p = subparsers.add_parser("bench", help="speculative vs plain decoding, or every peer method (--suite peers), "
                                            "on MT-Bench / HumanEval / GSM8K prompts")
    p.add_argument("--suite", choices=("speculative", "peers"), default="speculative",
                   help="speculative: our drafter vs our plain loop; peers: llama-cpp-python and llama.cpp methods too")
    p.add_argument("-m", "--model", default=models.DEFAULT_TARGET, help="target: registry name or GGUF path")
    p.add_argument("-md", "--drafter", default="auto",
                   help="'auto' (default): the drafter shipped for the target (a registry name or a file named after "
                        "one); without one the speculative suite drafts with 'ngram' and the peers suite skips the "
                        "falcon method. Else a falcon-sar drafter GGUF, 'ngram' (speculative suite) or 'none' (peers)")
    p.add_argument("--dataset", action="append", choices=list(DATASETS), help="repeatable; default: all three")
    p.add_argument("--n-prompts", type=int, default=5, help="prompts per dataset")
    p.add_argument("--first-prompt", type=int, default=0,
                   help="0-based index of each set's first prompt (e.g. 40: prompts no tuning looked at)")
    p.add_argument("-n", "--max-tokens", type=int, default=128, help="tokens generated per prompt")
    p.add_argument("--repeats", type=int, default=2,
                   help="speculative suite: runs of each prompt per mode, alternating plain/spec/spec/plain (default 2)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="speculative suite: 0 (default) decodes greedily; above 0 both modes sample (top-k 40, "
                        "top-p 0.95, min-p 0.05)")
    p.add_argument("--seed", type=int, default=0,
                   help="speculative suite, temperature > 0: repeat r of each mode samples with seed SEED + r")
    p.add_argument("--tree-budget", type=int, default=0,
                   help="speculative suite: fixed nodes per tree (0: sized from the cost curve)")
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
                           falcon_drafter=_none(args.drafter),
                           draft_model=_none(args.draft_model), n_ctx=args.ctx_size, commit=_commit(),
                           first_prompt=args.first_prompt)
        path = _write_json(report, args.output, "peers")
        print(peers.format_table(report))
        print(f"wrote {path}")
        plots = bench_report.regenerate(Path(args.output), Path(args.report), Path(args.img_dir))
        print(f"rebuilt the peers section of {args.report} and {len(plots)} plots in {args.img_dir}")
        return 0
    report = run(args.model, args.drafter, datasets, args.n_prompts, args.max_tokens,
                 n_threads=args.threads, tree_budget=args.tree_budget, tree=args.tree, repeats=args.repeats,
                 first_prompt=args.first_prompt, temperature=args.temperature, seed=args.seed)
    path = _write_json(report, args.output, "bench")
    print(format_table(report))
    print(f"wrote {path}")
    return 0
