"""Long run: many generations in one process, resident memory sampled after each, KV caches spot-checked.

One EdgeFalcon (SmolLM2-135M-Instruct with the shipped Falcon drafter by default, a fixed tree budget so that the
drafter runs every cycle) serves a deterministic schedule of requests: prompts from MT-Bench, HumanEval and GSM8K,
chat and raw completions (prompts cut to 300 characters), max_tokens from 1 to 16, greedy and sampled, speculative and plain, streaming and not;
every CANCEL_EVERY-th request is a stream that the consumer closes after a few chunks (the stream/cancel API). After
every generation the process's resident set size is recorded. Every CHECK_EVERY generations a greedy probe is run and
compared token for token with the probe's output from a fresh engine computed before the run: the target's and the
drafter's KV caches, reused across requests by prefix, must still give exactly the fresh result.

    cd /tmp && python /path/to/scripts/longrun.py --n 1000 --out bench/results/longrun.json

The JSON holds the configuration, the RSS curve (MiB after each generation), the spot checks and a summary: RSS
after warm-up, at the end, its maximum, and the least-squares slope after warm-up in MiB per 1,000 generations.
tests/reliability/test_longrun.py runs the same loop, shorter, in the default suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import llama_cpp  # noqa: F401  (before falcon_edge: one libllama per process)

from falcon_edge import EdgeFalcon, models
from falcon_edge.datasets import load_prompts

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DRAFTER = REPO / "models" / "falcon-smollm2-135m-instruct.gguf"
CANCEL_EVERY = 10   # every 10th request is a stream closed after CANCEL_AFTER_CHUNKS chunks
CANCEL_AFTER_CHUNKS = 3
PROBE = [{"role": "user", "content": "List three prime numbers and explain why each one is prime."}]
PROBE_COMPLETION = "def is_prime(n):\n"
PROBE_TOKENS = 48


def rss_mib() -> float:
    """Resident set size of this process in MiB (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def probe(llm: EdgeFalcon) -> dict:
    """Greedy, speculative outputs of the probe: a chat answer (text) and a raw completion (token ids)."""
    chat = llm.chat(PROBE, temperature=0, max_tokens=PROBE_TOKENS)["choices"][0]["message"]["content"]
    completion = llm.generate(PROBE_COMPLETION, temperature=0, max_tokens=PROBE_TOKENS).tokens
    return {"chat": chat, "completion": completion}


def open_engine(target: str, drafter: str | None, tree_budget: int, n_threads: int) -> EdgeFalcon:
    return EdgeFalcon(target, drafter=drafter, n_ctx=2048, n_threads=n_threads, tree_budget=tree_budget)


def one_request(llm: EdgeFalcon, i: int, prompts: list[str], rng: random.Random, lengths: tuple[int, ...]) -> str:
    """Request number i of the schedule; returns what happened ("chat", "stream-cancelled", ...)."""
    prompt = prompts[i % len(prompts)]
    max_tokens = rng.choice(lengths)
    sampling = {"temperature": 0} if rng.random() < 0.6 else {"temperature": 0.8, "seed": i}
    speculative = rng.random() < 0.85
    if i % CANCEL_EVERY == CANCEL_EVERY - 1:
        stream = llm.generate_stream(prompt, max_tokens=max(lengths), speculative=speculative, **sampling)
        for n_chunks, _ in enumerate(stream, 1):
            if n_chunks == CANCEL_AFTER_CHUNKS:
                break
        stream.close()
        return "stream-cancelled"
    kind = rng.choice(["chat", "generate", "chat-stream"])
    if kind == "chat":
        llm.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens, speculative=speculative, **sampling)
    elif kind == "generate":
        llm.generate(prompt, max_tokens=max_tokens, speculative=speculative, **sampling)
    else:
        for _ in llm.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens, stream=True,
                          speculative=speculative, **sampling):
            pass
    return kind


def slope_per_1000(values: list[float]) -> float:
    """Least-squares slope of values against their index, per 1,000 steps."""
    n = len(values)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in range(n))
    return 1000 * sum((x - mx) * (y - my) for x, y in enumerate(values)) / sxx


def summarize(rss: list[float], checks: list[dict], kinds: dict, warmup: int, seconds: float) -> dict:
    """The result of a (possibly partial) run: RSS curve, spot checks and summary."""
    after = rss[warmup:] or rss
    return {
        "n_generations": len(rss),
        "requests": dict(kinds),
        "rss_mib": list(rss),
        "checks": list(checks),
        "summary": {
            "warmup": warmup,
            "rss_after_warmup_mib": after[0],
            "rss_end_mib": rss[-1],
            "rss_max_mib": max(rss),
            "growth_after_warmup_mib": round(rss[-1] - after[0], 2),
            "slope_after_warmup_mib_per_1000": round(slope_per_1000(after), 2),
            "all_checks_equal": all(c["equal"] for c in checks),
            "seconds": round(seconds, 1),
        },
    }


def run(llm: EdgeFalcon, reference: dict, prompts: list[str], n: int, *, warmup: int, check_every: int,
        max_tokens: tuple[int, ...] = (1, 2, 4, 8, 16), seed: int = 0, on_check=None) -> dict:
    """Runs n requests on llm; returns summarize() of the run. on_check(partial result) is called after each check."""
    rng = random.Random(seed)
    rss, checks, kinds = [], [], {}
    t0 = time.perf_counter()
    for i in range(n):
        kind = one_request(llm, i, prompts, rng, max_tokens)
        kinds[kind] = kinds.get(kind, 0) + 1
        rss.append(round(rss_mib(), 2))
        if (i + 1) % check_every == 0 or i + 1 == n:
            checks.append({"after": i + 1, "equal": probe(llm) == reference})
            if on_check:
                on_check(summarize(rss, checks, kinds, warmup, time.perf_counter() - t0))
    return summarize(rss, checks, kinds, warmup, time.perf_counter() - t0)


def mixed_prompts(max_chars: int) -> list[str]:
    """50 prompts across MT-Bench, HumanEval and GSM8K, each cut to max_chars characters."""
    prompts = load_prompts("mt-bench", 20) + load_prompts("humaneval", 10) + load_prompts("gsm8k", 20)
    return [p[:max_chars] for p in prompts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="generations (default 1000)")
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--drafter", default=str(DEFAULT_DRAFTER), help="falcon-sar GGUF, 'ngram' or 'none'")
    parser.add_argument("--tree-budget", type=int, default=4, help="fixed tree budget: the drafter runs every cycle")
    parser.add_argument("--threads", type=int, default=1, help="1: on shared cores ggml's spinning thread pool loses")
    parser.add_argument("--warmup", type=int, default=100, help="generations before the RSS baseline")
    parser.add_argument("--check-every", type=int, default=50)
    parser.add_argument("--prompt-chars", type=int, default=300, help="prompts are cut to this many characters")
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                        help="max_tokens drawn per request (a cancelled stream asks for the largest)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "longrun.json")
    args = parser.parse_args(argv)
    drafter = None if args.drafter == "none" else args.drafter
    target = str(models.resolve_model(args.target, progress=False))

    config = {"target": args.target, "drafter": drafter, "tree_budget": args.tree_budget, "threads": args.threads,
              "max_tokens": args.max_tokens, "prompt_chars": args.prompt_chars, "cancel_every": CANCEL_EVERY, "probe_tokens": PROBE_TOKENS}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict) -> None:
        args.out.write_text(json.dumps({"config": config, **result}, indent=1) + "\n")
        s = result["summary"]
        print(f"{result['n_generations']}/{args.n}: rss {s['rss_end_mib']:.1f} MiB (after warm-up "
              f"{s['rss_after_warmup_mib']:.1f}), checks {'equal' if s['all_checks_equal'] else 'DIFFER'}, "
              f"{s['seconds']:.0f} s", file=sys.stderr, flush=True)

    with open_engine(target, drafter, args.tree_budget, args.threads) as fresh:
        reference = probe(fresh)
    llm = open_engine(target, drafter, args.tree_budget, args.threads)
    result = run(llm, reference, mixed_prompts(args.prompt_chars), args.n, warmup=args.warmup, check_every=args.check_every,
                 max_tokens=tuple(args.max_tokens), on_check=save)
    save(result)
    print(json.dumps(result["summary"], indent=1))
    return 0 if result["summary"]["all_checks_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
