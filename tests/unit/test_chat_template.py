"""Chat templates render like llama-cpp-python's Jinja2ChatFormatter; a missing template falls back."""

from __future__ import annotations

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from falcon_edge.chat_template import ChatTemplate

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi ü"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Sum 2+2?"},
]


def test_renders_like_llama_cpp_python():
    ours = ChatTemplate(CHATML, "<s>", "</s>").render(MESSAGES)
    theirs = Jinja2ChatFormatter(CHATML, eos_token="</s>", bos_token="<s>")(messages=MESSAGES).prompt
    assert ours == theirs
    assert ours.endswith("<|im_start|>assistant\n")


def test_fallback_without_template():
    t = ChatTemplate(None, "", "")
    assert t.is_fallback
    assert t.render([{"role": "user", "content": "hi"}]) == "user: hi\nassistant:"


@pytest.mark.parametrize("messages", [[], "hi", [{"role": "user"}], [{"role": 1, "content": "x"}]])
def test_malformed_messages(messages):
    with pytest.raises(ValueError, match="message"):
        ChatTemplate(CHATML, "", "").render(messages)


def test_content_text_parts_render_as_joined_text():
    t = ChatTemplate(CHATML, "", "")
    parts = [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]
    assert t.render([{"role": "user", "content": parts}]) == t.render([{"role": "user", "content": "Hi\nthere"}])
    with pytest.raises(ValueError, match="message 0 content part 1 must be a text part, got type 'image_url'"):
        t.render([{"role": "user", "content": [parts[0], {"type": "image_url", "image_url": {"url": "x"}}]}])


def test_template_raise_exception_becomes_value_error():
    t = ChatTemplate("{{ raise_exception('no system role') }}", "", "")
    with pytest.raises(ValueError, match="no system role"):
        t.render([{"role": "user", "content": "x"}])
