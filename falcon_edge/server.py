"""OpenAI-compatible HTTP server over one :class:`~falcon_edge.EdgeFalcon` (``falcon-edge serve``).

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (both with SSE streaming), ``GET /v1/models``
and ``GET /health``. Built on the standard library's ``ThreadingHTTPServer``: every connection gets a thread, and one
lock lets a single generation run at a time, because the engine has one KV cache; parallel clients queue on it.
Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "code"}}``, with a matching HTTP status.
Responses carry the speculative statistics in a ``falcon`` field, as :meth:`EdgeFalcon.chat` returns them.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .engine import EdgeFalcon
from .errors import ContextFullError

log = logging.getLogger("falcon_edge.server")

MAX_BODY_BYTES = 16 * 2**20  # larger request bodies are refused with 413 before they are read
SOCKET_TIMEOUT_S = 60.0
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "stop")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "code"}}`` with an HTTP status.

    Args:
        status: the HTTP status of the response.
        message: what went wrong, naming the offending value.
        code: a stable machine-readable code (``"model_not_found"``, ``"context_length_exceeded"``, ...).
        type: OpenAI's error type (``"invalid_request_error"``, ``"authentication_error"``, ``"server_error"``).
        headers: extra response headers (``Allow`` for a 405).
    """

    def __init__(self, status: HTTPStatus, message: str, code: str, type: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.type, "code": self.code}}


def _as_api_error(exc: Exception) -> ApiError:
    """The error a client receives for an exception raised while its request was served."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextFullError):
        return ApiError(HTTPStatus.BAD_REQUEST, str(exc), "context_length_exceeded")
    if isinstance(exc, (ValueError, TypeError)):
        return ApiError(HTTPStatus.BAD_REQUEST, str(exc), "invalid_value")
    log.error("request failed", exc_info=exc)
    return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc) or type(exc).__name__, "server_error", "server_error")


# ---- requests and responses ----


def _generation_kwargs(body: dict) -> dict:
    """Keyword arguments of ``EdgeFalcon.chat``/``generate`` from an OpenAI request body.

    Absent or null fields keep the Python API's defaults; fields the engine has no use for (``logprobs``,
    ``presence_penalty``, ...) are ignored, except ``n``, which must be 1.
    """
    kwargs = {k: body[k] for k in SAMPLING_FIELDS if body.get(k) is not None}
    max_tokens = next((body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None), None)
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    if body.get("n") not in (None, 1):
        raise ValueError(f"n must be 1 (one choice per request), got {body['n']!r}")
    stop = kwargs.get("stop")
    if stop is not None and not isinstance(stop, str) and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise ValueError(f"stop must be a string or a list of strings, got {stop!r:.80}")
    return kwargs


def _stream_flag(body: dict) -> bool:
    stream = body.get("stream")
    if stream not in (None, True, False):
        raise ValueError(f"stream must be a boolean, got {stream!r}")
    return bool(stream)


def _include_usage(body: dict, stream: bool) -> bool:
    """``stream_options.include_usage``: whether a stream ends with a chunk of its own, ``choices`` empty, for
    ``usage`` (OpenAI's form). Without it the usage rides on the chunk that carries ``finish_reason``."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise ValueError(f"stream_options is only allowed with stream true, got stream {body.get('stream')!r}")
    if not isinstance(options, dict):
        raise ValueError(f"stream_options must be an object, got {options!r:.80}")
    include = options.get("include_usage")
    if include not in (None, True, False):
        raise ValueError(f"stream_options.include_usage must be a boolean, got {include!r:.80}")
    return bool(include)


def _usage_chunk_last(chunks: Iterator[dict]) -> Iterator[dict]:
    """The stream of ``chunks`` with its usage moved from the finishing chunk (usage null there) to one more chunk
    after it, whose ``choices`` are empty."""
    try:
        for chunk in chunks:
            usage = chunk.get("usage")
            if usage is None:
                yield chunk
                continue
            yield {**chunk, "usage": None}
            yield {k: chunk[k] for k in ("id", "object", "created", "model")} | {"choices": [], "usage": usage}
    finally:
        chunks.close()


def _text_completion(cid: str, created: int, model: str, text: str, finish_reason: str | None, **extra) -> dict:
    """An OpenAI ``text_completion`` object (or streamed chunk) with one choice."""
    out = {"id": cid, "object": "text_completion", "created": created, "model": model,
           "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}
    out.update(extra)
    return out


def _completion(llm: EdgeFalcon, prompt, kwargs: dict) -> dict:
    res = llm.generate(prompt, **kwargs)
    return _text_completion(f"cmpl-{uuid.uuid4().hex}", int(time.time()), llm.model_name, res.text,
                            res.openai_finish_reason, usage=res.usage, falcon=res.stats.as_dict())


def _completion_stream(llm: EdgeFalcon, prompt, kwargs: dict) -> Iterator[dict]:
    """Streamed ``text_completion`` chunks of a raw prompt; closing the iterator stops the generation."""
    pieces = llm.generate_stream(prompt, **kwargs)
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    try:
        for piece in pieces:
            res = piece.result
            if res is None:
                if piece.text:
                    yield _text_completion(cid, created, llm.model_name, piece.text, None)
                continue
            yield _text_completion(cid, created, llm.model_name, piece.text, res.openai_finish_reason, usage=res.usage,
                                   falcon=res.stats.as_dict())
    finally:
        pieces.close()


# ---- HTTP ----


class _Handler(BaseHTTPRequestHandler):
    """Routes one connection's requests; the served model and its lock live on ``self.server``."""

    protocol_version = "HTTP/1.1"  # keep-alive for the OpenAI client; streams close their connection
    server_version = "falcon-edge"
    # seconds a socket read or write may block: a client that stops sending mid-request, or stops reading a stream
    # (which would otherwise hold the generation lock once the socket buffer fills), is dropped
    timeout = SOCKET_TIMEOUT_S
    server: FalconServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            raw = self._read_body()
            route = ROUTES.get(path)
            if route is None:
                endpoints = ", ".join(ROUTES)
                raise ApiError(HTTPStatus.NOT_FOUND, f"no endpoint {path}: endpoints are {endpoints}", "not_found")
            allowed = ", ".join([*route, *(["HEAD"] if "GET" in route else []), "OPTIONS"])
            if method == "OPTIONS":
                self._send_empty(HTTPStatus.NO_CONTENT, {"Allow": allowed})
                return
            handler = route.get("GET" if method == "HEAD" else method)
            if handler is None:
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"method {method} not allowed on {path}: use {allowed}",
                               "method_not_allowed", headers={"Allow": allowed})
            if path != "/health":
                self._check_api_key()
            handler(self, raw)
        except (ConnectionError, TimeoutError):
            raise  # the client is gone or stuck: nothing can be answered (see FalconServer.handle_error)
        except Exception as e:  # noqa: BLE001 (every failure becomes a JSON error; the connection keeps serving)
            err = _as_api_error(e)
            self._send_json(err.status, err.body(), err.headers)

    def _read_body(self) -> bytes:
        """The request body, exactly Content-Length bytes; any refusal closes the connection, because the unread
        body would otherwise be parsed as the next request."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            raise ApiError(HTTPStatus.LENGTH_REQUIRED,
                           f"Transfer-Encoding {self.headers['Transfer-Encoding']!r} is not supported: send Content-Length",
                           "length_required")
        length = (self.headers.get("Content-Length") or "0").strip()
        if not length.isdigit() or not length.isascii():  # int() would take "-1", "+5", "1_0": read(-1) waits for EOF
            self.close_connection = True
            raise ApiError(HTTPStatus.BAD_REQUEST, f"Content-Length must be a non-negative integer, got {length!r}",
                           "invalid_content_length")
        n_bytes = int(length)
        if n_bytes > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"request body of {n_bytes} bytes is too large: limit {MAX_BODY_BYTES}", "request_too_large")
        try:
            body = self.rfile.read(n_bytes)
        except TimeoutError:
            body = b""
        if len(body) < n_bytes:
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_TIMEOUT, f"request body ended after {len(body)} of {n_bytes} bytes "
                           f"(Content-Length) or took over {self.timeout} s", "incomplete_body")
        return body

    def _check_api_key(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           "invalid_api_key", "authentication_error")

    def _json_body(self, raw: bytes) -> dict:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting past the stack
            raise ApiError(HTTPStatus.BAD_REQUEST, f"request body is not valid JSON: {type(e).__name__}: {str(e)[:200]}",
                           "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"request body must be a JSON object, got {type(body).__name__}",
                           "invalid_json")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise ValueError(f"model must be a string, got {model!r:.80}")
        if model and model not in self.server.model_names:
            raise ApiError(HTTPStatus.NOT_FOUND,
                           f"model {model!r} is not served here: this server serves {self.server.llm.model_name!r}",
                           "model_not_found")
        return body

    def _send_json(self, status: HTTPStatus, obj: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":  # HEAD: GET's status and headers, no body
            self.wfile.write(data)

    def _send_empty(self, status: HTTPStatus, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_result(self, result: dict | Iterator[dict], include_usage: bool) -> None:
        if isinstance(result, dict):
            self._send_json(HTTPStatus.OK, result)
        else:
            self._send_stream(_usage_chunk_last(result) if include_usage else result)

    def _send_stream(self, chunks: Iterator[dict]) -> None:
        """Sends chunks as server-sent events, then ``data: [DONE]``; a client that goes away stops the generation."""
        try:
            # errors such as ContextFullError arrive with the first generated chunk (a chat stream opens with a role
            # chunk before it): take two chunks before the 200 goes out, so that such errors keep their status code
            head = list(itertools.islice(chunks, 2))
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for chunk in itertools.chain(head, chunks):
                    self._send_event(chunk)
            except (ConnectionError, TimeoutError):  # BrokenPipeError, ConnectionResetError; a client that stopped reading
                log.info("client %s disconnected: generation stopped", self.address_string())
                return
            except Exception as e:  # noqa: BLE001 (the 200 is already sent: report in the stream, like llama-server)
                self._send_event(_as_api_error(e).body())
                return
            self.wfile.write(b"data: [DONE]\n\n")
        finally:
            chunks.close()

    def _send_event(self, obj: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        self.wfile.flush()

    # ---- endpoints ----

    def _health(self, raw: bytes) -> None:
        self._send_json(HTTPStatus.OK, {"status": "ok"})

    def _models(self, raw: bytes) -> None:
        llm = self.server.llm
        model = {"id": llm.model_name, "object": "model", "created": self.server.created, "owned_by": "falcon-edge",
                 "meta": {"mode": llm.mode, "n_ctx": llm.context.n_ctx}}
        self._send_json(HTTPStatus.OK, {"object": "list", "data": [model]})

    def _chat_completions(self, raw: bytes) -> None:
        body = self._json_body(raw)
        kwargs, stream = _generation_kwargs(body), _stream_flag(body)
        include_usage = _include_usage(body, stream)
        with self.server.generation_lock:
            self._send_result(self.server.llm.chat(body.get("messages"), stream=stream, **kwargs), include_usage)

    def _completions(self, raw: bytes) -> None:
        body = self._json_body(raw)
        kwargs, stream = _generation_kwargs(body), _stream_flag(body)
        include_usage = _include_usage(body, stream)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]  # the OpenAI client's batch form with one prompt
        if not isinstance(prompt, (str, list)):
            raise TypeError(f"prompt must be a string or a list of token ids, got {prompt!r}")
        llm = self.server.llm
        with self.server.generation_lock:
            self._send_result(_completion_stream(llm, prompt, kwargs) if stream else _completion(llm, prompt, kwargs),
                              include_usage)


ROUTES = {
    "/health": {"GET": _Handler._health},
    "/v1/models": {"GET": _Handler._models},
    "/v1/chat/completions": {"POST": _Handler._chat_completions},
    "/v1/completions": {"POST": _Handler._completions},
}


class FalconServer(ThreadingHTTPServer):
    """An OpenAI-compatible HTTP server for one model; one generation runs at a time, the others wait.

    Use as a context manager (it closes its socket) and call ``serve_forever()``; ``shutdown()`` from another
    thread stops it. The model stays open: its owner closes it.

    Args:
        llm: the model served.
        host: IPv4 address to bind; anything but a loopback address lets other machines use the model.
        port: TCP port (0: a free one, see :attr:`url`).
        api_key: if set, every endpoint but ``/health`` requires ``Authorization: Bearer <api_key>``.

    Attributes:
        generation_lock: held while a request uses the model; hold it to use ``llm`` beside the server.
        model_names: names a request's ``model`` field may give (registry name, file name, file stem).
    """

    daemon_threads = True  # a client that never hangs up does not block shutdown

    def __init__(self, llm: EdgeFalcon, host: str = "127.0.0.1", port: int = 8080, *, api_key: str | None = None):
        super().__init__((host, port), _Handler)
        self.llm = llm
        self.api_key = api_key
        self.generation_lock = threading.Lock()
        self.model_names = {llm.model_name, llm.target_path.name, llm.target_path.stem}
        self.created = int(time.time())

    @property
    def url(self) -> str:
        """Base URL of the bound socket, e.g. ``http://127.0.0.1:8080`` (OpenAI clients append ``/v1``)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request, client_address) -> None:
        # reached only when the connection itself fails (every other error is answered as JSON)
        log.debug("connection with %s failed", client_address, exc_info=True)


def serve(llm: EdgeFalcon, host: str = "127.0.0.1", port: int = 8080, *, api_key: str | None = None) -> None:
    """Serves ``llm`` on ``host:port`` until interrupted (Ctrl-C raises ``KeyboardInterrupt`` to the caller)."""
    with FalconServer(llm, host, port, api_key=api_key) as server:
        log.info("serving %s (%s) on %s/v1", llm.model_name, llm.mode, server.url)
        if host not in LOOPBACK_HOSTS:
            log.warning("listening on %s: anyone who can reach this address can use the model%s", host,
                        "" if api_key else " (no --api-key set)")
        server.serve_forever()
