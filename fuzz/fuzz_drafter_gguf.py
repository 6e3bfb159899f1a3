"""Fuzzes the drafter GGUF loader (native/src/drafter-loader.cpp, through gguf.h) and the drafter it builds.

Run: ``python fuzz/fuzz_drafter_gguf.py [libFuzzer flags] CORPUS_DIR`` (``make fuzz`` does this with a time limit).
The engine is a black box to libFuzzer here (atheris instruments Python, not the wheel's libllama), so besides raw
byte mutation the harness carries a structured mutator that edits a real drafter at the level the loader reasons
about. The first input byte picks the mode:

* 0: the rest is a drafter file, mutated byte by byte (seeded with real drafters);
* 1: the rest drives FuzzedDataProvider edits of a seed drafter: key values and types, tensor shapes, types,
  offsets and names, deletions, duplicates, truncation, raw u64 overwrites (absurd counts and lengths);
* 2: the same edits applied to the target file, with an intact drafter (the loader reads the target's vocabulary
  and borrows its embedding and LM head).

Contract checked: loading refuses a bad file with ModelLoadError or IncompatibleDrafterError (ValueError for bad
parameters); a file it accepts can be evaluated. Any other exception, an abort, a crash, a hang (-timeout) or an
allocation past -rss_limit_mb is a finding.
"""

from __future__ import annotations

import functools
import os
import struct
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports():
    import gguf_codec as codec

import seeds  # noqa: E402  (imports llama_cpp before falcon_edge)
from drafter_contract import check_one  # noqa: E402

WORK = Path(os.environ.get("FUZZ_WORK_DIR") or tempfile.mkdtemp(prefix="fe-fuzz-drafter-"))
INTERESTING_U32 = [0, 1, 2, 3, 31, 32, 63, 64, 65, 255, 1024, 65535, 65536, 2**20, 2**24, 2**31 - 1, 2**31, 2**32 - 1]
INTERESTING_U64 = [0, 1, 2**31, 2**32, 2**32 + 1, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


class Seeds:
    """The tiny target and the drafter seeds, written once and parsed for the structured mutator."""

    def __init__(self, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.target = seeds.write_target(work)
        self.drafters = seeds.write_drafters(self.target, work)
        self.target_bytes = self.target.read_bytes()
        self.drafter_bytes = [p.read_bytes() for p in self.drafters]


@functools.cache
def seeds_once() -> Seeds:
    """Built on first use, once per fuzzing process."""
    return Seeds(WORK / "seeds")


# ---- structured edits ----


def random_value(fdp: atheris.FuzzedDataProvider, gtype: int):
    """A value of gguf type `gtype`, biased towards boundary values."""
    if gtype == codec.TYPE_STRING:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    if gtype == codec.TYPE_ARRAY:
        etype = fdp.PickValueInList([4, 5, 6, 8])
        return etype, [random_value(fdp, etype) for _ in range(fdp.ConsumeIntInRange(0, 12))]
    fmt = codec.SCALAR_FORMATS.get(gtype, "<I")
    if fmt in ("<f", "<d"):
        return fdp.PickValueInList([0.0, -1.0, 1e-6, 1.0, 1e4, float("inf"), float("nan"), 3.4e38])
    if fmt == "<?":
        return fdp.ConsumeBool()
    bits = struct.calcsize(fmt) * 8
    signed = fmt.islower()
    if fdp.ConsumeBool():
        v = fdp.PickValueInList(INTERESTING_U32)
    else:
        v = fdp.ConsumeIntInRange(0, 2**bits - 1)
    v &= 2**bits - 1
    return v - 2**bits if signed and v >= 2 ** (bits - 1) else v


def edit(f: codec.GGUFFile, fdp: atheris.FuzzedDataProvider) -> None:
    """One edit of the parsed file, chosen by the input."""
    op = fdp.ConsumeIntInRange(0, 11)
    if op <= 2 and f.kvs:  # a key gets another value of its type, or another type
        kv = f.kvs[fdp.ConsumeIntInRange(0, len(f.kvs) - 1)]
        if op == 2:
            kv.type = fdp.ConsumeIntInRange(0, 13)
        kv.value = random_value(fdp, kv.type)
    elif op == 3 and f.kvs:
        del f.kvs[fdp.ConsumeIntInRange(0, len(f.kvs) - 1)]
    elif op == 4 and f.kvs:
        f.kvs.append(f.kvs[fdp.ConsumeIntInRange(0, len(f.kvs) - 1)])
    elif op in (5, 6) and f.tensors:  # one dimension becomes a boundary value, or a dimension is added / removed
        t = f.tensors[fdp.ConsumeIntInRange(0, len(f.tensors) - 1)]
        if op == 5 and t.dims:
            t.dims[fdp.ConsumeIntInRange(0, len(t.dims) - 1)] = fdp.PickValueInList(INTERESTING_U32 + INTERESTING_U64)
        elif fdp.ConsumeBool() and len(t.dims) > 1:
            t.dims.pop()
        else:
            t.dims.append(fdp.PickValueInList([1, 2, 0, 2**32]))
    elif op == 7 and f.tensors:
        f.tensors[fdp.ConsumeIntInRange(0, len(f.tensors) - 1)].type = fdp.ConsumeIntInRange(0, 45)
    elif op == 8 and f.tensors:
        t = f.tensors[fdp.ConsumeIntInRange(0, len(f.tensors) - 1)]
        t.offset = fdp.PickValueInList(INTERESTING_U64) if fdp.ConsumeBool() else t.offset + 32 * fdp.ConsumeIntInRange(-4, 4)
    elif op == 9 and f.tensors:  # delete, duplicate or rename a tensor
        i = fdp.ConsumeIntInRange(0, len(f.tensors) - 1)
        choice = fdp.ConsumeIntInRange(0, 2)
        if choice == 0:
            del f.tensors[i]
        elif choice == 1:
            f.tensors.append(f.tensors[i])
        else:
            f.tensors[i].name = f.tensors[fdp.ConsumeIntInRange(0, len(f.tensors) - 1)].name
    elif op == 10:
        f.data = f.data[: fdp.ConsumeIntInRange(0, len(f.data))]
    else:
        f.version = fdp.PickValueInList([1, 2, 3, 4, 2**32 - 1])


def mutate(buf: bytes, fdp: atheris.FuzzedDataProvider) -> bytes:
    """Structured edits of a seed file, then optional raw u64 overwrites and truncation of the bytes."""
    f = codec.parse(buf)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        edit(f, fdp)
    out = bytearray(codec.serialize(f))
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        at = fdp.ConsumeIntInRange(0, max(0, len(out) - 8))
        out[at:at + 8] = struct.pack("<Q", fdp.PickValueInList(INTERESTING_U64 + INTERESTING_U32))
    if fdp.ConsumeIntInRange(0, 7) == 0:
        out = out[: fdp.ConsumeIntInRange(0, len(out))]
    return bytes(out)


def files_of(data: bytes) -> tuple[bytes, bytes]:
    """(drafter bytes, target bytes) that one fuzz input stands for."""
    s = seeds_once()
    if not data:
        return s.drafter_bytes[0], s.target_bytes
    mode, rest = data[0] % 3, data[1:]
    if mode == 0:
        return rest, s.target_bytes
    fdp = atheris.FuzzedDataProvider(rest)
    drafter = s.drafter_bytes[fdp.ConsumeIntInRange(0, len(s.drafter_bytes) - 1)]
    if mode == 1:
        return mutate(drafter, fdp), s.target_bytes
    return drafter, mutate(s.target_bytes, fdp)


def test_one_input(data: bytes) -> None:
    drafter, target = files_of(data)
    check_one(drafter, target, WORK)


def write_corpus(corpus: Path) -> None:
    """Seed inputs for every mode: the real drafters (mode 0) and short edit programs (modes 1, 2)."""
    corpus.mkdir(parents=True, exist_ok=True)
    for i, d in enumerate(seeds_once().drafter_bytes):
        (corpus / f"seed-raw-{i}").write_bytes(b"\x00" + d)
        (corpus / f"seed-edit-{i}").write_bytes(bytes([1, i]) + bytes(range(i, i + 24)))
        (corpus / f"seed-target-{i}").write_bytes(bytes([2, i]) + bytes(range(40 + i, 64 + i)))


def main() -> None:
    if "--write-corpus" in sys.argv:
        write_corpus(Path(sys.argv[sys.argv.index("--write-corpus") + 1]))
        return
    if "--dump" in sys.argv:  # --dump INPUT OUT_DIR: the two files an input stands for, for a regression test
        data, out = Path(sys.argv[sys.argv.index("--dump") + 1]).read_bytes(), Path(sys.argv[sys.argv.index("--dump") + 2])
        drafter, target = files_of(data)
        out.mkdir(parents=True, exist_ok=True)
        (out / "drafter.gguf").write_bytes(drafter)
        (out / "target.gguf").write_bytes(target)
        print(check_one(drafter, target, out))
        return
    seeds_once()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
