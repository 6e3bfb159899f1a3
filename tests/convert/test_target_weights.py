"""The tiny target fixture loads in libllama, and target_weights reads back exactly what it wrote."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest

from falcon_edge import gguf_schema
from falcon_edge.train.target_weights import load_target_embeddings, read_target_meta
from helpers.tiny_target import MIN_VOCAB, write_tiny_llama_gguf


def greedy_logits(path, tokens: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, n_threads=1, logits_all=True, verbose=False)
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)])  # [T, V]
    llm.close()
    return logits


def test_tiny_target_loads_and_evaluates_in_libllama(tiny_target):
    llm = llama_cpp.Llama(model_path=tiny_target.path, n_ctx=64, n_threads=1, verbose=False)
    assert llm.n_vocab() == 320 and llm.n_embd() == 64
    tokens = llm.tokenize("héllo, wörld 42\n".encode())  # every byte is in the vocabulary
    assert tokens[0] == llm.token_bos() and all(0 <= t < 320 for t in tokens)
    assert llm.detokenize(tokens[1:]).decode() == " héllo, wörld 42\n"  # sentencepiece's dummy prefix space
    llm.close()
    logits = greedy_logits(tiny_target.path, tokens)
    assert logits.shape == (len(tokens), 320) and np.isfinite(logits).all()
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3  # no ties for greedy decoding to trip over
    np.testing.assert_array_equal(greedy_logits(tiny_target.path, tokens), logits)  # deterministic


def test_tiny_target_is_deterministic_in_its_seed(tmp_path):
    a = write_tiny_llama_gguf(tmp_path / "a.gguf", seed=7)
    b = write_tiny_llama_gguf(tmp_path / "b.gguf", seed=7)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()
    c = write_tiny_llama_gguf(tmp_path / "c.gguf", seed=8)
    assert not np.array_equal(a.embed, c.embed) and a.tokens == c.tokens == b.tokens


def test_load_target_embeddings_returns_the_written_matrices(tiny_target):
    embed, lm_head = load_target_embeddings(tiny_target.path)
    assert embed.dtype == lm_head.dtype == np.float32
    np.testing.assert_array_equal(embed, tiny_target.embed)
    np.testing.assert_array_equal(lm_head, tiny_target.lm_head)
    assert not np.array_equal(embed, lm_head)


def test_tied_f16_target_reuses_the_embedding_as_lm_head(tmp_path):
    target = write_tiny_llama_gguf(tmp_path / "tied.gguf", tied=True, f16=True, n_embd=32, n_head=2, n_head_kv=1, seed=3)
    embed, lm_head = load_target_embeddings(target.path)
    assert lm_head is embed
    np.testing.assert_array_equal(embed, target.embed)  # F16 values widen to float32 exactly
    assert greedy_logits(target.path, [1, 300, 301]).shape == (3, 320)


def test_read_target_meta(tiny_target, tiny_meta):
    assert {k: v for k, v in tiny_meta.items() if k not in ("tokens", "vocab_hash")} == {
        "architecture": "llama",
        "n_embd": 64,
        "n_vocab": 320,
        "n_layer": 2,
        "n_head": 4,
        "n_head_kv": 2,
        "head_dim": 16,
        "n_ff": 128,
        "n_ctx_train": 2048,
        "rms_eps": 1e-5,
        "rope_freq_base": 10000.0,
        "rope_mode": 0,
        "chat_template": None,
    }
    assert tiny_meta["tokens"] == tiny_target.tokens
    assert tiny_meta["vocab_hash"] == gguf_schema.vocab_hash(tiny_target.tokens)


def test_read_target_meta_reads_the_chat_template(tmp_path):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    target = write_tiny_llama_gguf(tmp_path / "chat.gguf", chat_template=template, n_vocab=300)
    meta = read_target_meta(target.path)
    assert meta["chat_template"] == template and meta["n_vocab"] == 300


def test_tiny_target_rejects_a_vocabulary_without_byte_tokens(tmp_path):
    with pytest.raises(ValueError, match=f"n_vocab must be at least {MIN_VOCAB}.* got 64"):
        write_tiny_llama_gguf(tmp_path / "small.gguf", n_vocab=64)
