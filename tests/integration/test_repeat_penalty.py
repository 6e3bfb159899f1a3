"""The repeat penalty is applied as llama.cpp applies it: over the last 64 tokens of prompt and answer, the answer's
first token included, in plain and in speculative decoding.

The reference is llama.cpp's own sampler chain (penalties, then greedy) fed every prompt token and every sampled
token, on the F32 tiny target, where tree and sequential decoding agree bit for bit. A penalty of 50 makes every
repeat within the window lose, so any token the engine leaves out of its history changes the text.
"""

from __future__ import annotations

import llama_cpp
import pytest

from falcon_edge import EdgeFalcon

PENALTY = 50.0
LAST_N = 64  # SamplingConfig.repeat_last_n's default
MAX_TOKENS = 16


def _llama_cpp_greedy(ref: llama_cpp.Llama, prompt: list[int], n: int) -> list[int]:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    try:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_penalties(ref.n_vocab(), LAST_N, PENALTY,
                                                                                         0.0, 0.0))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        for tok in prompt:
            llama_cpp.llama_sampler_accept(chain, tok)
        ref.reset()
        ref.eval(prompt)
        out = []
        for _ in range(n):
            tok = llama_cpp.llama_sampler_sample(chain, ref.ctx, -1)  # also accepts tok into the penalty's window
            out.append(tok)
            ref.eval([tok])
        return out
    finally:
        llama_cpp.llama_sampler_free(chain)


@pytest.mark.parametrize("prompt", [[5, 17, 42, 99, 7, 13], [200, 100, 50, 25], [7]])
def test_repeat_penalty_matches_llama_cpp(tiny_path, prompt):
    ref = llama_cpp.Llama(str(tiny_path), n_ctx=256, n_threads=1, verbose=False)
    expected = _llama_cpp_greedy(ref, prompt, MAX_TOKENS)
    plain = EdgeFalcon(tiny_path, n_ctx=256, n_threads=1)
    spec = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=256, n_threads=1, tree_budget=4)
    assert plain.generate(prompt, max_tokens=MAX_TOKENS, repeat_penalty=PENALTY, speculative=False).tokens == expected
    assert spec.generate(prompt, max_tokens=MAX_TOKENS, repeat_penalty=PENALTY).tokens == expected
