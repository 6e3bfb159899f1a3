"""Hybrid trees: n-gram branches merged into the drafter's tree, node values calibrated online, the drafter gated.

On the F32 tiny target (tree and sequential decoding agree bit for bit) with a random drafter: the merged trees
stay lossless, both proposers contribute, and the per-key acceptance statistics learn which n-gram matches pay under
a steep verify-cost curve (the one measured for Qwen2.5-Coder-1.5B Q4_K_M on a 2-core AVX2 CPU). A random target
loops under greedy decoding, which gives the n-gram lookup long matches to learn from.
"""

from __future__ import annotations

import json

import pytest
from helpers.prefix import common_prefix
from helpers.tiny_drafter import checkpoint_of, make_tiny_drafter

from falcon_edge import EdgeFalcon, cost_curve
from falcon_edge import gguf_schema as gs
from falcon_edge.config import SpecConfig
from falcon_edge.convert import run as write_drafter
from falcon_edge.datasets import load_prompts
from falcon_edge.train.target_weights import read_target_meta

STEEP = [1.0, 1.5, 2.0, 2.1, 2.4, 2.7, 3.3, 5.4, 5.7, 5.8, 6.2, 7.6, 7.9, 6.9, 7.8, 7.2]
CHEAP = [1.0] * 16
# each node costs 0.76 of a step: 16 sure nodes for 12.4 steps, 1.29x, just over the ceiling's floor (1.25x)
LINEAR = [1.0 + 0.76 * n for n in range(16)]
MAX_TOKENS = 96


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    return load_prompts("mt-bench", 4) + load_prompts("humaneval", 4)


@pytest.fixture(scope="module")
def drafter_path(tiny_target, tmp_path_factory):
    model = make_tiny_drafter(tiny_target, read_target_meta(tiny_target.path), seed=7, block_size=2, n_layer=1)
    out = tmp_path_factory.mktemp("hybrid") / "tiny-k2.gguf"
    return write_drafter(checkpoint_of(model), tiny_target.path, out, outtype="f32", progress=False)


def _run_all(llm, prompts):
    """Greedy speculative generations, each checked token for token against plain decoding on the same engine."""
    stats = []
    for p in prompts:
        plain = llm.generate(p, max_tokens=MAX_TOKENS, speculative=False)
        spec = llm.generate(p, max_tokens=MAX_TOKENS)
        assert spec.tokens == plain.tokens, f"prompt {p[:50]!r}"
        stats.append(spec.stats)
    return stats


def test_ngram_branches_merge_into_drafter_trees(tiny_path, drafter_path, prompts):
    llm = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=1024, n_threads=2, verify_cost=CHEAP)
    stats = _run_all(llm, prompts)
    drafted, drafted_ngram = sum(s.n_drafted for s in stats), sum(s.n_drafted_ngram for s in stats)
    assert 0 < drafted_ngram < drafted  # both proposers offered nodes (a random drafter's are rarely accepted)
    assert sum(s.n_accepted_ngram for s in stats) > 0


def test_ngram_branches_zero_drafts_with_the_drafter_alone(tiny_path, drafter_path, prompts):
    llm = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=1024, n_threads=2, verify_cost=CHEAP,
                     spec=SpecConfig(ngram_branches=0))
    stats = _run_all(llm, prompts)
    assert sum(s.n_drafted for s in stats) > 0 and sum(s.n_drafted_ngram for s in stats) == 0


def test_automatic_trees_grow_to_the_curves_length(tiny_path, drafter_path, prompts):
    # a GPU's curve spans 64 sizes (cost_curve.N_MAX_GPU): the automatic budget follows the curve, not the CPU's 16
    llm = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=1024, n_threads=2, verify_cost=[1.0] * 32)
    largest = max(s.n_nodes_max for s in _run_all(llm, prompts[:2]))
    assert cost_curve.N_MAX_CPU < largest <= 32


def test_calibrated_ngram_trees_pay_under_a_steep_curve(tiny_path, prompts):
    # only matches whose continuations verification keeps accepting are worth 1.5x a step for two nodes
    llm = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=1024, n_threads=2, verify_cost=STEEP)
    stats = _run_all(llm, prompts)
    cycles = sum(s.n_cycles for s in stats)
    tau = (sum(s.n_accepted for s in stats) + cycles) / cycles
    assert tau > 1.4
    # what is verified is mostly accepted: the learned values keep failing matches out of the trees
    assert sum(s.n_accepted for s in stats) > 0.6 * sum(s.n_drafted for s in stats)


def _rates_drafter(tiny_target, tmp_path, rate: float | None):
    """The random drafter with the held-out rate `rate` for every key in its file (None: no rates): no node it drafts
    is valued above that rate times its parent, and the ceiling reads it so."""
    model = make_tiny_drafter(tiny_target, read_target_meta(tiny_target.path), seed=7, block_size=2, n_layer=1)
    return write_drafter(checkpoint_of(model), tiny_target.path, tmp_path / f"rates-{rate}.gguf", outtype="f32",
                         accept_rates=None if rate is None else [rate] * gs.N_ACCEPT_KEYS, progress=False)


@pytest.mark.parametrize(("rates", "drafts"), [(None, False), (1.0, True), (0.0, False)])
def test_the_drafter_files_rates_value_the_first_trees(tiny_path, tiny_target, tmp_path, rates, drafts):
    # a fresh engine values drafted nodes by the file's held-out acceptance rates where it has them: rates of 1 make
    # the first trees pay under the steep curve, where the random drafter's own low probabilities (the prior without
    # rates) and rates of 0 do not; with calibration the drafter is then learned online as before
    llm = EdgeFalcon(tiny_path, drafter=_rates_drafter(tiny_target, tmp_path, rates), n_ctx=512, n_threads=2,
                     verify_cost=STEEP, spec=SpecConfig(ngram_branches=0))
    prompt = load_prompts("mt-bench", 1)[0]
    plain = llm.generate(prompt, max_tokens=6, speculative=False)
    spec = llm.generate(prompt, max_tokens=6)
    assert spec.tokens == plain.tokens
    assert (spec.stats.n_drafted > 0) == drafts


def test_drafter_that_does_not_pay_is_probed_ever_less_often(tiny_path, drafter_path):
    # a random drafter where verification is free but its own passes cost (about 2 tiny-target steps each): its
    # best case pays (the ceiling is open), its trees do not, so after the first probe it only drafts on probes
    # (4 cycles each), whose spacing doubles (16, 32, 64, ...) while they find no gain
    llm = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=2048, n_threads=2, verify_cost=CHEAP,
                     spec=SpecConfig(ngram_branches=0))
    prompt = load_prompts("gsm8k", 1)[0]
    plain = llm.generate(prompt, max_tokens=400, speculative=False)
    spec = llm.generate(prompt, max_tokens=400)
    assert spec.tokens == plain.tokens
    # probes at cycles 0, 16, 48, 112 and 240 pass the drafter once per cycle: 20 passes; probes every 16th cycle
    # would pass it ~100 times in 400 cycles
    assert 0 < spec.stats.n_draft_passes <= 30


def test_every_request_probes_the_drafter_afresh(tiny_path, drafter_path):
    # the same engine: a long request gates the random drafter off (probes every 128th cycle by its end); the next,
    # short request still drafts on its first cycles (a probe of 4), since what the drafter adds follows the text of
    # each request
    llm = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=2048, n_threads=2, verify_cost=CHEAP,
                     spec=SpecConfig(ngram_branches=0))
    long_prompt, short_prompt = load_prompts("gsm8k", 2)
    assert llm.generate(long_prompt, max_tokens=400).stats.n_draft_passes > 0
    plain = llm.generate(short_prompt, max_tokens=12, speculative=False)
    spec = llm.generate(short_prompt, max_tokens=12)
    assert spec.tokens == plain.tokens
    assert spec.stats.n_draft_passes >= 4


@pytest.mark.parametrize(("curve", "rate", "runs"), [(STEEP, 0.3, False), (CHEAP, 0.9, True)])
def test_a_drafter_whose_best_case_cannot_pay_never_runs(tiny_target, tmp_path, curve, rate, runs):
    # a fresh engine, its drafter's cost measured at load (about 2 tiny-target steps a cycle): nodes expected to be
    # worth 0.3 times their parent (the file's rate of every key) cannot pay under the steep curve even as a chain
    # (two nodes cost 1.5 steps and the drafting for 1.3 expected tokens), so not one drafter pass runs (no probe, no
    # catch-up over the prompt); where verification is free a chain of nodes worth 0.9 times their parent pays, and
    # that drafter is probed
    llm = EdgeFalcon(tiny_target.path, drafter=_rates_drafter(tiny_target, tmp_path, rate), n_ctx=2048, n_threads=2,
                     verify_cost=curve, spec=SpecConfig(ngram_branches=0))
    prompt = load_prompts("gsm8k", 1)[0]
    plain = llm.generate(prompt, max_tokens=32, speculative=False)
    spec = llm.generate(prompt, max_tokens=32)
    assert spec.tokens == plain.tokens
    assert (spec.stats.n_draft_passes > 0) == runs


def test_the_ceiling_counts_the_drafters_measured_cost(tiny_path, drafter_path):
    # LINEAR: a chain of sure nodes would clear the ceiling's floor for free (16 tokens for 12.4 steps), not once a
    # cycle's drafting costs more than 0.4 of a step (the random drafter's costs about 2 tiny-target steps). That cost
    # is measured when the drafter is loaded, so not even the first request drafts; an engine that has not measured it
    # (cost 0) drafts on the first cycles of a request of 8 tokens on an emptied cache (their features cost 0.19 of
    # a step over 16 cycles: the last layer, half a token's work on the 2-layer target), until it has, and never again
    llm = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=2048, n_threads=2, verify_cost=LINEAR,
                     spec=SpecConfig(ngram_branches=0))
    assert llm._engine.draft_cost() > 0.4
    first, second = load_prompts("gsm8k", 2)
    plain = llm.generate(first, max_tokens=64, speculative=False)
    spec = llm.generate(first, max_tokens=64)
    assert spec.tokens == plain.tokens
    assert spec.stats.n_draft_passes == 0
    llm._engine.set_draft_cost(0.0, 0.0)
    llm._engine.reset()
    assert 0 < llm.generate(llm.tokenize(first)[:8], max_tokens=64).stats.n_draft_passes <= 4
    plain = llm.generate(second, max_tokens=64, speculative=False)
    spec = llm.generate(second, max_tokens=64)
    assert spec.tokens == plain.tokens
    assert spec.stats.n_draft_passes == 0


def test_the_drafting_cost_is_measured_once_per_drafter_and_cached(tiny_path, drafter_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(tmp_path / "models"))
    cache = tmp_path / "verify-cost.json"
    measured = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=512, n_threads=2)._native_engine().draft_cost()
    (key, entry), = [(k, v) for k, v in json.loads(cache.read_text()).items() if "drafter" in v]
    assert measured > 0 and entry["cycle"] == measured and entry["pair"] > 0
    assert entry["drafter"] == str(drafter_path.resolve())
    # a cached cost is read back, not measured again
    cache.write_text(json.dumps({**json.loads(cache.read_text()), key: {**entry, "cycle": 0.25}}))
    assert EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=512, n_threads=2)._native_engine().draft_cost() == 0.25
    # other drafting settings shape another cycle: measured and cached apart
    wider = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=512, n_threads=2, spec=SpecConfig(top_k_draft=8))
    assert wider._native_engine().draft_cost() not in (0.0, 0.25)
    assert sum("drafter" in v for v in json.loads(cache.read_text()).values()) == 2
    # a fixed tree budget weighs no drafting cost: none is measured
    fixed = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=512, n_threads=2, tree_budget=8)
    assert fixed._native_engine().draft_cost() == 0.0


def test_the_drafting_cost_of_a_deleted_drafter_leaves_the_cache(tiny_target, tmp_path, monkeypatch):
    monkeypatch.setenv("FALCON_EDGE_CACHE", str(tmp_path / "models"))
    gone = _rates_drafter(tiny_target, tmp_path, None)
    EdgeFalcon(tiny_target.path, drafter=gone, n_ctx=512, n_threads=2)
    gone.unlink()
    EdgeFalcon(tiny_target.path, drafter=_rates_drafter(tiny_target, tmp_path, 0.5), n_ctx=512, n_threads=2)
    drafters = [v["drafter"] for v in json.loads((tmp_path / "verify-cost.json").read_text()).values() if "drafter" in v]
    assert drafters == [str((tmp_path / "rates-0.5.gguf").resolve())]


def test_measuring_the_drafting_cost_needs_a_drafter_and_leaves_the_engine_exact(tiny_path, drafter_path):
    ngram = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=512, n_threads=2)._native_engine()
    with pytest.raises(ValueError, match="no drafter is loaded"):
        ngram.measure_draft_cost([1, 2, 3], SpecConfig().to_native(), 16, 1)
    llm = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=512, n_threads=2, verify_cost=CHEAP)
    engine = llm._native_engine()
    with pytest.raises(ValueError, match="cannot measure drafting 16 nodes x 0 reps after 3 tokens"):
        engine.measure_draft_cost([1, 2, 3], SpecConfig().to_native(), 16, 0)
    prompt = load_prompts("gsm8k", 1)[0]
    before = llm.generate(prompt, max_tokens=48).tokens
    draft_us, step_us, pair_us = engine.measure_draft_cost(engine.tokenize(prompt, True, False), SpecConfig().to_native(),
                                                           16, 3)
    assert draft_us > 0 and step_us > 0 and pair_us > 0
    assert engine.cached_tokens() == []
    assert llm.generate(prompt, max_tokens=48).tokens == before


@pytest.mark.parametrize(("pair", "runs"), [(0.0, True), (1.0, False)])
def test_the_ceiling_counts_the_catch_up_over_a_new_prompt(tiny_target, tmp_path, pair, runs):
    # where verification is free a chain of nodes worth 0.9 times their parent pays, with a cycle's drafting free;
    # the prompt's catch-up (about 240 pairs) is paid once, over the 16 cycles before a drafter that pays is probed
    # again: free, the drafter runs; at a step a pair (15 steps a cycle), not even that chain can pay, so it never runs
    llm = EdgeFalcon(tiny_target.path, drafter=_rates_drafter(tiny_target, tmp_path, 0.9), n_ctx=2048, n_threads=2,
                     verify_cost=CHEAP, spec=SpecConfig(ngram_branches=0))
    llm._engine.set_draft_cost(0.0, pair)
    prompt = load_prompts("gsm8k", 1)[0]
    plain = llm.generate(prompt, max_tokens=32, speculative=False)
    spec = llm.generate(prompt, max_tokens=32)
    assert spec.tokens == plain.tokens and spec.stats.n_prompt > 200
    assert (spec.stats.n_draft_passes > 0) == runs


def test_the_ceiling_counts_the_features_of_a_new_prompt(tiny_target, tmp_path):
    # LINEAR: sure nodes drafted for free clear the ceiling's floor (16 tokens for 12.4 steps, 1.29x). Joining a
    # request also costs the target the last layer of the prompt's tokens, as it reads their features (half a token's
    # work on the 2-layer target, at 0.78 of a step a token), spread over 16 cycles: 0.24 of a step a cycle for a
    # 10-token prompt, which still clears it (1.27x), 5.8 for a ~240-token one, which does not, so the drafter stays
    # out of it
    llm = EdgeFalcon(tiny_target.path, drafter=_rates_drafter(tiny_target, tmp_path, 1.0), n_ctx=2048, n_threads=2,
                     verify_cost=LINEAR, spec=SpecConfig(ngram_branches=0))
    llm._engine.set_draft_cost(0.0, 0.0)
    long_prompt = llm.tokenize(load_prompts("gsm8k", 1)[0])
    assert len(long_prompt) > 200
    for prompt, joins in ((long_prompt[:10], True), (long_prompt, False)):
        llm._native_engine().reset()
        out = llm.generate(prompt, max_tokens=8)
        assert out.tokens == llm.generate(prompt, max_tokens=8, speculative=False).tokens
        assert out.stats.drafter_joined == joins, len(prompt)


@pytest.mark.parametrize(("n_features", "joins"), [(10, True), (25, False)])
def test_the_ceiling_counts_every_row_of_the_chunks_decoded_with_features(tiny_target, tmp_path, n_features, joins):
    # as above, where up to 16 feature rows still clear the floor: a drafter reading the last 8 pairs of a fresh
    # prompt (10 positions with the last block) costs the target the last layer of every token from the start of the
    # 16-token chunk holding them (llama.cpp outputs every token of a decode with features on): 10 rows where they
    # start a chunk, 25 where they start at a chunk's last token. The ceiling counts the 25, so the drafter stays out
    # of that request; with a fixed budget it joins, and the target computes those 25 rows
    drafter = _rates_drafter(tiny_target, tmp_path, 1.0)
    prompt = EdgeFalcon(tiny_target.path, drafter=None).tokenize(load_prompts("gsm8k", 1)[0])[:64 + n_features]
    for tree_budget in (0, 6):
        llm = EdgeFalcon(tiny_target.path, drafter=drafter, n_ctx=2048, n_threads=2, n_batch=16, tree_budget=tree_budget,
                         verify_cost=LINEAR, spec=SpecConfig(ngram_branches=0))
        llm._native_engine().load_drafter(str(drafter), 2, 8)
        llm._engine.set_draft_cost(0.0, 0.0)
        out = llm.generate(prompt, max_tokens=8)
        assert out.tokens == llm.generate(prompt, max_tokens=8, speculative=False).tokens
        assert out.stats.drafter_joined == (joins or tree_budget > 0)
        assert out.stats.n_prompt_features == (n_features if out.stats.drafter_joined else 0)


@pytest.mark.parametrize(("curve", "rate", "joins"), [(STEEP, 0.3, False), (CHEAP, 0.9, True)])
def test_a_request_the_drafter_cannot_pay_for_decodes_plainly_from_its_prefill(tiny_target, tmp_path, curve, rate,
                                                                              joins):
    # the ceiling is asked before the prefill: where it is closed the drafter does not join the request, so the
    # target computes no features for it, and the next turn of the conversation reuses all of the cache (the last
    # cached token included, which a drafter in step needs evaluated again to pair it with the new next token)
    llm = EdgeFalcon(tiny_target.path, drafter=_rates_drafter(tiny_target, tmp_path, rate), n_ctx=2048, n_threads=2,
                     verify_cost=curve, spec=SpecConfig(ngram_branches=0))
    plain = EdgeFalcon(tiny_target.path, drafter=None, n_ctx=2048, n_threads=2)
    first = llm.tokenize(load_prompts("gsm8k", 1)[0])
    reply = llm.generate(first, max_tokens=16)
    assert reply.tokens == plain.generate(first, max_tokens=16).tokens
    assert reply.stats.drafter_joined == joins and (reply.stats.n_draft_passes > 0) == joins
    turn = first + reply.tokens + llm.tokenize(" Then what?", add_special=False)
    n_cached = common_prefix(llm._native_engine().cached_tokens(), turn)
    nxt = llm.generate(turn, max_tokens=16)
    assert nxt.tokens == plain.generate(turn, max_tokens=16).tokens
    assert nxt.stats.drafter_joined == joins
    assert nxt.stats.n_prefill == len(turn) - n_cached + (1 if joins else 0)


@pytest.mark.parametrize(("curve", "joins"), [(CHEAP, True), ([1.0 + 0.45 * n for n in range(16)], False)])
def test_a_drafter_left_behind_joins_only_where_evaluating_the_cache_again_pays(tiny_target, tmp_path, curve, joins):
    # a plain request on a fresh engine leaves the drafter behind the target's cache. Sure nodes (rate 1) drafted for
    # free pay well under both curves (the linear one: 16 tokens for 7.75 steps); to join the next request on the same
    # prompt the drafter needs the target to evaluate the ~240 cached tokens again for their features: free under the
    # flat curve, at 0.48 of a step each under the linear one (7.2 steps a cycle over 16 cycles: 1.07x, under the
    # ceiling's floor of 1.25x), which then decodes on the cache as it is. On an emptied cache the features cost the
    # last layer of each prompt token only (half a token's work on the 2-layer target: 3.6 steps a cycle, 1.41x), and
    # the drafter joins under both
    llm = EdgeFalcon(tiny_target.path, drafter=_rates_drafter(tiny_target, tmp_path, 1.0), n_ctx=2048, n_threads=2,
                     verify_cost=curve, spec=SpecConfig(ngram_branches=0))
    llm._engine.set_draft_cost(0.0, 0.0)
    prompt = llm.tokenize(load_prompts("gsm8k", 1)[0])
    plain = llm.generate(prompt, max_tokens=16, speculative=False)
    spec = llm.generate(prompt, max_tokens=16)
    assert spec.tokens == plain.tokens and len(prompt) > 200
    assert spec.stats.drafter_joined == joins
    assert spec.stats.n_prefill == (len(prompt) if joins else 1)
    # in step with the target (a new request on an emptied cache) it joins under both
    llm._native_engine().reset()
    assert llm.generate(prompt, max_tokens=16).stats.drafter_joined


def test_drafting_costs_that_are_no_costs_are_refused(tiny_path, drafter_path):
    engine = EdgeFalcon(tiny_path, drafter=drafter_path, n_ctx=512, n_threads=2, verify_cost=CHEAP)._native_engine()
    with pytest.raises(ValueError, match="got nan a cycle and 0 a pair"):
        engine.set_draft_cost(float("nan"), 0.0)
    with pytest.raises(ValueError, match="got 0 a cycle and -1 a pair"):
        engine.set_draft_cost(0.0, -1.0)
