"""The OpenAI-compatible server, driven by the official openai client: results, streaming, errors, queueing."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

pytestmark = pytest.mark.model

MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Name three colors."}]
GREEDY = {"model": MODEL, "temperature": 0, "max_tokens": 16}


def _raw(server, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, dict]:
    """Status, headers and JSON body of one request sent with http.client (no client-side checks)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), json.loads(resp.read())
    finally:
        conn.close()


def _chat_text(client: openai.OpenAI, stream: bool, **kwargs) -> str:
    if not stream:
        return client.chat.completions.create(messages=MESSAGES, **kwargs).choices[0].message.content
    with client.chat.completions.create(messages=MESSAGES, stream=True, **kwargs) as chunks:
        return "".join(c.choices[0].delta.content or "" for c in chunks)


# ---- results ----


def test_chat_matches_engine_greedy(server, client):
    resp = client.chat.completions.create(messages=MESSAGES, **GREEDY)
    with server.generation_lock:
        ref = server.llm.chat(MESSAGES, temperature=0, max_tokens=16)
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == ref["choices"][0]["message"]["content"] != ""
    assert resp.choices[0].finish_reason == ref["choices"][0]["finish_reason"]
    assert resp.usage.model_dump(exclude_none=True) == ref["usage"]
    falcon = resp.model_extra["falcon"]
    assert falcon["mode"] == "ngram"
    assert falcon["n_generated"] == resp.usage.completion_tokens


def test_chat_stream_matches_non_streaming(client):
    whole = _chat_text(client, stream=False, **GREEDY)
    with client.chat.completions.create(messages=MESSAGES, stream=True, **GREEDY) as stream:
        chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert last.model_extra["falcon"]["n_generated"] == last.usage.completion_tokens


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_stream_include_usage_ends_with_a_usage_chunk(client, api):
    # OpenAI's form: every chunk but the last has usage null; the last has no choices and the usage of the request
    options = {"stream": True, "stream_options": {"include_usage": True}, **GREEDY}
    if api == "chat":
        whole = client.chat.completions.create(messages=MESSAGES, **GREEDY)
        stream = client.chat.completions.create(messages=MESSAGES, **options)
    else:
        whole = client.completions.create(prompt="Name three colors.", **GREEDY)
        stream = client.completions.create(prompt="Name three colors.", **options)
    with stream:
        chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason


@pytest.mark.parametrize("options, match", [
    ({"include_usage": "yes"}, "stream_options.include_usage must be a boolean, got 'yes'"),
    ([True], "stream_options must be an object, got [True]"),
])
def test_bad_stream_options_are_400(server, options, match):
    body = {"messages": MESSAGES, "max_tokens": 2, "stream": True, "stream_options": options}
    status, _, got = _raw(server, "POST", "/v1/chat/completions", json.dumps(body).encode())
    assert (status, got["error"]["message"]) == (400, match)


def test_stream_options_without_stream_are_400(server):
    body = {"messages": MESSAGES, "max_tokens": 2, "stream_options": {"include_usage": True}}
    status, _, got = _raw(server, "POST", "/v1/chat/completions", json.dumps(body).encode())
    assert (status, got["error"]["message"]) == (400, "stream_options is only allowed with stream true, got stream None")


def test_completions_match_engine_greedy(server, client):
    prompt = "def fibonacci(n):"
    resp = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=12)
    with server.generation_lock:
        ref = server.llm.generate(prompt, temperature=0, max_tokens=12)
    assert resp.object == "text_completion"
    assert resp.choices[0].text == ref.text != ""
    assert resp.choices[0].finish_reason == ref.finish_reason
    assert resp.usage.completion_tokens == len(ref.tokens)
    assert resp.model_extra["falcon"]["n_prompt"] == resp.usage.prompt_tokens
    with client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=12, stream=True) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == ref.text
    assert chunks[-1].choices[0].finish_reason == ref.finish_reason
    assert "falcon" in chunks[-1].model_extra


def test_chat_content_parts_are_joined_text(client):
    # OpenAI clients may send a message's content as a list of text parts; it means the same as the joined string
    parts = [{"type": "text", "text": "Name three"}, {"type": "text", "text": "colors."}]
    got = client.chat.completions.create(messages=[{"role": "user", "content": parts}], **GREEDY)
    want = client.chat.completions.create(messages=[{"role": "user", "content": "Name three\ncolors."}], **GREEDY)
    assert got.choices[0].message.content == want.choices[0].message.content != ""
    with pytest.raises(openai.BadRequestError, match="image_url") as e:
        client.chat.completions.create(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}], **GREEDY)
    assert e.value.code == "invalid_value"


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert _raw(server, "GET", "/health")[::2] == (200, {"status": "ok"})


def test_model_field_is_lenient(server, client):
    # the file name is accepted as well as the registry name, and a request may leave the model out
    resp = client.chat.completions.create(model=server.llm.target_path.name, messages=MESSAGES, max_tokens=2)
    assert resp.choices[0].message.content
    status, _, body = _raw(server, "POST", "/v1/chat/completions",
                           json.dumps({"messages": MESSAGES, "max_tokens": 2}).encode())
    assert status == 200
    assert body["object"] == "chat.completion"


# ---- errors ----


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError, match="gpt-4o") as e:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert e.value.code == "model_not_found"


@pytest.mark.parametrize(
    "params, match",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 2}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n must be 1"),
        ({"messages": [{"role": "user"}]}, "message 0"),
    ],
)
def test_bad_parameters_are_400(client, params, match):
    with pytest.raises(openai.BadRequestError, match=match) as e:
        client.chat.completions.create(**{"model": MODEL, "messages": MESSAGES, **params})
    assert e.value.code == "invalid_value"


@pytest.mark.parametrize("stream", [False, True])
def test_oversize_prompt_is_400(client, llm, stream):
    messages = [{"role": "user", "content": "word " * llm.context.n_ctx}]
    with pytest.raises(openai.BadRequestError, match="n_ctx") as e:
        client.chat.completions.create(model=MODEL, messages=messages, stream=stream)
    assert e.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("POST", "/v1/chat/completions", b"{not json", 400, "invalid_json"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "invalid_json"),
        ("POST", "/v1/completions", b'{"prompt": 5}', 400, "invalid_value"),
        ("GET", "/v2/chat/completions", None, 404, "not_found"),
        ("DELETE", "/v1/models", None, 405, "method_not_allowed"),
    ],
)
def test_http_errors(server, method, path, body, status, code):
    got_status, headers, got = _raw(server, method, path, body)
    assert got_status == status
    assert set(got["error"]) == {"message", "type", "code"}
    assert got["error"]["code"] == code
    assert headers["Content-Type"] == "application/json"


def test_bad_model_field_is_400_naming_it(server):
    status, _, body = _raw(server, "POST", "/v1/chat/completions",
                           json.dumps({"model": ["x"], "messages": MESSAGES, "max_tokens": 2}).encode())
    assert (status, body["error"]["code"]) == (400, "invalid_value")
    assert body["error"]["message"] == "model must be a string, got ['x']"


def test_wrong_method_names_the_allowed_one(server):
    status, headers, body = _raw(server, "GET", "/v1/chat/completions")
    assert status == 405
    assert headers["Allow"] == "POST, OPTIONS"
    assert "use POST, OPTIONS" in body["error"]["message"]


def test_head_answers_get_headers_without_a_body(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=120)
    try:
        conn.request("HEAD", "/v1/models")
        head = conn.getresponse()
        assert (head.status, head.read()) == (200, b"")
        # the same connection goes on: no stray body was sent after the headers
        conn.request("GET", "/v1/models")
        get = conn.getresponse()
        body = get.read()
        assert get.status == 200 and json.loads(body)["data"][0]["id"] == MODEL
        assert head.getheader("Content-Length") == str(len(body))
    finally:
        conn.close()


@pytest.mark.parametrize("path, allowed", [("/health", "GET, HEAD, OPTIONS"), ("/v1/completions", "POST, OPTIONS")])
def test_options_lists_the_allowed_methods(server, path, allowed):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=120)
    try:
        conn.request("OPTIONS", path)
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("Allow"), resp.read()) == (204, allowed, b"")
    finally:
        conn.close()


def test_api_key(make_server):
    server = make_server(api_key="secret")
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0) as c, \
            pytest.raises(openai.AuthenticationError) as e:
        c.models.list()
    assert e.value.code == "invalid_api_key"
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="secret", max_retries=0) as c:
        assert [m.id for m in c.models.list()] == [MODEL]
    assert _raw(server, "GET", "/health")[0] == 200  # probes need no key


# ---- connections ----


def test_disconnect_mid_stream_stops_generation(server, client, caplog):
    caplog.set_level(logging.INFO, logger="falcon_edge.server")
    # a counting prompt keeps the model going far past the moment the client hangs up
    body = json.dumps({"prompt": "1, 2, 3, 4, 5,", "max_tokens": 400, "temperature": 0, "stream": True}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(server.server_address[:2], timeout=120) as sock:
        sock.sendall(head + body)
        received = b""
        while received.count(b"data: ") < 3:
            chunk = sock.recv(4096)
            assert chunk, f"stream ended early: {received!r}"
            received += chunk
    deadline = time.monotonic() + 60
    while "disconnected: generation stopped" not in caplog.text:
        assert time.monotonic() < deadline, "the server did not notice the disconnect"
        time.sleep(0.05)
    resp = client.completions.create(model=MODEL, prompt="Hello", max_tokens=4)
    assert resp.choices[0].text


def test_parallel_clients_are_queued(server, client):
    def ask(stream: bool) -> str:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
            return _chat_text(c, stream=stream, **GREEDY)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(ask, [True, False]))
    assert answers[0] == answers[1] == _chat_text(client, stream=False, **GREEDY) != ""
