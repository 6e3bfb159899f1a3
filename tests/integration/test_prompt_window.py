"""The drafter's window over a prompt: the target computes features only for the positions the drafter reads.

On the F32 tiny target (tree and sequential decoding agree bit for bit) with a random k = 2 drafter given a 32-pair
window: a ~240-token prompt costs the features of its last 32 + k positions (llama.cpp computes an output row for
every token of a decode with features on, so the prompt's 16-token chunks before the one holding the window go
without), a drafter left behind the target's cache rejoins by evaluating those positions again (not the whole
prompt), and a new prompt that shares only part of the last one reuses the target's cache while the drafter,
truncated into pairs that never had features, starts its context after them. Every generation stays
token-identical to plain decoding.
"""

from __future__ import annotations

import pytest
from helpers.prefix import common_prefix
from helpers.tiny_drafter import checkpoint_of, make_tiny_drafter

from falcon_edge import EdgeFalcon
from falcon_edge.config import SpecConfig
from falcon_edge.convert import run as write_drafter
from falcon_edge.datasets import load_prompts
from falcon_edge.train.target_weights import read_target_meta

WINDOW, K = 32, 2
MAX_TOKENS = 24
N_BATCH = 16  # prompt chunk: a decode with features on outputs every token of its chunk


@pytest.fixture(scope="module")
def drafter_path(tiny_target, tmp_path_factory):
    model = make_tiny_drafter(tiny_target, read_target_meta(tiny_target.path), seed=11, block_size=K, n_layer=1)
    out = tmp_path_factory.mktemp("window") / "tiny-k2.gguf"
    return write_drafter(checkpoint_of(model), tiny_target.path, out, outtype="f32", progress=False)


@pytest.fixture()
def llm(tiny_target, drafter_path):
    # a fixed budget: the drafter joins every request, whatever the cost model would say
    llm = EdgeFalcon(tiny_target.path, drafter=drafter_path, n_ctx=2048, n_threads=2, tree_budget=6, n_batch=N_BATCH,
                     spec=SpecConfig(ngram_branches=0))
    llm._native_engine().load_drafter(str(drafter_path), 2, WINDOW)
    return llm


@pytest.fixture(scope="module")
def plain(tiny_target):
    return EdgeFalcon(tiny_target.path, drafter=None, n_ctx=2048, n_threads=2, n_batch=N_BATCH)


@pytest.fixture(scope="module")
def prompt(tiny_target) -> list[int]:
    plain = EdgeFalcon(tiny_target.path, drafter=None, n_ctx=2048, n_threads=2)
    tokens = plain.tokenize(load_prompts("gsm8k", 1)[0])
    assert len(tokens) > 200
    return tokens


def _same_as_plain(llm, plain, tokens):
    out = llm.generate(tokens, max_tokens=MAX_TOKENS)
    assert out.tokens == plain.generate(tokens, max_tokens=MAX_TOKENS).tokens
    assert out.stats.drafter_joined and out.stats.n_draft_passes > 0
    return out


def _feature_rows(n_prefilled: int, n_prompt: int) -> int:
    """Tokens decoded with features on, for a prompt whose last n_prefilled tokens were evaluated: from the start of
    the chunk (chunks counted from the first evaluated token) that holds the first position the drafter reads (its
    window in whole blocks plus the last block) to the end."""
    n_keep = n_prompt - n_prefilled
    n_read = n_prompt - (WINDOW + K)
    return n_prompt - (n_keep + (n_read - n_keep) // N_BATCH * N_BATCH)


def _cached(llm, tokens: list[int]) -> int:
    """The prompt positions the target's cache holds for `tokens` (the last one is always evaluated)."""
    return min(common_prefix(llm._native_engine().cached_tokens(), tokens), len(tokens) - 1)


def test_a_long_prompt_costs_the_features_of_the_window_only(llm, plain, prompt):
    st = _same_as_plain(llm, plain, prompt).stats
    assert st.n_prefill == len(prompt) and WINDOW + K <= st.n_prompt_features < WINDOW + K + N_BATCH
    assert st.n_prompt_features == _feature_rows(st.n_prefill, len(prompt))


def test_a_drafter_left_behind_rejoins_over_the_window(llm, plain, prompt):
    llm.generate(prompt, max_tokens=MAX_TOKENS, speculative=False)
    st = _same_as_plain(llm, plain, prompt).stats
    # the target drops and evaluates again only the cached positions whose features the drafter reads
    assert st.n_prefill == st.n_prompt_features == WINDOW + K


def test_a_prompt_sharing_part_of_the_last_one_keeps_the_cache(llm, plain, prompt):
    _same_as_plain(llm, plain, prompt)
    # the shared tokens lie before the last request's window: the drafter kept no pair it could read
    other = prompt[:100] + plain.tokenize(load_prompts("gsm8k", 2)[1], add_special=False)
    n_cached = _cached(llm, other)
    assert n_cached == 100 and len(other) > n_cached + WINDOW + K
    out = _same_as_plain(llm, plain, other)
    assert out.stats.n_prefill == len(other) - n_cached
    assert out.stats.n_prompt_features == _feature_rows(out.stats.n_prefill, len(other)) < out.stats.n_prefill
    # a follow-up turn: the drafter kept its window's pairs, so only the new tokens and the last cached one (paired
    # with a new next token) are evaluated, each with its feature
    turn = other + out.tokens + plain.tokenize(" Why?", add_special=False)
    n_cached = _cached(llm, turn)
    st = _same_as_plain(llm, plain, turn).stats
    assert st.n_prefill == st.n_prompt_features == len(turn) - n_cached + 1
