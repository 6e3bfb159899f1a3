"""Prompt-set readers: each published format parses, and a wrong schema is refused clearly."""

from __future__ import annotations

import json

import pytest

from falcon_edge.datasets import load_prompts


@pytest.mark.parametrize("name", ["mt-bench", "humaneval", "gsm8k"])
def test_shared_sets_parse(name):
    prompts = load_prompts(name, 3)
    assert len(prompts) == 3 and all(isinstance(p, str) and p for p in prompts)


def test_wrong_schema(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"question_id": 1, "text": "no turns"}) + "\n")
    with pytest.raises(ValueError, match="without string 'turns'"):
        load_prompts("mt-bench", path=f)


def test_empty_and_unknown(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    with pytest.raises(ValueError, match="holds no records"):
        load_prompts("gsm8k", path=f)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_prompts("imagenet")
