"""The one thread of the process on which libllama computes: model loads, cost measurements, every generation.

ggml's CPU backend (as llama-cpp-python builds it on Linux) parallelizes with OpenMP, and libgomp keeps one team of
worker threads for each thread that calls into it. Two such teams in one process take the cores from each other:
a team's idle workers spin after its parallel regions while the other team computes. Measured on 2 cores with the
Q4_K_M target (48 tokens, plain decoding, tokens/s of three runs): loaded and decoding on the main thread, with a
stream decoding on a worker thread between its runs, 13.0 / 9.7 / 12.0 and 5.7 / 8.3 / 13.2 for the streams;
everything on one thread, 15.7 / 15.9 / 15.6 and 15.4 / 15.7 / 15.0. So every call that computes runs here, whichever
thread asks (a stream's consumer, a server's connection threads, Python threads sharing an engine), and requests of
all engines of the process run one after another, in the order they were asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_ident: int | None = None


def _mark() -> None:
    global _ident
    _ident = threading.get_ident()


_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="falcon-edge-compute", initializer=_mark)


def submit(fn: Callable[..., T], *args, **kwargs) -> Future:
    """``fn(*args, **kwargs)`` on the compute thread; called from the compute thread itself, it runs at once."""
    if threading.get_ident() == _ident:
        done: Future = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 (handed to the caller through the future, as the executor does)
            done.set_exception(e)
        return done
    return _EXECUTOR.submit(fn, *args, **kwargs)


def call(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on the compute thread, waited for; its exception is raised here."""
    return submit(fn, *args, **kwargs).result()
