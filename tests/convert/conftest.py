"""Fixtures of the converter tier: a tiny random target GGUF written once per session."""

from __future__ import annotations

import pytest
import torch

from falcon_edge.train.target_weights import read_target_meta
from helpers.tiny_target import write_tiny_llama_gguf

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory):
    """An untied F32 tiny llama target: V 320, H 64, 4 heads of 16, 2 kv heads, 2 layers."""
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("target") / "tiny-llama.gguf", seed=1)


@pytest.fixture(scope="session")
def tiny_meta(tiny_target):
    """read_target_meta of tiny_target."""
    return read_target_meta(tiny_target.path)
