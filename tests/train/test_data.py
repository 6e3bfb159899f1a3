"""Training data: the allowed sources, the schema, the loss mask, the template fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from falcon_edge.chat_template import ChatTemplate
from falcon_edge.train import data

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _char_tokenize(text: str):
    return [ord(c) for c in text]


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"source": "t", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_load_valid(tmp_path):
    rows = data.load_conversations(_write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD]))
    assert len(rows) == 2


@pytest.mark.parametrize("row,match", [
    ({"prompt": "hi", "completion": "x"}, "'messages' must be a non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "role in"),
    ({"messages": [{"role": "user", "content": 3}]}, "content must be a string"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant message"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}, "content must be a string"),
    ("[1, 2]", "expected an object"),
    ("{not json", "not valid JSON"),
])
def test_wrong_schema_is_named(tmp_path, row, match):
    path = _write_jsonl(tmp_path / "d.jsonl", [GOOD, row])
    with pytest.raises(data.DatasetError, match=match) as e:
        data.load_conversations(path)
    assert "d.jsonl:2" in str(e.value)


def test_empty_dataset(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(data.DatasetError, match="empty"):
        data.load_conversations(path)
    with pytest.raises(data.DatasetError, match="does not exist"):
        data.load_conversations(tmp_path / "missing.jsonl")


def test_evaluation_sets_are_refused(tmp_path):
    path = tmp_path / "mt_bench" / "question.jsonl"
    path.parent.mkdir()
    _write_jsonl(path, [GOOD])
    with pytest.raises(data.DatasetError, match="evaluation data"):
        data.load_conversations(path)


def test_encode_masks_assistant_tokens_only():
    tpl = ChatTemplate(CHATML, "", "")
    rec = {"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "XY"},
                        {"role": "user", "content": "c"}, {"role": "assistant", "content": "Z"}]}
    e = data.encode(rec, tpl, _char_tokenize)
    text = "".join(chr(t) for t in e.tokens)
    assert text == tpl.render(rec["messages"], add_generation_prompt=False)
    masked = "".join(chr(t) for t, m in zip(e.tokens, e.loss_mask) if m)
    assert masked == "XY<|im_end|>\nZ<|im_end|>\n"
    short = data.encode(rec, tpl, _char_tokenize, max_len=10)
    assert len(short.tokens) == 10 and not short.loss_mask.any()


def test_fallback_template_is_plain_completion():
    tpl = ChatTemplate(None, "<s>", "</s>")
    assert tpl.is_fallback
    e = data.encode(GOOD, tpl, _char_tokenize)
    assert "".join(chr(t) for t in e.tokens) == "user: hi\nassistant: hello\n"
    assert "".join(chr(t) for t, m in zip(e.tokens, e.loss_mask) if m) == " hello\n"


def test_read_allowed_sources_and_mix(shared_data):
    gsm = data.read_source("gsm8k-train", shared_data)
    assert len(gsm) == 7473
    assert "<<" not in gsm[0]["messages"][1]["content"] and "The answer is" in gsm[0]["messages"][1]["content"]
    ae = data.read_source("alpaca-eval-gpt4", shared_data)
    assert len(ae) == 805 - 80, "the 80 Vicuna-bench instructions are dropped"
    sg = data.read_source("sharegpt-prompts", shared_data)
    assert all(c["messages"][1]["content"] is None for c in sg)
    mix = data.build_mix(shared_data, {"gsm8k-train": 5, "alpaca-seed": 3}, seed=1)
    assert data.mix_summary(mix) == {"gsm8k-train": {"records": 5, "regenerated": 0},
                                     "alpaca-seed": {"records": 3, "regenerated": 0}}
    with pytest.raises(data.DatasetError, match="unknown training source"):
        data.read_source("gsm8k-test", shared_data)


def test_jsonl_lines_break_at_newlines_only(tmp_path):
    # JSON leaves U+2028 unescaped; a target's answer held one, and str.splitlines() broke its line in two
    text = "first\u2028second"
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text(
        json.dumps({"question": text, "answer": "4 #### 4"}, ensure_ascii=False) + "\n", encoding="utf-8")
    rows = data.read_source("gsm8k-train", tmp_path)
    assert [r["messages"][0]["content"] for r in rows] == [text]
    data.save_conversations([{**GOOD, "messages": [GOOD["messages"][0], {"role": "assistant", "content": text}]}],
                            tmp_path / "x.jsonl")
    assert data.load_conversations(tmp_path / "x.jsonl")[0]["messages"][1]["content"] == text


def test_save_roundtrip(tmp_path):
    data.save_conversations([GOOD], tmp_path / "x.jsonl")
    assert data.load_conversations(tmp_path / "x.jsonl") == [GOOD]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.fixture
def shared_data():
    from falcon_edge.datasets import data_dir

    d = data_dir()
    if not (d / "gsm8k" / "train.jsonl").is_file():
        pytest.skip(f"no shared data at {d}")
    return d


def test_encode_all_with_a_target_without_template(tiny_path, caplog):
    from falcon_edge import EdgeFalcon

    llm = EdgeFalcon(tiny_path, n_ctx=256)
    assert llm.template.is_fallback
    with caplog.at_level("WARNING", logger="falcon_edge.train"):
        out = data.encode_all([GOOD], llm)
    assert "no chat template" in caplog.text
    assert out[0].loss_mask.sum() > 0 and out[0].tokens.dtype == np.int32


@pytest.mark.parametrize("template", [None, "{{ bos_token }}" + CHATML], ids=["fallback", "bos-in-template"])
def test_training_tokens_start_with_the_prompt_chat_decodes(tmp_path, template):
    # the drafter is served the tokens chat() decodes: a BOS the vocabulary would add (add_bos_token) is no part of them
    from falcon_edge import EdgeFalcon
    from helpers.tiny_target import write_tiny_llama_gguf

    llm = EdgeFalcon(write_tiny_llama_gguf(tmp_path / "t.gguf", chat_template=template).path, n_ctx=256)
    prompt = llm.chat_tokens(GOOD["messages"][:1])
    (out,) = data.encode_all([GOOD], llm)
    assert list(out.tokens[: len(prompt)]) == prompt and not out.loss_mask[: len(prompt)].any()
    assert out.loss_mask[len(prompt):].all()
