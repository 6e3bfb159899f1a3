"""The falcon-sar format is spelled identically in Python (gguf_schema.py) and C++ (gguf-schema.h)."""

import numpy as np

from falcon_edge import _native, gguf_schema
from falcon_edge.train.calibration import accept_keys


def test_python_and_cpp_spell_every_key_alike():
    assert gguf_schema.schema() == _native.gguf_schema()


def test_architecture_name_does_not_clash_with_llama_cpp_falcon():
    assert gguf_schema.ARCH == "falcon-sar"


def test_vocab_hash_is_fnv1a_over_nul_terminated_tokens():
    # FNV-1a 64 of b"a\0" computed by hand
    h = 0xCBF29CE484222325
    for b in b"a\0":
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    assert gguf_schema.vocab_hash(["a"]) == f"fnv1a64:{h:016x}"
    assert gguf_schema.vocab_hash(["ab"]) != gguf_schema.vocab_hash(["a", "b"])


def test_python_and_cpp_bin_acceptance_keys_alike():
    edges = np.float32(gguf_schema.ACCEPT_PROB_EDGES)
    assert _native.accept_prob_edges() == edges.tolist()
    # every edge, the float32 just below it, and a grid: float32 comparisons on both sides
    probs = np.concatenate([edges, np.nextafter(edges, np.float32(0)), np.linspace(0, 1, 101, dtype=np.float32)])
    for depth in (1, 2, 3, 7):
        assert accept_keys(probs, depth).tolist() == [_native.accept_key(float(p), depth) for p in probs]
    assert accept_keys(np.float32([0.0, 1.0]), 5).tolist() == [len(edges) + 1, gguf_schema.N_ACCEPT_KEYS - 1]
