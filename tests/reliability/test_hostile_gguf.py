"""Hostile drafter and target GGUFs are refused with a typed error naming the problem, never a crash.

Each case edits a real tiny drafter (or its target) with fuzz/gguf_codec.py the way the structured fuzzer does
(fuzz/fuzz_drafter_gguf.py), so the file is otherwise intact and the loader, not the parser, must catch it. Cases
marked "fuzz finding" crashed the process before their fix (docs/reliability.md); the others pin refusals the fuzzer
relies on. Under `make test-sanitize` the same files also run against the ASan + UBSan build.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import gguf_codec as codec
from drafter_contract import check_one, exercise
from falcon_edge import IncompatibleDrafterError, ModelLoadError

GGML_TYPE_I32, GGML_TYPE_I64, GGML_TYPE_Q8_1 = 26, 27, 9


def edited(src: Path, dst: Path, edit) -> Path:
    """A copy of the GGUF src with edit(GGUFFile) applied."""
    f = codec.parse(src.read_bytes())
    edit(f)
    dst.write_bytes(codec.serialize(f))
    return dst


def tensor(f: codec.GGUFFile, name: str) -> codec.TensorInfo:
    return next(t for t in f.tensors if t.name == name.encode())


def set_kv(key: str, gtype: int, value):
    """Sets (or adds) a key with any type and value."""
    def edit(f: codec.GGUFFile) -> None:
        kv = f.kv(key)
        if kv is None:
            f.kvs.append(codec.KV(key.encode(), gtype, value))
        else:
            kv.type, kv.value = gtype, value
    return edit


# ggml type -> (elements per block, bytes per block) of the types these tests write
TYPE_SIZES = {0: (1, 4), GGML_TYPE_I32: (1, 4), GGML_TYPE_I64: (1, 8), GGML_TYPE_Q8_1: (32, 36)}


def set_type(name: str, ggml_type: int):
    """Changes a tensor's type and lays the data section out again (zero bytes where the tensor grew)."""
    def edit(f: codec.GGUFFile) -> None:
        tensor(f, name).type = ggml_type
        data = bytearray()
        for t in f.tensors:
            block, size = TYPE_SIZES[t.type]
            n_bytes = int(np.prod(t.dims)) // block * size
            old = f.data[t.offset:t.offset + n_bytes]
            t.offset = len(data)
            data += old + bytes(n_bytes - len(old))
            data += bytes(-len(data) % codec.ALIGNMENT)
        f.data = bytes(data)
    return edit


def test_seed_drafters_load_and_draft(small_target, small_drafters):
    for path in small_drafters.values():
        assert check_one(path.read_bytes(), small_target.read_bytes(), path.parent / "check") == "ok"


@pytest.mark.parametrize(("name", "ggml_type", "type_name"), [
    ("output.weight", GGML_TYPE_I32, "i32"),       # fuzz finding: SIGSEGV, mul_mat has no i32 kernel
    ("token_embd.weight", GGML_TYPE_I64, "i64"),
    ("output.weight", GGML_TYPE_Q8_1, "q8_1"),     # an activation-only type: no dot product either
])
def test_target_tensor_of_unusable_type(small_target, small_drafters, tmp_path, name, ggml_type, type_name):
    target = edited(small_target, tmp_path / "t.gguf", set_type(name, ggml_type))
    with pytest.raises(IncompatibleDrafterError, match=f"tensor {name} has type {type_name} .expected f32, f16, bf16"):
        exercise(small_drafters["lstm-f32.gguf"], target)


@pytest.mark.parametrize(("edit", "error", "match"), [
    (set_kv("falcon-sar.block_count", 4, 2**31), IncompatibleDrafterError, r"block_count = 2147483648 is out of range"),
    (set_kv("falcon-sar.attention.head_count_kv", 4, 0), IncompatibleDrafterError, "head_count_kv = 0 is out of range"),
    (set_kv("falcon-sar.block_size", 8, b"2"), IncompatibleDrafterError, "block_size has type str .expected u32"),
    (set_kv("falcon-sar.attention.layer_norm_rms_epsilon", 6, float("nan")), IncompatibleDrafterError, "must be positive"),
    (set_kv("falcon-sar.tree.parents", 9, (5, [-1, 5])), IncompatibleDrafterError, "tree node 1 has parent 5"),
    (set_kv("falcon-sar.tree.parents", 9, (4, [0, 1])), IncompatibleDrafterError, "must be an i32 array"),
    (set_kv("falcon-sar.acceptance.rates", 9, (6, [0.5] * 3)), IncompatibleDrafterError,
     "acceptance.rates must be an f32 array of 12 rates, got 3 entries of type f32"),
    (set_kv("falcon-sar.acceptance.rates", 9, (5, [0] * 12)), IncompatibleDrafterError, "got 12 entries of type i32"),
    (set_kv("falcon-sar.acceptance.rates", 9, (6, [0.5] * 11 + [1.5])), IncompatibleDrafterError,
     r"acceptance.rates\[11\] = 1.5 is not a rate in \[0, 1\]"),
    (set_kv("falcon-sar.acceptance.rates", 9, (6, [float("nan")] * 12)), IncompatibleDrafterError,
     r"acceptance.rates\[0\] = nan is not a rate"),
    (set_kv("falcon-sar.fusion", 8, b"\xff\xfe lstm"), IncompatibleDrafterError, r"unknown fusion '\\xff\\xfe lstm'"),
    (lambda f: setattr(tensor(f, "blk.0.ffn_up.weight"), "dims", [2**63, 2]), ModelLoadError, "not a readable GGUF"),
    (lambda f: setattr(tensor(f, "blk.0.ffn_up.weight"), "offset", 2**62), ModelLoadError, "not a readable GGUF"),
    (lambda f: setattr(tensor(f, "blk.0.ffn_up.weight"), "dims", [16, 64]), IncompatibleDrafterError,
     r"blk.0.ffn_up.weight has shape \[16, 64, 1, 1\] .expected \[32, 32\]"),
    (lambda f: f.tensors.pop(), IncompatibleDrafterError, "has no tensor"),
    (lambda f: setattr(f, "data", f.data[: len(f.data) // 2]), ModelLoadError, "not a readable GGUF|truncated"),
    (lambda f: setattr(f, "version", 4), ModelLoadError, "not a readable GGUF"),
])
def test_hostile_drafter_is_refused(small_target, small_drafters, tmp_path, edit, error, match):
    drafter = edited(small_drafters["lstm-f32.gguf"], tmp_path / "d.gguf", edit)
    with pytest.raises(error, match=match):
        exercise(drafter, small_target)


@pytest.mark.parametrize("length", [2**31, 2**60, 2**64 - 1])
def test_lying_string_length_is_refused(small_target, small_drafters, tmp_path, length):
    """The u64 length of the first key's name claims more bytes than the file holds (absurd allocation)."""
    data = bytearray(small_drafters["lstm-f32.gguf"].read_bytes())
    data[24:32] = struct.pack("<Q", length)  # magic, version, n_tensors, n_kv, then the first key's length
    (tmp_path / "d.gguf").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="not a readable GGUF"):
        exercise(tmp_path / "d.gguf", small_target)


def test_d2t_outside_the_target_vocabulary(small_target, small_drafters, tmp_path):
    def edit(f: codec.GGUFFile) -> None:
        d2t = tensor(f, "d2t")
        data = bytearray(f.data)
        data[d2t.offset:d2t.offset + 4] = np.int32(10**6).tobytes()
        f.data = bytes(data)

    drafter = edited(small_drafters["lstm-q8_0-d2t.gguf"], tmp_path / "d.gguf", edit)
    with pytest.raises(IncompatibleDrafterError, match=r"d2t\[0\] = 1000000 is not a target token id \(n_vocab 260\)"):
        exercise(drafter, small_target)
