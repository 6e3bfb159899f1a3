"""Falcon decoding end to end: greedy output is token-identical to plain decoding for any drafter.

Random-weight drafters (losslessness holds for any drafter) for block sizes k = 1, 2, 3, several tree shapes and
budgets, on 54 prompts across MT-Bench, HumanEval and GSM8K, on an F32 target where tree and sequential decoding
agree bit for bit. Also: the drafter's KV cache stays in step with the target across many cycles and across
requests that share a prefix.
"""

from __future__ import annotations

import pytest
from helpers.tiny_drafter import checkpoint_of, make_tiny_drafter

from falcon_edge import EdgeFalcon, trees
from falcon_edge.config import SpecConfig
from falcon_edge.convert import run as write_drafter
from falcon_edge.datasets import load_prompts
from falcon_edge.train.target_weights import read_target_meta

MAX_TOKENS = 40


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return load_prompts("mt-bench", 18) + load_prompts("humaneval", 18) + load_prompts("gsm8k", 18)


@pytest.fixture(scope="module")
def plain(tiny_path, prompts):
    llm = EdgeFalcon(tiny_path, n_ctx=1024, n_threads=2)
    return {p: llm.generate(p, max_tokens=MAX_TOKENS).tokens for p in prompts}


def _drafter(tiny_target, tmp_path_factory, k: int, fusion: str, seed: int):
    meta = read_target_meta(tiny_target.path)
    model = make_tiny_drafter(tiny_target, meta, seed=seed, block_size=k, fusion=fusion, n_layer=1)
    out = tmp_path_factory.mktemp("dft") / f"tiny-k{k}-{fusion}.gguf"
    return write_drafter(checkpoint_of(model), tiny_target.path, out, outtype="f32", progress=False)


@pytest.mark.parametrize(
    "k, fusion, budget, top_k_draft, n_passes",
    [
        (1, "lstm", 4, 2, 3),     # k = 1: an autoregressive chain/tree, one token per pass
        (2, "lstm", 6, 2, 2),     # the paper's k = 2 with one expansion
        (2, "linear", 12, 3, 3),  # EAGLE-1 fusion, wider and deeper tree
        (3, "lstm", 9, 2, 2),     # k = 3 blocks
        (2, "lstm", 0, 4, 2),     # tree size chosen by the cost model
    ],
)
def test_greedy_falcon_matches_plain(tiny_target, tmp_path_factory, prompts, plain, k, fusion, budget, top_k_draft, n_passes):
    path = _drafter(tiny_target, tmp_path_factory, k, fusion, seed=k)
    llm = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=1024, n_threads=2, tree_budget=budget,
                     spec=SpecConfig(top_k_draft=top_k_draft, n_passes=n_passes))
    assert llm.mode == "falcon"
    drafted = 0
    for p in prompts:
        res = llm.generate(p, max_tokens=MAX_TOKENS)
        assert res.tokens == plain[p], f"k={k} {fusion} budget={budget}: prompt {p[:50]!r}"
        drafted += res.stats.n_drafted
        assert res.stats.n_draft_passes >= (res.stats.n_cycles if budget else 0)
    if budget:
        assert drafted > 0


@pytest.mark.parametrize("preset", ["falcon-77", "falcon-168"])
def test_greedy_falcon_with_the_papers_tree_matches_plain(tiny_target, tmp_path_factory, prompts, plain, preset):
    path = _drafter(tiny_target, tmp_path_factory, 2, "lstm", seed=11)
    llm = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=1024, n_threads=2, tree=preset)
    shape = trees.load(preset)
    for p in prompts[::3]:
        res = llm.generate(p, max_tokens=MAX_TOKENS)
        assert res.tokens == plain[p], f"{preset}: prompt {p[:50]!r}"
        # the whole preset is drafted every cycle: one context pass + one pass per further k-block
        assert res.stats.n_nodes_max == shape.n_nodes + 1
        assert res.stats.n_draft_passes == res.stats.n_cycles * shape.depth // 2


def test_a_tree_beyond_the_curve_is_priced_in_proportion_to_its_last_point(tiny_target, tmp_path_factory, prompts):
    # SpecStats.verify_units of the paper's 168-token tree under a curve of 8 sizes: c(8) * 168 / 8 per cycle (a decode
    # that large is bound by its arithmetic), not one plain step per node
    path = _drafter(tiny_target, tmp_path_factory, 2, "lstm", seed=11)
    curve = [1.0 + 0.25 * i for i in range(8)]
    llm = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=1024, n_threads=2, tree="falcon-168", verify_cost=curve,
                     path_head=False)
    res = llm.generate(prompts[0], max_tokens=MAX_TOKENS)
    n_nodes = trees.load("falcon-168").n_nodes + 1
    assert res.stats.n_nodes_max == n_nodes
    assert res.stats.verify_units == pytest.approx(res.stats.n_cycles * curve[-1] * n_nodes / len(curve))


def test_drafter_state_follows_prefix_reuse(tiny_target, tmp_path_factory, plain, prompts):
    path = _drafter(tiny_target, tmp_path_factory, 2, "lstm", seed=7)
    llm = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=1024, n_threads=2, tree_budget=6)
    base = prompts[0]
    first = llm.generate(base, max_tokens=MAX_TOKENS)
    # a follow-up that shares the first prompt as a prefix reuses the KV cache of target and drafter
    follow = base + " And once more, briefly."
    reused = llm.generate(follow, max_tokens=MAX_TOKENS)
    assert reused.stats.n_prefill < reused.stats.n_prompt
    fresh = EdgeFalcon(tiny_target.path, n_ctx=1024, n_threads=2).generate(follow, max_tokens=MAX_TOKENS)
    assert first.tokens == plain[base]
    assert reused.tokens == fresh.tokens


def test_long_generation_keeps_drafter_in_step(tiny_target, tmp_path_factory):
    path = _drafter(tiny_target, tmp_path_factory, 2, "lstm", seed=3)
    spec = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=1024, n_threads=2, tree_budget=5)
    plain_llm = EdgeFalcon(tiny_target.path, n_ctx=1024, n_threads=2)
    prompt = "The"  # the tiny target runs 400 tokens without an end-of-generation token here
    a = spec.generate(prompt, max_tokens=400)
    b = plain_llm.generate(prompt, max_tokens=400)
    assert a.stats.n_cycles > 100
    assert a.tokens == b.tokens


def test_a_plain_request_leaves_the_drafter_in_step(tiny_target, tmp_path_factory, prompts):
    # A plain request shortens the drafter to the prefix it shares with the cache, less the last shared token, whose
    # pair holds the old next token. So a Falcon request after it resumes exactly where one without it would.
    path = _drafter(tiny_target, tmp_path_factory, 2, "lstm", seed=13)
    base = prompts[0]
    changed = base + " And once more, briefly."
    follow = changed + " Then stop."

    def last_of(requests):
        llm = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=1024, n_threads=2, tree_budget=6,
                         spec=SpecConfig(ngram_branches=0))
        return [llm.generate(p, max_tokens=MAX_TOKENS, speculative=s) for p, s in requests][-1]

    after_plain = last_of([(base, True), (changed, False), (follow, True)])
    direct = last_of([(base, True), (follow, True)])
    assert after_plain.stats.n_prefill == direct.stats.n_prefill
    assert (after_plain.stats.n_drafted, after_plain.stats.n_accepted) == (direct.stats.n_drafted, direct.stats.n_accepted)
    assert after_plain.tokens == direct.tokens


def test_a_prompt_shorter_than_a_block_drafts_once_it_has_one(tiny_target, tmp_path_factory):
    # k = 2: the context pass drafts from the last two committed pairs; a one-token prompt gives one pair
    path = _drafter(tiny_target, tmp_path_factory, 2, "lstm", seed=5)
    llm = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=1024, n_threads=2, tree_budget=6,
                     spec=SpecConfig(ngram_branches=0))
    plain_llm = EdgeFalcon(tiny_target.path, n_ctx=1024, n_threads=2)
    prompt = [7]
    first_cycle = llm.generate(prompt, max_tokens=2)
    assert first_cycle.stats.n_draft_passes == 0
    longer = llm.generate(prompt, max_tokens=MAX_TOKENS)
    assert longer.stats.n_draft_passes > 0
    assert longer.tokens == plain_llm.generate(prompt, max_tokens=MAX_TOKENS).tokens


def test_a_budget_beyond_the_sequences_is_cut_to_them(tiny_target, tmp_path_factory, prompts, plain):
    # 8 candidates per position: one k = 2 block alone has 64 leaves, one per sequence of the context. The prune keeps
    # the leaves within the sequences; nodes below a leaf add none, so the tree still grows past 65 nodes.
    path = _drafter(tiny_target, tmp_path_factory, 2, "lstm", seed=17)
    llm = EdgeFalcon(tiny_target.path, drafter=path, n_ctx=1024, n_threads=2, tree_budget=200,
                     spec=SpecConfig(top_k_draft=8, n_passes=2))
    res = llm.generate(prompts[0], max_tokens=MAX_TOKENS)
    assert res.tokens == plain[prompts[0]]
    assert res.stats.n_nodes_max > llm.context.n_seq_max + 1
