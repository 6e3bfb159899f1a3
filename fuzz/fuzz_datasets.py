"""Fuzzes the file readers: prompt sets (falcon_edge.datasets.load_prompts, JSON lines, gzip for HumanEval), training
sets (falcon_edge.train.data.load_conversations) and tree presets (falcon_edge.trees.load, JSON).

Run: ``python fuzz/fuzz_datasets.py [libFuzzer flags] CORPUS_DIR``. The first input byte picks the reader, the rest is
the file. Contract: a file that is not a valid set is refused with ValueError (DatasetError and TreeError are ones)
whose message names the file; anything else (AttributeError, TypeError, RecursionError, EOFError, a gzip error) is a finding.
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seeds  # noqa: E402  (imports llama_cpp before falcon_edge)

with atheris.instrument_imports():
    from falcon_edge import trees
    from falcon_edge.datasets import load_prompts
    from falcon_edge.train.data import load_conversations

WORK = Path(os.environ.get("FUZZ_WORK_DIR") or tempfile.mkdtemp(prefix="fe-fuzz-datasets-"))
ALL_READERS = ("mt-bench", "humaneval", "gsm8k", "conversations", "tree-preset")
# FUZZ_READERS=mt-bench,gsm8k restricts a run to some readers (e.g. while a finding in another one awaits its fix)
READERS = tuple(os.environ.get("FUZZ_READERS", ",".join(ALL_READERS)).split(","))


def check_one(reader: str, payload: bytes, work: Path = WORK) -> str:
    """Reads `payload` as a file of `reader`'s format; returns "ok" or the refusal's type name."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / {"humaneval": "input.jsonl.gz", "tree-preset": "input.json"}.get(reader, "input.jsonl")
    path.write_bytes(payload)
    try:
        if reader == "conversations":
            load_conversations(path)
        elif reader == "tree-preset":
            trees.load(path)
        else:
            load_prompts(reader, path=path)
    except ValueError as e:
        if path.name not in str(e):
            raise AssertionError(f"refusal does not name the file: {e}") from e
        return type(e).__name__
    return "ok"


def test_one_input(data: bytes) -> None:
    if not data:
        return
    reader = READERS[data[0] % len(READERS)]
    payload = data[1:]
    if reader == "humaneval" and data[0] & 0x80:  # half the gzip inputs are valid archives of fuzzed text
        payload = gzip.compress(payload, mtime=0)
    check_one(reader, payload)


def write_corpus(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    samples = seeds.dataset_samples()
    for i, reader in enumerate(READERS):
        (corpus / f"seed-{reader}").write_bytes(bytes([i]) + samples[reader])
        if reader == "humaneval":
            (corpus / "seed-humaneval-text").write_bytes(bytes([0x80 | i]) + gzip.decompress(samples[reader]))


def main() -> None:
    if "--write-corpus" in sys.argv:
        write_corpus(Path(sys.argv[sys.argv.index("--write-corpus") + 1]))
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
