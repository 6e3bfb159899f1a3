"""Tree verification in one llama_decode equals sequential decoding, node for node (flash attention off).

Exactness is checked on an F32 target: quantized CPU kernels change their accumulation order with the batch size,
so on Q4/Q8 models tree and sequential logits differ in the last bits (docs/architecture.md)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from falcon_edge import _native
from falcon_edge.config import ContextConfig

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(tiny_path):
    return _native.Engine(str(tiny_path), ContextConfig(n_ctx=512, n_batch=64).to_native())


def _random_tree(rng: random.Random, n_nodes: int, n_vocab: int) -> tuple[list[int], list[int]]:
    tokens = [rng.randrange(3, n_vocab)]
    parents = [-1]
    for i in range(1, n_nodes):
        parents.append(rng.randrange(0, i))
        tokens.append(rng.randrange(3, n_vocab))
    return tokens, parents


def _logits(engine, tokens, parents) -> np.ndarray:
    raw = engine.tree_logits(tokens, parents)
    return np.frombuffer(raw, dtype=np.float32).reshape(len(tokens), engine.n_vocab)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tree_logits_equal_sequential_paths(engine, seed):
    rng = random.Random(seed)
    prefix = engine.tokenize("The quick brown fox jumps over the lazy dog. Once upon a time", True, False)
    tokens, parents = _random_tree(rng, 12, engine.n_vocab)
    engine.prefill_only(prefix)
    tree = _logits(engine, tokens, parents)
    for node in range(len(tokens)):
        path = []
        u = node
        while u >= 0:
            path.append(tokens[u])
            u = parents[u]
        path.reverse()
        engine.prefill_only(prefix + path[:-1])
        seq = _logits(engine, [path[-1]], [-1])[0]
        np.testing.assert_allclose(tree[node], seq, rtol=0, atol=1e-4, err_msg=f"node {node} (depth {len(path) - 1})")
        assert int(np.argmax(tree[node])) == int(np.argmax(seq))


def test_bad_tree_is_refused(engine):
    engine.prefill_only([1, 2, 3])
    with pytest.raises(ValueError, match="parent of node 1"):
        engine.tree_logits([5, 6], [-1, 3])
    with pytest.raises(ValueError, match="root first"):
        engine.tree_logits([5, 6], [0, -1])
    with pytest.raises(ValueError, match="n_batch 64, got 65 nodes"):
        engine.tree_logits([5] * 65, [-1] + list(range(64)))
    assert _logits(engine, [5], [-1]).shape == (1, engine.n_vocab)
