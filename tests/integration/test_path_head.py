"""The path head (native/include/falcon-edge/target-head.h): on a CPU a tree is decoded up to the final norm and the
target's LM head runs only for the rows the acceptance walk reads.

Its logits must be the decode's own, bit for bit (checked on real quantized targets and on F32/tied tiny ones); a target
whose graph changes the logits after the LM head keeps every row in the decode; greedy output stays token-identical to
plain decoding; and the rows computed follow the walk: the root and each accepted node, plus the nodes the head's
costs say are cheaper to compute in the same call.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers.tiny_drafter import checkpoint_of, make_tiny_drafter
from helpers.tiny_target import write_tiny_llama_gguf

from falcon_edge import EdgeFalcon, _native
from falcon_edge.config import ContextConfig
from falcon_edge.convert import run as write_drafter
from falcon_edge.datasets import load_prompts
from falcon_edge.train.target_weights import read_target_meta

pytestmark = pytest.mark.model


def _random_tree(seed: int, n_nodes: int, n_vocab: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    tokens, parents = [rng.randrange(3, n_vocab)], [-1]
    for i in range(1, n_nodes):
        parents.append(rng.randrange(0, i))
        tokens.append(rng.randrange(3, n_vocab))
    return tokens, parents


def _tree_logits(engine, tokens, parents, path_head: bool) -> np.ndarray:
    raw = engine.tree_logits(tokens, parents, path_head)
    return np.frombuffer(raw, dtype=np.float32).reshape(len(tokens), engine.n_vocab)


@pytest.fixture(scope="module")
def tiny_tied(tmp_path_factory):
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tied") / "tiny-tied.gguf", tied=True, seed=3).path


@pytest.mark.parametrize("target", ["tiny_path", "tiny_tied", "smollm_path", "qwen15_path"])
def test_head_gives_the_decode_logits_bit_for_bit(request, target):
    # F32 untied / tied heads, SmolLM2's tied Q8_0 embedding, Qwen2.5-1.5B's Q6_K output.weight
    path = request.getfixturevalue(target)
    engine = _native.Engine(str(path), ContextConfig(n_ctx=512, n_batch=64, n_threads=2).to_native())
    assert engine.path_head
    prefix = engine.tokenize("The quick brown fox jumps over the lazy dog. Once upon a time", True, False)
    engine.prefill_only(prefix)
    tokens, parents = _random_tree(0, 9, engine.n_vocab)
    from_head = _tree_logits(engine, tokens, parents, True)
    from_decode = _tree_logits(engine, tokens, parents, False)
    assert np.array_equal(from_head, from_decode)


def test_logits_scaled_after_the_head_keep_the_head_in_the_decode(tmp_path):
    # granite divides the logits by its logit scale after the LM head: the head alone would be wrong
    path = write_tiny_llama_gguf(tmp_path / "tiny-granite.gguf", logit_scale=8.0, seed=1).path
    llm = EdgeFalcon(path, drafter="ngram", n_ctx=256, n_threads=2, tree_budget=4)
    assert not llm.path_head_active
    engine = llm._native_engine()
    engine.prefill_only(engine.tokenize("Once upon a time", True, False))
    with pytest.raises(ValueError, match="no path head"):
        engine.tree_logits([5, 6], [-1, 0], True)
    res = llm.generate("Once upon a time", max_tokens=24)
    assert res.stats.n_head_rows == 0
    assert res.tokens == llm.generate("Once upon a time", max_tokens=24, speculative=False).tokens


def test_path_head_can_be_turned_off(tiny_path):
    assert EdgeFalcon(tiny_path, drafter="ngram", n_ctx=256, n_threads=2).path_head_active
    llm = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=256, n_threads=2, path_head=False, tree_budget=6)
    assert not llm.path_head_active
    assert llm.generate("one two one two one two one", max_tokens=24).stats.n_head_rows == 0


@pytest.fixture(scope="module")
def tiny_drafter_path(tiny_target, tmp_path_factory):
    model = make_tiny_drafter(tiny_target, read_target_meta(tiny_target.path), seed=5, block_size=2, fusion="linear",
                              n_layer=1)
    out = tmp_path_factory.mktemp("dft") / "tiny-k2.gguf"
    return write_drafter(checkpoint_of(model), tiny_target.path, out, outtype="f32", progress=False)


@pytest.mark.parametrize("head_cost, rows", [
    ((1.0, 1.0), "walk"),   # a further row costs a call: each row when the walk reaches its node
    ((1.0, 0.0), "tree"),   # further rows are free: the root's call computes the whole tree
])
def test_rows_follow_the_walk_and_the_head_cost(tiny_target, tiny_drafter_path, head_cost, rows):
    # a fixed budget drafts a tree of 8 nodes every cycle, and no one-node decode times the head: its costs stay set
    llm = EdgeFalcon(tiny_target.path, drafter=tiny_drafter_path, n_ctx=1024, n_threads=2, tree_budget=8)
    llm._native_engine().set_head_cost(*head_cost)
    assert llm._native_engine().head_cost() == head_cost
    n_rows = n_walk = n_nodes = 0
    for prompt in load_prompts("mt-bench", 3) + load_prompts("gsm8k", 3):
        st = llm.generate(prompt, max_tokens=32).stats
        n_rows += st.n_head_rows
        n_walk += st.n_cycles + st.n_accepted
        n_nodes += st.n_cycles + st.n_drafted
    assert n_nodes > 3 * n_walk  # wide trees: most nodes are never reached
    assert n_rows == (n_walk if rows == "walk" else n_nodes)


def test_greedy_output_is_the_same_with_and_without_the_path_head(tiny_target, tiny_drafter_path):
    # an F32 target, where tree and sequential decoding agree bit for bit (quantized targets agree up to genuine ties
    # either way: test_lossless_quantized.py, which runs with the path head on)
    prompts = load_prompts("mt-bench", 4) + load_prompts("humaneval", 4) + load_prompts("gsm8k", 4)
    plain = EdgeFalcon(tiny_target.path, drafter=None, n_ctx=1024, n_threads=2)
    on = EdgeFalcon(tiny_target.path, drafter=tiny_drafter_path, n_ctx=1024, n_threads=2)
    off = EdgeFalcon(tiny_target.path, drafter=tiny_drafter_path, n_ctx=1024, n_threads=2, path_head=False)
    assert on.path_head_active and not off.path_head_active
    n_rows = 0
    for p in prompts:
        want = plain.generate(p, max_tokens=40).tokens
        res = on.generate(p, max_tokens=40)
        assert res.tokens == want, p[:60]
        assert off.generate(p, max_tokens=40).tokens == want, p[:60]
        n_rows += res.stats.n_head_rows
    assert n_rows > 0
