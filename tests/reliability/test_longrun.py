"""A shorter scripts/longrun.py in the default suite: many generations in one process, memory bounded, caches exact.

The same schedule as the script (chat and completions, streaming and not, greedy and sampled, speculative and
plain, every tenth request a stream closed after a few chunks), on the tiny target with a Falcon drafter: 200
generations take seconds. Resident memory after warm-up may grow by at most RSS_GROWTH_MIB (generous: the
allocator's high-water marks move; a leak of one KV-sized buffer or of every request's logits would exceed it),
and the greedy probe must equal a fresh engine's output at every check. The 1,000-generation run on
SmolLM2-135M with the shipped drafter is `make longrun` (docs/reliability.md).
"""

from __future__ import annotations

import longrun

from falcon_edge import EdgeFalcon

N_GENERATIONS = 200
WARMUP = 40
RSS_GROWTH_MIB = 24.0


def test_many_generations_keep_memory_flat_and_caches_exact(small_target, small_drafters):
    def engine() -> EdgeFalcon:
        return EdgeFalcon(small_target, drafter=small_drafters["lstm-f32.gguf"], n_ctx=1024, n_batch=64, n_threads=1,
                          tree_budget=6)

    prompts = ["the quick brown fox jumps", "abc abc abc abc", "once upon a time", "zebra crossing", "x y z " * 20]
    with engine() as fresh:
        reference = longrun.probe(fresh)
    with engine() as llm:
        result = longrun.run(llm, reference, prompts, N_GENERATIONS, warmup=WARMUP, check_every=50,
                             max_tokens=(2, 8, 32, 64))
    summary = result["summary"]
    assert result["requests"]["stream-cancelled"] == N_GENERATIONS // longrun.CANCEL_EVERY
    assert [c["equal"] for c in result["checks"]] == [True] * 4
    assert summary["growth_after_warmup_mib"] < RSS_GROWTH_MIB, summary
    assert max(result["rss_mib"][WARMUP:]) - summary["rss_after_warmup_mib"] < RSS_GROWTH_MIB, summary
