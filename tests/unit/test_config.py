"""Configuration dataclasses: validation messages and the field-for-field mirror of the C++ structs."""

from __future__ import annotations

import dataclasses

import pytest

from falcon_edge import _native
from falcon_edge.config import ContextConfig, RequestConfig, SamplingConfig, SpecConfig


@pytest.mark.parametrize(
    "cls, native",
    [(SamplingConfig, _native.SamplingParams), (SpecConfig, _native.SpecParams), (ContextConfig, _native.EngineParams)],
)
def test_fields_mirror_native_structs(cls, native):
    py_fields = {f.name for f in dataclasses.fields(cls)}
    native_fields = {n for n in dir(native()) if not n.startswith("_")}
    assert py_fields == native_fields


def test_request_fields_mirror_native():
    assert {"max_tokens", "stop", "sampling", "spec"} <= {n for n in dir(_native.GenerateParams()) if not n.startswith("_")}


def test_to_native_round_trip():
    req = RequestConfig(max_tokens=7, stop=("\n\n",), sampling=SamplingConfig(temperature=0.5, top_k=3, seed=11),
                        spec=SpecConfig(mode="ngram", n_nodes_max=5))
    p = req.to_native()
    assert (p.max_tokens, p.stop, p.sampling.temperature, p.sampling.top_k, p.sampling.seed) == (7, ["\n\n"], 0.5, 3, 11)
    assert (p.spec.mode, p.spec.n_nodes_max) == ("ngram", 5)
    assert RequestConfig(max_tokens=None).to_native().max_tokens == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SamplingConfig(temperature=float("nan")), "temperature"),
        (lambda: SamplingConfig(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
        (lambda: SpecConfig(mode="eagle"), "mode must be one of plain, ngram, falcon, got 'eagle'"),
        (lambda: SpecConfig(n_nodes_max=999), "n_nodes_max"),
        (lambda: SpecConfig(ngram_min=3, ngram_max=2), "ngram_min"),
        (lambda: ContextConfig(n_ctx=64, n_batch=128), r"n_batch must be an int in \[1, n_ctx 64\], got 128"),
        (lambda: ContextConfig(n_seq_max=300), "n_seq_max"),
        (lambda: RequestConfig(max_tokens=-1), "max_tokens"),
        # JSON true is not a number: bool is an int subclass, and True would silently mean 1
        (lambda: RequestConfig(max_tokens=True), "max_tokens must be None or an int >= 1, got True"),
        (lambda: SamplingConfig(temperature=True), "temperature must be a finite number >= 0, got True"),
        (lambda: SamplingConfig(top_k=False), "top_k must be an int, got False"),
        (lambda: SamplingConfig(seed=True), r"seed must be None or an int in \[0, 2\*\*64\), got True"),
    ],
)
def test_validation_messages(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unseeded_requests_draw_fresh_seeds():
    assert SamplingConfig().to_native().seed != SamplingConfig().to_native().seed


def test_n_batch_follows_a_small_context():
    assert ContextConfig().n_batch == 256
    assert ContextConfig(n_ctx=96).n_batch == 96
    assert ContextConfig(n_ctx=96, n_batch=32).n_batch == 32
