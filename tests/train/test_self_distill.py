"""Self-distillation: parallel greedy answers equal one-at-a-time greedy decoding, with the right features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from falcon_edge import EdgeFalcon
from falcon_edge.train import features, self_distill

PROMPTS = ["The quick brown fox", "Once upon a time there was a tiny model", "one two three", "hello world",
           "a b c d e f g h i j k", "numbers 1 2 3 4 5 6 7 8 9", "What is the capital of France?"]


@pytest.fixture(scope="module")
def llm(tiny_path):
    return EdgeFalcon(tiny_path, n_ctx=512)


def _convs(n=None):
    return [{"source": "t", "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": None}]}
            for p in PROMPTS[: n or len(PROMPTS)]]


def _prompt_tokens(llm, conv):
    """The prompt as chat() decodes it: the drafter is trained on what it will be served."""
    return llm.chat_tokens(conv["messages"][:-1])


@pytest.mark.parametrize("n_parallel", [1, 3, 8])
def test_parallel_answers_equal_sequential_greedy(llm, n_parallel):
    eng = llm._native_engine()
    prompts = [_prompt_tokens(llm, c) for c in _convs()]
    out = eng.self_distill(prompts, 12, n_parallel)
    assert len(out) == len(prompts)
    for p, (tokens, n_prompt, finished, raw) in zip(prompts, out):
        assert n_prompt == len(p) and list(tokens[:n_prompt]) == p
        answer = list(tokens[n_prompt:])
        ref = llm.generate(p, max_tokens=12, temperature=0, speculative=False)
        # the reference excludes an end-of-generation token; self_distill keeps it (it is a training target)
        assert [t for t in answer if not eng.is_eog(t)] == ref.tokens
        assert finished == (len(answer) > 0 and eng.is_eog(answer[-1]))
        feat = np.frombuffer(raw, dtype=np.float32).reshape(len(tokens), eng.n_embd)  # [n, H]
        want = np.frombuffer(eng.features(list(tokens)), dtype=np.float32).reshape(len(tokens), eng.n_embd)
        # one batch vs token by token over an F16 KV cache: equal up to its rounding
        np.testing.assert_allclose(feat, want, rtol=1e-2, atol=1e-2)


def test_bad_arguments_are_refused(llm):
    eng = llm._native_engine()
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        eng.self_distill([[1, 2], []], 4, 2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        eng.self_distill([[1, eng.n_vocab + 5]], 4, 2)
    with pytest.raises(ValueError, match="max_tokens >= 1"):
        eng.self_distill([[1, 2]], 0, 2)
    assert eng.self_distill([], 4, 2) == []
    # the engine stays usable
    assert llm.generate("hello", max_tokens=3, temperature=0).tokens


def test_distill_writes_a_feature_directory(llm, tmp_path):
    index = self_distill.distill(llm, _convs(), tmp_path / "sd", max_tokens=10, n_parallel=4, shard_size=3, progress=False)
    assert features.is_complete(index) and index["n_shards"] == 3 and index["meta"]["self_distilled"]
    seqs = features.load_sequences(tmp_path / "sd")
    assert len(seqs) == len(PROMPTS)
    eng = llm._native_engine()
    for conv, s in zip(_convs(), seqs):
        n_prompt = len(_prompt_tokens(llm, conv))
        assert list(s.tokens[:n_prompt]) == _prompt_tokens(llm, conv)
        assert not s.loss_mask[:n_prompt].any() and s.loss_mask[n_prompt:].all() and len(s.tokens) > n_prompt
        assert s.feat.dtype == np.float16 and s.feat.shape == (len(s.tokens), eng.n_embd)
    answers = [json.loads(line) for line in (tmp_path / "sd" / self_distill.ANSWERS).read_text().split("\n") if line]
    assert len(answers) == len(PROMPTS) and all(a["regenerated"] and a["messages"][-1]["content"] is not None for a in answers)
    mix = index["meta"]["mix"]["t"]
    assert mix["records"] == mix["regenerated"] == len(PROMPTS)
    assert mix["tokens"] == sum(len(s.tokens) for s in seqs) and mix["assistant_tokens"] == sum(int(s.loss_mask.sum()) for s in seqs)
    # a second call resumes: nothing left to do, same index
    again = self_distill.distill(llm, _convs(), tmp_path / "sd", max_tokens=10, n_parallel=4, shard_size=3, progress=False)
    assert again["shards"] == index["shards"]


@pytest.mark.parametrize("shard_size", [1, len(PROMPTS)])
def test_time_budget_stops_at_the_next_answer_and_keeps_it(llm, tmp_path, shard_size):
    # the budget is spent before the first answer completes: the run stops there, whether that answer completes
    # a shard or is the first of a shard that holds every prompt (written as a shard of one)
    index = self_distill.distill(llm, _convs(), tmp_path / "sd", max_tokens=6, n_parallel=2, shard_size=shard_size,
                                 time_budget_s=0.0, progress=False)
    assert index["stopped_early"] and index["n_shards"] == 1 and features.is_complete(index)
    assert len(features.load_sequences(tmp_path / "sd")) == 1
    assert len((tmp_path / "sd" / self_distill.ANSWERS).read_text().split("\n")) == 2  # one line and the final newline


def test_prompts_over_the_limit_are_skipped_and_none_left_is_an_error(llm, tmp_path):
    with pytest.raises(ValueError, match="no prompt fits max_prompt_tokens=2"):
        self_distill.distill(llm, _convs(), tmp_path / "sd", max_prompt_tokens=2, progress=False)


def test_prepare_writes_both_feature_sets_with_their_mix_and_template(llm, tmp_path):
    from falcon_edge.datasets import data_dir
    from falcon_edge.train import prepare

    shared = data_dir()
    if not (shared / "gsm8k" / "train.jsonl").is_file():
        pytest.skip(f"no shared data at {shared}")
    dirs = prepare.prepare(llm, tmp_path, data_dir=shared, token_budget=400, self_distill_seconds=0.5,
                           self_distill_prompts=20, self_distill_max_tokens=4, n_parallel=2, max_len=128, progress=False)
    assert [d.name for d in dirs] == [prepare.FIXED_DIR, prepare.SELF_DISTILLED_DIR]
    template = "fallback: plain completion 'role: content'" if llm.template.is_fallback else "chat template"
    assert [features.read_index(d)["meta"]["template"] for d in dirs] == [template, template]
    mix = json.loads((tmp_path / "mix.json").read_text())
    answers = (dirs[1] / self_distill.ANSWERS).read_text(encoding="utf-8").split("\n")
    answered = [json.loads(line)["source"] for line in answers if line]
    assert answered and all(mix[s]["regenerated"] == answered.count(s) for s in set(answered))
    assert sum(len(s.tokens) for s in features.load_sequences(dirs[1])) > 0
