"""FalconServers on free localhost ports, serving SmolLM2-135M from threads of the test process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import openai
import pytest

from falcon_edge import EdgeFalcon
from falcon_edge.server import FalconServer


@pytest.fixture(scope="module")
def llm(smollm_path) -> Iterator[EdgeFalcon]:
    """The served model: one thread (the machine's cores are shared), a small context (oversize prompts are cheap),
    ngram drafting (speculation is exercised)."""
    with EdgeFalcon("smollm2-135m-instruct", drafter="ngram", n_ctx=512, n_threads=1) as model:
        yield model


def _serve(llm: EdgeFalcon, **kwargs) -> Iterator[FalconServer]:
    with FalconServer(llm, "127.0.0.1", 0, **kwargs) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.shutdown()
        thread.join()


@pytest.fixture(scope="module")
def server(llm) -> Iterator[FalconServer]:
    """The server most tests share, without an API key."""
    yield from _serve(llm)


@pytest.fixture
def make_server(llm) -> Iterator[Callable[..., FalconServer]]:
    """Starts further servers of the same model (``make_server(api_key=...)``); they stop after the test."""
    running = []

    def make(**kwargs) -> FalconServer:
        gen = _serve(llm, **kwargs)
        running.append(gen)
        return next(gen)

    yield make
    for gen in running:
        next(gen, None)


@pytest.fixture
def client(server) -> Iterator[openai.OpenAI]:
    """The official OpenAI client pointed at the shared server (no retries: an error must surface at once)."""
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c
