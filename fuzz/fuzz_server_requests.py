"""Fuzzes the OpenAI-compatible server (falcon_edge/server.py) with raw HTTP requests over a socket.

Run: ``python fuzz/fuzz_server_requests.py [libFuzzer flags] CORPUS_DIR``. A FalconServer serves the tiny random
llama of fuzz/seeds.py (no chat template: the fallback format; n-gram drafting; n_ctx 128, so any generation is
short) on a free localhost port. Each input becomes one request: method, path, a Content-Length that may lie or be
negative, an optional Transfer-Encoding, and a body that is either fuzzed bytes or a valid request body whose fields
were replaced by hostile values (wrong types, huge numbers, NaN, deep nesting).

Contract: every request gets a well-formed HTTP answer within TIMEOUT_S, never a 500 (client input must be refused as
a 4xx naming the problem), error bodies are OpenAI's ``{"error": {...}}``, and the server keeps serving.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

import seeds  # noqa: E402  (imports llama_cpp before falcon_edge)

with atheris.instrument_imports():
    from falcon_edge import EdgeFalcon
    from falcon_edge.server import FalconServer

WORK = Path(os.environ.get("FUZZ_WORK_DIR") or tempfile.mkdtemp(prefix="fe-fuzz-server-"))
TIMEOUT_S = 30.0
METHODS = ["POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "POST /x", "\x00"]
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/", "/v1/chat/completions?x=1",
         "//v1/completions", "/v1/completions/../models"]
FIELDS = ["messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p",
          "repeat_penalty", "seed", "stop", "stream", "n", "model"]
HOSTILE = [None, True, False, 0, -1, 1, 2, 2**31, 2**63, 10**30, -(10**30), 0.5, -0.0, 1e308, float("nan"),
           float("inf"), "", "x", "\x00", "\ud800", "0", [], [1], [[]], ["a", 1], {}, {"role": "user"},
           [{"role": "user", "content": "hi"}], [{"role": "user", "content": 1}], [{"role": "system"}],
           [{"role": "user", "content": "hi", "extra": {"a": [1]}}], list(range(300)), [-5, 400, 2**40]]
ALLOWED_STATUS = {200, 400, 401, 404, 405, 408, 411, 413, 414, 431, 501}


class Served:
    """The tiny model behind a FalconServer on a free port, for the life of the process."""

    def __init__(self, work: Path):
        work.mkdir(parents=True, exist_ok=True)
        self.llm = EdgeFalcon(str(seeds.write_target(work)), drafter="ngram", n_ctx=128, n_batch=64, n_threads=1,
                              tree_budget=4)
        self.server = FalconServer(self.llm, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]


@functools.cache
def served_once() -> Served:
    """Built on first use, once per fuzzing process."""
    return Served(WORK / "model")


def hostile(fdp: atheris.FuzzedDataProvider, depth: int = 0):
    """A JSON value from HOSTILE, or a nested list / object of them."""
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind == 0 and depth < 3:
        return [hostile(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if kind == 1 and depth < 3:
        return {fdp.PickValueInList(FIELDS + ["role", "content"]): hostile(fdp, depth + 1)
                for _ in range(fdp.ConsumeIntInRange(0, 3))}
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 3:
        return "[" * fdp.ConsumeIntInRange(1, 100_000)  # a string that looks like deep nesting once unquoted
    return fdp.PickValueInList(HOSTILE)


def body_of(fdp: atheris.FuzzedDataProvider) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 5)
    if kind == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    if kind == 1:  # nesting deeper than json's recursion limit
        depth = fdp.ConsumeIntInRange(1, 200_000)
        return b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"
    body = json.loads(fdp.PickValueInList(seeds.request_samples()))
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        field = fdp.PickValueInList(FIELDS)
        if fdp.ConsumeIntInRange(0, 4) == 0:
            body.pop(field, None)
        else:
            body[field] = hostile(fdp)
    if kind == 2:
        body = fdp.PickValueInList([[body], "x", 1, None])
    return json.dumps(body, allow_nan=True).encode()


def request_of(fdp: atheris.FuzzedDataProvider) -> bytes:
    """The raw bytes of one HTTP request."""
    method, path = fdp.PickValueInList(METHODS), fdp.PickValueInList(PATHS)
    body = body_of(fdp)
    headers = ["Host: 127.0.0.1", "Connection: close"]
    length = fdp.ConsumeIntInRange(0, 6)
    if length == 1:
        headers.append(f"Content-Length: {len(body) + fdp.ConsumeIntInRange(-8, 8)}".replace("--", "-"))
    elif length == 2:
        headers.append(f"Content-Length: {fdp.PickValueInList(['-1', '-100', 'abc', '1e3', '', ' 5', '99999999999999999999', '0x10'])}")
    elif length == 3:
        headers.append(f"Content-Length: {17 * 2**20}")
    elif length != 4:
        headers.append(f"Content-Length: {len(body)}")
    if fdp.ConsumeIntInRange(0, 7) == 0:
        headers.append("Transfer-Encoding: chunked")
    if fdp.ConsumeIntInRange(0, 7) == 0:
        headers.append(f"Authorization: Bearer {fdp.ConsumeUnicodeNoSurrogates(8)}")
    head = f"{method} {path} HTTP/1.1\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


def exchange(port: int, raw: bytes) -> bytes:
    """Sends one request, reads the whole answer (the request asks the server to close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)  # a Content-Length that promises more than the body then reads as EOF
        except OSError:  # the server refused early and closed (EPIPE, ECONNRESET, ENOTCONN): its answer is buffered
            pass
        chunks = []
        try:
            while data := sock.recv(1 << 16):
                chunks.append(data)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def check_answer(raw: bytes, answer: bytes) -> int:
    """The status of a well-formed answer; raises AssertionError on a contract breach."""
    assert answer.startswith(b"HTTP/1."), f"no HTTP answer to {raw[:200]!r}: {answer[:200]!r}"
    status = int(answer.split(b" ", 2)[1])
    assert status in ALLOWED_STATUS, f"status {status} for {raw[:300]!r}: {answer[:600]!r}"
    head, _, body = answer.partition(b"\r\n\r\n")
    if status >= 400 and b"application/json" in head:
        err = json.loads(body)["error"]
        assert err["message"] and err["code"], err
    if b"text/event-stream" in head:
        assert b'"server_error"' not in body, f"stream ended in a server error for {raw[:300]!r}: {body[-600:]!r}"
    return status


def test_one_input(data: bytes) -> None:
    port = served_once().port
    raw = request_of(atheris.FuzzedDataProvider(data))
    try:
        answer = exchange(port, raw)
    except socket.timeout:
        raise AssertionError(f"no answer within {TIMEOUT_S} s to {raw[:300]!r}") from None
    check_answer(raw, answer)


def write_corpus(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for i in range(16):
        (corpus / f"seed-{i}").write_bytes(bytes((i * 37 + j * 11) % 256 for j in range(64)))


def main() -> None:
    if "--write-corpus" in sys.argv:
        write_corpus(Path(sys.argv[sys.argv.index("--write-corpus") + 1]))
        return
    served_once()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
