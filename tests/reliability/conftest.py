"""Fixtures of the reliability tier: the fuzzers' tiny models (fuzz/seeds.py) and a served tiny model."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "fuzz"))     # gguf_codec, seeds: shared with the fuzz targets
sys.path.insert(0, str(REPO / "scripts"))  # longrun

import seeds  # noqa: E402

from falcon_edge import EdgeFalcon  # noqa: E402
from falcon_edge.server import FalconServer  # noqa: E402


@pytest.fixture(scope="session")
def seed_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("seeds")


@pytest.fixture(scope="session")
def small_target(seed_dir) -> Path:
    """The fuzzers' tiny llama target: 260 tokens, H 32, one layer, F32."""
    return seeds.write_target(seed_dir)


@pytest.fixture(scope="session")
def small_drafters(small_target, seed_dir) -> dict[str, Path]:
    """The fuzzers' drafter seeds for small_target, by file name (lstm-f32, linear-f16, lstm-q8_0-d2t, linear-q4_0-tree)."""
    return {p.name: p for p in seeds.write_drafters(small_target, seed_dir)}


@pytest.fixture(scope="module")
def small_llm(small_target, small_drafters) -> Iterator[EdgeFalcon]:
    """small_target with a Falcon drafter and a fixed tree budget, so every cycle drafts and verifies a tree."""
    with EdgeFalcon(small_target, drafter=small_drafters["lstm-f32.gguf"], n_ctx=512, n_batch=64, n_threads=1,
                    tree_budget=6) as llm:
        yield llm


@pytest.fixture(scope="module")
def small_server(small_llm) -> Iterator[FalconServer]:
    """A FalconServer of small_llm on a free localhost port."""
    with FalconServer(small_llm, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.shutdown()
        thread.join()
