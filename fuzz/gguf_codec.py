"""A byte-exact GGUF v3 reader and writer for the fuzzers: files become editable lists and back.

Unlike gguf-py, the writer emits whatever the lists hold: wrong value types, dimensions whose product overflows,
tensor offsets past the end, duplicate names, absurd counts. That is the point: the structured fuzzer edits a real
drafter at the level the loader reasons about (keys, types, shapes, offsets) and serializes the result unchecked.

Layout (ggml/include/gguf.h): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv pairs (u64-length key,
u32 type, value), then n_tensors infos (name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset), padding to
`general.alignment` (default 32), then the data section that the offsets index.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAGIC = b"GGUF"
ALIGNMENT = 32

# gguf_type -> struct format of one scalar (STRING 8 and ARRAY 9 are handled apart)
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
TYPE_STRING, TYPE_ARRAY = 8, 9


@dataclass
class KV:
    """One metadata pair. `value` is a scalar, bytes (a string) or, for arrays, (element type, list of values)."""

    key: bytes
    type: int
    value: object


@dataclass
class TensorInfo:
    """One tensor header; `offset` is relative to the data section."""

    name: bytes
    dims: list[int]
    type: int
    offset: int


@dataclass
class GGUFFile:
    """A GGUF file as editable parts: `data` is the raw data section."""

    version: int = 3
    kvs: list[KV] = field(default_factory=list)
    tensors: list[TensorInfo] = field(default_factory=list)
    data: bytes = b""

    def kv(self, key: str) -> KV | None:
        return next((kv for kv in self.kvs if kv.key == key.encode()), None)


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> bytes:
        n = self.take("<Q")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def value(self, gtype: int):
        if gtype == TYPE_STRING:
            return self.string()
        if gtype == TYPE_ARRAY:
            etype, n = self.take("<I"), self.take("<Q")
            return etype, [self.value(etype) for _ in range(n)]
        return self.take(SCALAR_FORMATS[gtype])


def parse(buf: bytes) -> GGUFFile:
    """Reads a well-formed GGUF v3 file (the seeds); raises on anything else."""
    r = _Reader(buf)
    if buf[:4] != MAGIC:
        raise ValueError(f"not a GGUF file: magic {buf[:4]!r}")
    r.pos = 4
    f = GGUFFile(version=r.take("<I"))
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    for _ in range(n_kv):
        key = r.string()
        gtype = r.take("<I")
        f.kvs.append(KV(key, gtype, r.value(gtype)))
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.take("<I")
        dims = [r.take("<Q") for _ in range(n_dims)]
        f.tensors.append(TensorInfo(name, dims, r.take("<I"), r.take("<Q")))
    start = -(-r.pos // ALIGNMENT) * ALIGNMENT
    f.data = buf[start:]
    return f


def _value_bytes(gtype: int, value) -> bytes:
    if gtype == TYPE_STRING:
        return struct.pack("<Q", len(value)) + value
    if gtype == TYPE_ARRAY:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(_value_bytes(etype, v) for v in items)
    fmt = SCALAR_FORMATS.get(gtype)
    if fmt is None:  # an unknown type tag: emit four raw bytes, as a hostile file would
        return struct.pack("<I", int(value) & 0xFFFFFFFF)
    return struct.pack(fmt, value)


def serialize(f: GGUFFile) -> bytes:
    """The bytes of `f`, exactly as its lists say (no checks)."""
    out = bytearray(MAGIC + struct.pack("<IQQ", f.version, len(f.tensors), len(f.kvs)))
    for kv in f.kvs:
        out += struct.pack("<Q", len(kv.key)) + kv.key + struct.pack("<I", kv.type) + _value_bytes(kv.type, kv.value)
    for t in f.tensors:
        out += struct.pack("<Q", len(t.name)) + t.name + struct.pack("<I", len(t.dims))
        out += b"".join(struct.pack("<Q", d & 0xFFFFFFFFFFFFFFFF) for d in t.dims)
        out += struct.pack("<IQ", t.type, t.offset & 0xFFFFFFFFFFFFFFFF)
    out += bytes(-len(out) % ALIGNMENT)
    return bytes(out + f.data)
