"""The falcon-sar format is spelled identically in Python (gguf_schema.py) and C++ (gguf-schema.h)."""

from falcon_edge import _native, gguf_schema


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
