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


def test_first_prompt_takes_a_later_slice_in_file_order():
    head = load_prompts("gsm8k", 5)
    assert load_prompts("gsm8k", 2, first=3) == head[3:5]
    assert load_prompts("mt-bench", first=79) == load_prompts("mt-bench")[79:]


def test_first_prompt_out_of_range(tmp_path):
    f = tmp_path / "two.jsonl"
    f.write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n" for q in ("a?", "b?")))
    assert load_prompts("gsm8k", 5, path=f, first=1) == ["b?"]
    with pytest.raises(ValueError, match="first prompt 2 is past the end of .*two.jsonl, which holds 2 records"):
        load_prompts("gsm8k", 1, path=f, first=2)
    with pytest.raises(ValueError, match="first prompt must be >= 0, got -1"):
        load_prompts("gsm8k", 1, path=f, first=-1)


@pytest.mark.parametrize("n", [0, -1])
def test_fewer_than_one_prompt_is_refused(n):
    with pytest.raises(ValueError, match=f"number of prompts must be >= 1, got {n}$"):
        load_prompts("gsm8k", n)
