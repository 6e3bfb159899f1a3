"""Feature extraction through llama.cpp: LM head × feature = the target's logits; shards; resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest

from falcon_edge import EdgeFalcon
from falcon_edge.train import data, features
from falcon_edge.train.features import FeatureStoreError

PROMPTS = ["The quick brown fox jumps over the lazy dog.", "Once upon a time there was a tiny model",
           "one two three four five six", "hello world, hello again", "a b c d e f g h i j k",
           "numbers 1 2 3 4 5 6 7 8 9", "What is the capital of France?"]


@pytest.fixture(scope="module")
def llm(tiny_path):
    return EdgeFalcon(tiny_path, n_ctx=512)


def _encoded(llm, n=None):
    convs = [{"source": "t", "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": p[::-1]}]}
             for p in PROMPTS[: n or len(PROMPTS)]]
    return data.encode_all(convs, llm)


@pytest.mark.parametrize("n_batch", [512, 16])
def test_lm_head_times_feature_is_the_targets_logits(tiny_path, tiny_target, n_batch):
    # features skip the LM head on the CPU (the graph stops at the final norm), here across prompt chunks too
    eng = EdgeFalcon(tiny_path, n_ctx=512, n_batch=n_batch)._native_engine()
    seq = list(eng.tokenize(" ".join(PROMPTS), True, False))
    assert len(seq) > 3 * 16
    f = np.frombuffer(eng.features(seq), dtype=np.float32).reshape(len(seq), eng.n_embd)  # [n, H]
    mine = f @ tiny_target.lm_head.T  # [n, V]
    for m in range(5, len(seq), 12):
        eng.prefill_only(seq[:m])
        chain = seq[m : m + 12]
        logits = np.frombuffer(eng.tree_logits(chain, [-1] + list(range(len(chain) - 1))), dtype=np.float32)
        logits = logits.reshape(len(chain), eng.n_vocab)  # row u: logits after seq[: m + u + 1]
        np.testing.assert_allclose(mine[m : m + 12], logits, atol=2e-3, rtol=1e-3)


def test_feature_argmax_is_the_greedy_continuation(llm, tiny_target):
    eng = llm._native_engine()
    prompt = list(eng.tokenize(PROMPTS[2], True, False))
    res = llm.generate(prompt, max_tokens=12, temperature=0)
    seq = prompt + list(res.tokens)
    f = np.frombuffer(eng.features(seq), dtype=np.float32).reshape(len(seq), eng.n_embd)
    greedy = (f @ tiny_target.lm_head.T).argmax(-1)  # [n]
    assert list(greedy[len(prompt) - 1 : -1]) == list(res.tokens)


def test_extract_stores_and_loads(llm, tmp_path):
    enc = _encoded(llm)
    index = features.extract(llm, enc, tmp_path / "f", shard_size=3, meta={"note": "x"}, progress=False)
    assert features.is_complete(index) and index["n_shards"] == 3 and index["meta"]["note"] == "x"
    seqs = features.load_sequences(tmp_path / "f")
    assert len(seqs) == len(enc)
    eng = llm._native_engine()
    for e, s in zip(enc, seqs):
        assert np.array_equal(s.tokens, e.tokens) and np.array_equal(s.loss_mask, e.loss_mask)
        assert s.feat.dtype == np.float16 and s.feat.shape == (len(e.tokens), eng.n_embd)
        ref = np.frombuffer(eng.features([int(t) for t in e.tokens]), dtype=np.float32).reshape(len(e.tokens), -1)
        np.testing.assert_allclose(s.feat.astype(np.float32), ref, rtol=1e-2, atol=1e-2)
    assert not list((tmp_path / "f").glob("*.tmp*"))


def test_interrupted_extraction_resumes_to_the_same_result(llm, tmp_path):
    enc = _encoded(llm)
    features.extract(llm, enc, tmp_path / "full", shard_size=2, progress=False)
    part = features.extract(llm, enc, tmp_path / "resumed", shard_size=2, progress=False, stop_after_shards=2)
    assert not features.is_complete(part)
    with pytest.raises(FeatureStoreError, match="unfinished"):
        features.load_sequences(tmp_path / "resumed")
    # a crash mid-shard leaves a temporary file: it is ignored and overwritten
    (tmp_path / "resumed" / "shard_00002.npz.tmp.npz").write_bytes(b"partial")
    done = features.extract(llm, enc, tmp_path / "resumed", shard_size=2, progress=False)
    assert features.is_complete(done)
    for name in ("shard_00000.npz", "shard_00001.npz", "shard_00002.npz", "shard_00003.npz"):
        a, b = np.load(tmp_path / "full" / name), np.load(tmp_path / "resumed" / name)
        for key in ("feat", "tokens", "loss_mask", "offsets"):
            assert np.array_equal(a[key], b[key]), (name, key)


def test_resume_against_other_inputs_is_refused(llm, tmp_path):
    enc = _encoded(llm)
    features.extract(llm, enc[:4], tmp_path / "f", shard_size=2, progress=False, stop_after_shards=1)
    with pytest.raises(FeatureStoreError, match="other inputs") as err:
        features.extract(llm, enc, tmp_path / "f", shard_size=2, progress=False)
    index = features.read_index(tmp_path / "f")
    assert f"fingerprint {index['fingerprint'][:12]} in the index, {features.fingerprint(enc)[:12]} asked" in str(err.value)
    assert "n_embd" not in str(err.value) and "shard size" not in str(err.value), "only what differs is named"
    with pytest.raises(FeatureStoreError, match="shard size 2 in the index, 3 asked"):
        features.extract(llm, enc[:4], tmp_path / "f", shard_size=3, progress=False)


def test_missing_or_foreign_index(tmp_path, llm):
    with pytest.raises(FeatureStoreError, match="not a feature directory"):
        features.read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(FeatureStoreError, match="unknown feature format"):
        features.read_index(tmp_path)
    enc = _encoded(llm, 2)
    features.extract(llm, enc, tmp_path / "g", shard_size=1, progress=False)
    (tmp_path / "g" / "shard_00001.npz").unlink()
    with pytest.raises(FeatureStoreError, match="missing"):
        features.load_sequences(tmp_path / "g")
