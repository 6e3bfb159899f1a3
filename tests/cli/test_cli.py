"""``falcon-edge`` run as a user runs it: a subprocess of this interpreter, outside the source tree."""

from __future__ import annotations

import argparse
import builtins
import http.client
import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from falcon_edge import EdgeFalcon
from falcon_edge.cli import build_parser, main

MODEL = "smollm2-135m-instruct"
QUICK = ["-m", MODEL, "-md", "none", "-t", "1", "-n", "8", "--temp", "0"]  # plain greedy, one thread, 8 tokens


@pytest.fixture(scope="module")
def cwd(tmp_path_factory):
    """An empty working directory: the package must come from site-packages, never from the source tree."""
    return tmp_path_factory.mktemp("cli")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "falcon_edge.cli", *args]


def run_cli(cwd, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), cwd=cwd, input=stdin, capture_output=True, text=True, timeout=300,
                          check=False)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for sub in _subcommands(parser).values():
        yield from _all_parsers(sub)


# ---- help ----


def test_every_flag_has_help():
    for parser in _all_parsers(build_parser()):
        for action in parser._actions:
            # a subcommand group is documented by its subcommands' helps
            documented = action._choices_actions if isinstance(action, argparse._SubParsersAction) else [action]
            for a in documented:
                assert a.help and a.help != argparse.SUPPRESS, f"{parser.prog}: {a.dest} has no help"


@pytest.mark.parametrize("command", [None, *_subcommands(build_parser())])
def test_help_lists_every_flag(cwd, command):
    parser = build_parser()
    args = ["--help"] if command is None else [command, "--help"]
    if command is not None:
        parser = _subcommands(parser)[command]
    out = run_cli(cwd, *args)
    assert out.returncode == 0, out.stderr
    for action in parser._actions:
        for option in action.option_strings:
            assert option in out.stdout, f"{parser.prog} --help does not mention {option}"
    for name in _subcommands(parser):
        assert name in out.stdout


# ---- commands ----


def test_models_list(cwd, smollm_path):
    out = run_cli(cwd, "models", "list")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith(MODEL))
    assert " yes " in row  # the fixture fetched it


def test_generate_matches_engine(cwd, smollm_path):
    out = run_cli(cwd, "generate", *QUICK, "-p", "def fib(n):")
    assert out.returncode == 0, out.stderr
    with EdgeFalcon(MODEL, n_threads=1) as llm:
        ref = llm.generate("def fib(n):", max_tokens=8, temperature=0)
    assert out.stdout == ref.text + "\n"
    assert re.search(r"plain: +[\d.]+ tok/s", out.stderr)


def test_demo_says_whether_the_answers_are_identical(cwd, smollm_path):
    prompt = "Name three primary colors."
    out = run_cli(cwd, "demo", "-m", MODEL, "-t", "1", "-n", "24", "-p", prompt)
    assert out.returncode == 0, out.stderr
    head = f"> {prompt}\n\n"
    assert out.stdout.startswith(head), out.stdout
    answer, stats = out.stdout[len(head):].rsplit("\n\n", 1)
    spec_line, plain_line, last = stats.splitlines()
    assert re.match(r"falcon: +[\d.]+ tok/s", spec_line) and re.match(r"plain: +[\d.]+ tok/s", plain_line), stats
    with EdgeFalcon(MODEL, n_threads=1) as llm:
        spec = llm.chat([{"role": "user", "content": prompt}], max_tokens=24, temperature=0)
        plain = llm.chat([{"role": "user", "content": prompt}], max_tokens=24, temperature=0, speculative=False)
    # a fresh engine on this device decides as the CLI's did whether the drafter joins; the line says when it did not
    assert spec_line.endswith("drafter off (it could not pay here)") == (not spec["falcon"]["drafter_joined"]), spec_line
    # both runs are new requests, so the ratio with the prefill counted compares like with like
    assert re.match(r"speedup [\d.]+x decoding, [\d.]+x with the prefill \(same engine, greedy, ", last), last
    if answer == plain["choices"][0]["message"]["content"]:
        assert last.endswith("(same engine, greedy, identical output)"), last
    else:
        assert re.search(r"the answers part at token \d+ of \d+", last), (answer, last)


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "-m", "no-such-model", "-p", "x"], "no-such-model"),
        (["generate", "-m", MODEL, "-p", "x", "--temp", "abc"], "--temp"),
        (["generate", "-m", MODEL, "-p", "x", "--temp", "-1"], "temperature"),
        (["generate", "-m", MODEL], "-p/--prompt"),
        (["chat", "-m", MODEL, "-n", "0"], "max_tokens"),
        (["serve", "-m", MODEL, "--port", "70000"], "port must be from 0 to 65535, got 70000"),
        (["serve", "-m", MODEL, "--port", "-1"], "port must be from 0 to 65535, got -1"),
        (["serve", "-m", MODEL, "--port", "http"], "port must be an integer from 0 to 65535, got 'http'"),
        (["bench", "-m", MODEL, "--n-prompts", "0"], "number of prompts must be >= 1, got 0"),
        (["bench", "--suite", "peers", "-m", MODEL, "--n-prompts", "-1"], "number of prompts must be >= 1, got -1"),
        (["no-such-command"], "no-such-command"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(cwd, smollm_path, args, message):
    out = run_cli(cwd, *args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("falcon-edge") and "error:" in lines[0] and message in lines[0]


def test_chat_repl(cwd, smollm_path):
    # /stats before a turn, a turn, /stats, /reset, the same question again, then end of input
    out = run_cli(cwd, "chat", *QUICK, stdin="/stats\nHi\n/stats\n/reset\nHi\n")
    assert out.returncode == 0, out.stderr
    banner, *turns = out.stdout.split("> ")
    assert "/reset" in banner and "/stats" in banner
    outputs = [t.strip() for t in turns if t.strip()]
    assert len(outputs) == 4, out.stdout
    assert outputs[0] == "no turn yet"
    assert re.match(r"plain: +[\d.]+ tok/s", outputs[2])
    assert outputs[1] == outputs[3] != ""  # after /reset the same question gets the same greedy answer
    assert "Traceback" not in out.stderr


def _type_lines(monkeypatch, lines: list[str], end: type[BaseException]) -> None:
    """input() returns ``lines`` one by one as a user types them, then raises ``end`` (EOFError: Ctrl-D,
    KeyboardInterrupt: Ctrl-C)."""
    typed = iter(lines)

    def typed_input(prompt: str = "") -> str:
        print(prompt, end="")
        line = next(typed, None)
        if line is None:
            raise end
        return line

    monkeypatch.setattr(builtins, "input", typed_input)


def test_chat_drops_a_message_that_does_not_fit_and_goes_on(smollm_path, monkeypatch, capsys):
    # n_ctx 256: "Hi" fits (31 prompt tokens), 300 words do not; once they are dropped, a second "Hi" fits again.
    # Ctrl-C at the prompt then quits like end of input.
    _type_lines(monkeypatch, ["Hi", "word " * 300, "Hi", "/stats"], KeyboardInterrupt)
    assert main(["chat", *QUICK, "-c", "256"]) == 0
    out = capsys.readouterr().out
    full = [line for line in out.splitlines() if "does not fit" in line]
    assert len(full) == 1, out  # a kept message would make the second "Hi" overflow too
    assert "n_ctx 256" in full[0] and "/reset" in full[0]
    assert re.search(r"> plain: +[\d.]+ tok/s", out), out  # /stats after the turn that followed the dropped one


def test_chat_ctrl_c_stops_the_reply_and_the_chat_goes_on(cwd, smollm_path):
    command = _command("chat", "-m", MODEL, "-md", "none", "-t", "1", "-n", "1000", "--temp", "0")
    with subprocess.Popen(command, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          bufsize=0) as proc:
        proc.stdin.write(b"Count from 1 to 500, one number per line.\n")
        shown = b""
        while len(shown.partition(b"> ")[2].strip()) < 8:  # the banner, the prompt, then the reply's first tokens
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            piece = os.read(proc.stdout.fileno(), 4096) if ready else b""
            assert piece, f"no reply: {shown!r}"
            shown += piece
        proc.send_signal(signal.SIGINT)  # Ctrl-C, the way a user stops a reply
        out, err = proc.communicate(b"/stats\n", timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    # the chat went on to /stats, and the stopped reply, which never reached its end, left no statistics
    assert (shown + out).decode().rstrip().endswith("> no turn yet\n>"), (shown + out).decode()


def test_serve(cwd, smollm_path):
    command = _command("serve", "-m", MODEL, "-md", "none", "-t", "1", "-c", "512", "--port", "0")
    lines: queue.Queue = queue.Queue()
    with subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, text=True) as proc:
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
        reader.start()
        try:
            url = None
            while url is None:
                url = re.search(r"on http://127\.0\.0\.1:(\d+)/v1", lines.get(timeout=120))
            conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=60)
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["data"][0]["id"] == MODEL
            conn.close()
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C, the way a user stops it
            proc.wait(timeout=60)
            reader.join()
    log = "".join(lines.queue)
    assert proc.returncode == 130, log
    assert "Traceback" not in log
