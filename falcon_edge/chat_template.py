"""Chat messages -> prompt text, from the GGUF's ``tokenizer.chat_template`` rendered with jinja2.

Rendering follows llama-cpp-python's ``Jinja2ChatFormatter`` (sandboxed environment, ``trim_blocks``,
``lstrip_blocks``, loop controls, Transformers-style ``tojson``, ``raise_exception``, ``strftime_now``) so that the
same messages give the same prompt tokens in both. A model without a template falls back to a plain completion
format (``role: content`` lines and an ``assistant:`` cue); :attr:`ChatTemplate.is_fallback` says so.
"""

from __future__ import annotations

import json
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class _IgnoreGenerationTags(jinja2.ext.Extension):
    """Pass-through for Transformers' ``{% generation %}`` tag."""

    tags = {"generation"}

    def parse(self, parser):
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str):
    raise ValueError(f"chat template error: {message}")


def _text_parts(i: int, content: list) -> str:
    """The text of a content given as OpenAI's list of ``{"type": "text", "text": ...}`` parts, joined with
    newlines as llama-server joins them for templates that expect a string."""
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(f"message {i} content part {j} must be a text part, got type {kind!r}")
        texts.append(part["text"])
    return "\n".join(texts)


def validate_messages(messages) -> list[dict]:
    """Checks OpenAI-style messages and returns them as plain dicts, each ``content`` a string.

    Raises:
        ValueError: not a non-empty list of dicts with a string ``role`` and a ``content`` that is a string or a
            list of text parts.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"messages must be a non-empty list of dicts, got {messages!r}")
    out = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(content, (str, list)):
            raise ValueError(f"message {i} must be a dict with a string 'role' and a 'content' string or list of text "
                             f"parts, got {m!r}")
        out.append(dict(m, content=content if isinstance(content, str) else _text_parts(i, content)))
    return out


class ChatTemplate:
    """A compiled chat template.

    Args:
        template: jinja2 source, or None for the fallback completion format.
        bos_token: text of the model's BOS token.
        eos_token: text of the model's EOS token.
    """

    def __init__(self, template: str | None, bos_token: str, eos_token: str):
        self.is_fallback = not template
        self.source = template or FALLBACK_TEMPLATE
        self.bos_token = bos_token
        self.eos_token = eos_token
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_IgnoreGenerationTags, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        self._template = env.from_string(self.source)

    def render(self, messages, *, add_generation_prompt: bool = True) -> str:
        """Renders messages into prompt text.

        Raises:
            ValueError: malformed messages, or the template itself raised.
        """
        return self._template.render(
            messages=validate_messages(messages),
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            add_generation_prompt=add_generation_prompt,
            raise_exception=_raise_exception,
            strftime_now=lambda f: datetime.now().strftime(f),
        )
