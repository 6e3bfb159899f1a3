"""Greedy speculative decoding is token-identical to plain greedy decoding and to llama-cpp-python.

Run on an F32 target, where batched and sequential decoding agree bit for bit; quantized targets need a
tie-tolerant comparison (near-equal top-2 logits may flip between batch sizes)."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest

from falcon_edge import EdgeFalcon

pytestmark = pytest.mark.model

MAX_TOKENS = 48
N_BATCH = 256


def _llama_cpp_python_greedy(llm: llama_cpp.Llama, tokens: list[int], n: int) -> list[int]:
    out = []
    for tok in llm.generate(tokens, temp=0.0, top_k=1, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok) or len(out) >= n:
            break
        out.append(tok)
    return out


def _check_model(path, prompts):
    plain = EdgeFalcon(path, drafter=None, n_ctx=2048, n_batch=N_BATCH, n_threads=2)
    spec = EdgeFalcon(path, drafter="ngram", n_ctx=2048, n_batch=N_BATCH, n_threads=2, tree_budget=6)
    ref = llama_cpp.Llama(str(path), n_ctx=2048, n_batch=N_BATCH, n_ubatch=N_BATCH, n_threads=2, flash_attn=False,
                          verbose=False)
    n_drafted = 0
    for prompt in prompts:
        tokens = plain.chat_tokens([{"role": "user", "content": prompt}])
        a = plain.generate(tokens, max_tokens=MAX_TOKENS)
        b = spec.generate(tokens, max_tokens=MAX_TOKENS)
        c = _llama_cpp_python_greedy(ref, tokens, MAX_TOKENS)
        assert b.tokens == a.tokens, f"speculative != plain for prompt {prompt[:60]!r}"
        assert a.tokens == c, f"plain != llama-cpp-python for prompt {prompt[:60]!r}"
        assert b.text == a.text
        n_drafted += b.stats.n_drafted
        assert b.stats.n_cycles + b.stats.n_accepted + 1 >= len(b.tokens)
    # trees must actually have been verified (otherwise this test proves nothing)
    assert n_drafted > 0


def test_lossless_tiny_f32(tiny_path, mixed_prompts):
    _check_model(tiny_path, mixed_prompts)


def test_fixed_tree_budgets_are_lossless(tiny_path, mixed_prompts):
    plain = EdgeFalcon(tiny_path, n_ctx=2048, n_threads=2)
    reference = [plain.generate(p, max_tokens=32).tokens for p in mixed_prompts[:6]]
    for budget in (2, 4, 9):
        spec = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=2048, n_threads=2, tree_budget=budget)
        for p, ref in zip(mixed_prompts[:6], reference):
            res = spec.generate(p, max_tokens=32)
            assert res.tokens == ref, f"budget {budget}"
            assert res.stats.n_nodes_max <= budget


def test_kv_cache_matches_fresh_prefill_after_many_cycles(tiny_path, mixed_prompts):
    spec = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=2048, n_threads=2, tree_budget=6)
    res = spec.generate(mixed_prompts[0] + " Repeat the answer twice.", max_tokens=160)
    assert res.stats.n_cycles > 20
    eng = spec._native_engine()
    cached = list(eng.cached_tokens())
    probe = res.tokens[-1]
    after_cycles = np.frombuffer(eng.tree_logits([probe], [-1]), dtype=np.float32)
    eng.prefill_only(cached)
    fresh = np.frombuffer(eng.tree_logits([probe], [-1]), dtype=np.float32)
    np.testing.assert_allclose(after_cycles, fresh, rtol=0, atol=1e-4)
