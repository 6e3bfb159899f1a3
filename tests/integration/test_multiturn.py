"""Multi-turn chat keeps the shared prefix in the KV cache: turn 2 evaluates only its new tokens."""

from __future__ import annotations

import pytest

from falcon_edge import EdgeFalcon

pytestmark = pytest.mark.model


def test_second_turn_prefills_only_new_tokens(smollm_path):
    llm = EdgeFalcon(smollm_path, drafter="ngram", n_ctx=2048, n_threads=2)
    history = [{"role": "user", "content": "Name three prime numbers."}]
    first = llm.chat(history, max_tokens=24, temperature=0)
    history += [first["choices"][0]["message"], {"role": "user", "content": "And their sum?"}]
    second = llm.chat(history, max_tokens=24, temperature=0)
    st = second["falcon"]
    n_turn1 = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    n_new = st["n_prompt"] - n_turn1
    assert st["n_prompt"] == second["usage"]["prompt_tokens"]
    # the new user turn and its template tokens, plus at most a few re-evaluated boundary tokens
    assert n_new > 0 and st["n_prefill"] <= n_new + 4, (st["n_prefill"], n_new)
