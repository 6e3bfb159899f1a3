"""Every generation of the process runs on one compute thread (falcon_edge/compute_thread.py), whichever thread asks:
the engine's step callback, which runs where the native loop runs, sees a single thread for plain and streamed
requests from the main thread and from other threads, and it is not the caller's."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from falcon_edge import EdgeFalcon, compute_thread
from falcon_edge.config import SamplingConfig


def test_generations_from_any_thread_run_on_the_compute_thread(tiny_path):
    llm = EdgeFalcon(tiny_path, drafter="ngram", n_ctx=256, n_threads=1, tree_budget=4)
    tokens = llm.tokenize("abc abc abc")
    req = llm._request(8, None, SamplingConfig(temperature=0.0), True)
    seen: set[int] = set()

    def step(_tokens, _text) -> bool:
        seen.add(threading.get_ident())
        return True

    def run() -> list[int]:
        return llm._run(tokens, req, step).tokens

    plain = run()
    with ThreadPoolExecutor(3) as pool:
        assert all(got == plain for got in pool.map(lambda _: run(), range(6)))
    streamed = [piece.result for piece in llm.generate_stream(tokens, max_tokens=8) if piece.result][0]
    assert streamed.tokens == plain
    assert seen == {compute_thread.call(threading.get_ident)} and threading.get_ident() not in seen


def test_a_call_from_the_compute_thread_runs_at_once():
    # a job that asks for the compute thread again (a stream's worker running a request) must not wait for itself
    assert compute_thread.call(compute_thread.call, threading.get_ident) == compute_thread.call(threading.get_ident)
