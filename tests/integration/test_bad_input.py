"""Bad input gives a clear Python exception, never a crash, and the engine stays usable."""

from __future__ import annotations

import llama_cpp
import pytest
from helpers.tiny_mamba import write_tiny_mamba_gguf

from falcon_edge import ContextFullError, EdgeFalcon, ModelLoadError, UnknownModelError

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def llm(smollm_path):
    return EdgeFalcon(smollm_path, drafter="ngram", n_ctx=256, n_threads=2)


def test_missing_target(tmp_path):
    with pytest.raises(UnknownModelError, match="does not exist|unknown model"):
        EdgeFalcon(tmp_path / "nope.gguf")


def test_non_gguf_target(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ModelLoadError, match="bad.gguf"):
        EdgeFalcon(bad)


def test_recurrent_target(tmp_path):
    # a Mamba state cannot drop the rejected part of a tree: refused at load, not wrong at the first rejection
    path = write_tiny_mamba_gguf(tmp_path / "mamba.gguf")
    assert llama_cpp.llama_model_is_recurrent(llama_cpp.Llama(path, n_ctx=64, verbose=False).model)
    with pytest.raises(ModelLoadError, match=r"mamba.gguf' is a recurrent or hybrid model \(mamba\)"):
        EdgeFalcon(path, drafter=None, n_ctx=64)


def test_truncated_target(tmp_path, smollm_path):
    cut = tmp_path / "cut.gguf"
    with open(smollm_path, "rb") as f:
        cut.write_bytes(f.read(3_000_000))
    with pytest.raises(ModelLoadError, match="cut.gguf"):
        EdgeFalcon(cut)


def test_empty_prompt(llm):
    with pytest.raises(ValueError, match="prompt is empty"):
        llm.generate("")
    with pytest.raises(ValueError, match="prompt is empty"):
        llm.generate([])


def test_prompt_longer_than_context(llm):
    with pytest.raises(ContextFullError, match="n_ctx 256"):
        llm.generate("word " * 400, max_tokens=None)


def test_max_tokens_past_context(llm):
    with pytest.raises(ContextFullError, match="max_tokens 1000 does not fit: n_ctx 256"):
        llm.generate("Hello", max_tokens=1000)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"min_p": 2.0}, "min_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": -5}, "seed"),
        ({"stop": [3]}, "stop"),
    ],
)
def test_invalid_parameters(llm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        llm.generate("Hello", **kwargs)


def test_out_of_vocab_token(llm):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([1, 10**7], max_tokens=8)


def test_invalid_constructor_arguments(smollm_path):
    with pytest.raises(ValueError, match="n_ctx"):
        EdgeFalcon(smollm_path, n_ctx=2)
    with pytest.raises(ValueError, match="drafter"):
        EdgeFalcon(smollm_path, drafter="fast-please")


def test_engine_usable_after_errors(llm):
    for bad in ("", "word " * 400):
        with pytest.raises((ValueError, ContextFullError)):
            llm.generate(bad, max_tokens=None)
    res = llm.generate("The capital of France is", max_tokens=8)
    assert res.tokens and res.finish_reason in ("stop", "length")


def test_stop_strings_cut_text_without_losing_tokens(llm):
    full = llm.generate("Count: 1, 2, 3, 4, 5, 6, 7,", max_tokens=24)
    assert full.text
    needle = full.text[len(full.text) // 2:][:3]
    cut = llm.generate("Count: 1, 2, 3, 4, 5, 6, 7,", max_tokens=24, stop=[needle])
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(needle)]
    assert full.tokens[: len(cut.tokens)] == cut.tokens
