"""Malformed prompt sets, training sets and tree presets are refused with ValueError naming the file
(fuzz/fuzz_datasets.py).

Cases marked "was: X" raised the untyped X, without the file's name, before falcon_edge/datasets.py checked them
(found by reading the reader while writing its fuzz target; docs/reliability.md).
"""

from __future__ import annotations

import gzip

import pytest

from falcon_edge import trees
from falcon_edge.datasets import load_prompts
from falcon_edge.train.data import DatasetError, load_conversations

DEEP = b"[" * 100_000 + b"]" * 100_000 + b"\n"
HOSTILE_LINES = {
    "not utf-8": (b'{"question": "\xb5\xb5"}\n', "UnicodeDecodeError"),                # was: UnicodeDecodeError
    "deep nesting": (DEEP, "RecursionError"),                                        # was: RecursionError
    "array record": (b'[{"question": "x"}]\n', "must be a JSON object, got list"),   # was: AttributeError
    "number record": (b"3\n", "must be a JSON object, got int"),                     # was: AttributeError
    "broken json": (b'{"question": \n', "not a JSON record"),
    "wrong schema": (b'{"question": 3}\n', "without a string 'question'"),
}


@pytest.mark.parametrize("case", HOSTILE_LINES)
def test_hostile_jsonl_prompt_set(tmp_path, case):
    payload, match = HOSTILE_LINES[case]
    path = tmp_path / "test.jsonl"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=match) as info:
        load_prompts("gsm8k", path=path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("case", "payload", "match"), [
    ("truncated gzip", gzip.compress(b'{"prompt": "def f():"}\n')[:-6], "EOFError"),   # was: EOFError
    ("not gzip", b'{"prompt": "def f():"}\n', "BadGzipFile"),                           # was: BadGzipFile
    ("corrupt deflate", b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 20, "cannot be read"),  # was: zlib.error
    ("gzip of non-utf-8", gzip.compress(b'{"prompt": "\xff"}\n'), "UnicodeDecodeError"),
])
def test_hostile_gzip_prompt_set(tmp_path, case, payload, match):
    path = tmp_path / "HumanEval.jsonl.gz"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=match) as info:
        load_prompts("humaneval", path=path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("case", ["not utf-8", "deep nesting"])
def test_hostile_training_set(tmp_path, case):
    path = tmp_path / "mix.jsonl"
    path.write_bytes(HOSTILE_LINES[case][0])
    with pytest.raises(DatasetError, match=str(path)):
        load_conversations(path)


def test_deeply_nested_tree_preset(tmp_path):
    path = tmp_path / "tree.json"
    path.write_bytes(b'{"paths": ' + DEEP + b"}")
    with pytest.raises(trees.TreeError, match=str(path)):
        trees.load(path)
