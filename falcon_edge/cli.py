"""The ``falcon-edge`` command line: demo, generate, chat, serve, bench, models, convert.

Flags mirror llama.cpp where they exist (-m, -md, -c, -ngl, -t, -n, --temp, --top-k, --top-p, --seed). Errors,
argument errors included, print one line and exit with code 2 (a traceback with --verbose).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from typing import NoReturn

from . import bench, models
from .config import RequestConfig, SamplingConfig
from .engine import EdgeFalcon
from .errors import ContextFullError, FalconEdgeError
from .server import serve

DEMO_PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring and two doctests."


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``falcon-edge generate: error: ...``) instead of usage plus error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    """argparse type of --port: a TCP port number, 0 (a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer from 0 to 65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, got {port}")
    return port


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=models.DEFAULT_TARGET, help="target: registry name or GGUF path")
    p.add_argument("-md", "--drafter", default="auto",
                   help="'auto' (default: the drafter shipped for a registry target, else none), 'ngram', "
                        "a falcon-sar drafter GGUF, or 'none'")
    p.add_argument("-c", "--ctx-size", type=int, default=4096, help="context length")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=0, help="layers offloaded to a GPU (-1: all)")


def _add_sampling_args(p: argparse.ArgumentParser, temp: float) -> None:
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens to generate at most per answer")
    p.add_argument("--temp", type=float, default=temp, help=f"temperature (0: greedy; default {temp})")
    p.add_argument("--top-k", type=int, default=40, help="keep the k most likely tokens (<= 0: all)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus probability mass kept (1: off)")
    p.add_argument("--min-p", type=float, default=0.05, help="drop tokens below min-p times the most likely (0: off)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="penalty of recently seen tokens (1: off)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one per answer)")


def _open(args) -> EdgeFalcon:
    drafter = None if args.drafter in (None, "none") else args.drafter
    return EdgeFalcon(args.model, drafter=drafter, n_ctx=args.ctx_size, n_threads=args.threads,
                      n_gpu_layers=args.n_gpu_layers, verbose=args.verbose)


def _sampling(args) -> dict:
    """Sampling keyword arguments of chat()/generate(), checked before a model is fetched or loaded."""
    kwargs = {"temperature": args.temp, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p,
              "repeat_penalty": args.repeat_penalty, "seed": args.seed}
    RequestConfig(max_tokens=args.max_tokens, sampling=SamplingConfig(**kwargs))  # raises ValueError naming the field
    return {"max_tokens": args.max_tokens, **kwargs}


def _stats_line(label: str, st: dict) -> str:
    off = "   drafter off (it could not pay here)" if st["mode"] == "falcon" and not st["drafter_joined"] else ""
    return (f"{label:<12} {st['tokens_per_second']:7.2f} tok/s   tau {st['tau']:.2f}   "
            f"accepted {st['n_accepted']}/{st['n_drafted']} drafted   {st['n_generated']} tokens{off}")


def _cli_demo(args) -> int:
    llm = _open(args)
    prompt = llm.chat_tokens([{"role": "user", "content": args.prompt}])
    print(f"> {args.prompt}\n")
    spec = None
    for chunk in llm.generate_stream(prompt, max_tokens=args.max_tokens, temperature=0.0):
        print(chunk.text, end="", flush=True)
        spec = chunk.result or spec
    llm._native_engine().reset()  # a new request, as the speculative one was: its prompt prefilled anew
    plain = llm.generate(prompt, max_tokens=args.max_tokens, temperature=0.0, speculative=False)
    spec_st, plain_st = spec.stats.as_dict(), plain.stats.as_dict()
    end_to_end = (spec.stats.n_generated / spec.stats.t_total_s) / (plain.stats.n_generated / plain.stats.t_total_s)
    print("\n")
    print(_stats_line(f"{llm.mode}:", spec_st))
    print(_stats_line("plain:", plain_st))
    print(f"speedup {spec_st['tokens_per_second'] / plain_st['tokens_per_second']:.2f}x decoding, {end_to_end:.2f}x "
          f"with the prefill (same engine, greedy, {_comparison(llm, prompt, plain.tokens, spec.tokens)})")
    return 0


def _comparison(llm: EdgeFalcon, prompt: list[int], plain: list[int], spec: list[int]) -> str:
    """How the speculative answer compares with the plain one, as the demo's last line says it."""
    d = bench.divergence(llm, prompt, plain, spec)
    if d is None:
        return "identical output"
    where = f"the answers part at token {d['at']} of {len(plain)}"
    if d["gap"] is None:
        return where
    return (f"{where}, where the target's top two logits are {d['gap']:.3f} apart: a near-tie, which batched and "
            "one-token CPU kernels can round apart (docs/benchmarks.md)")


def _cli_generate(args) -> int:
    sampling = _sampling(args)
    llm = _open(args)
    res = llm.generate(args.prompt, stop=args.stop or None, **sampling)
    print(res.text)
    st = res.stats.as_dict()
    print(_stats_line(f"{llm.mode}:", st), file=sys.stderr)
    return 0


def _cli_chat(args) -> int:
    """The chat loop. A turn that does not fit in the context is dropped (the conversation goes on); Ctrl-C stops a
    reply, keeping what was shown of it; Ctrl-C or Ctrl-D at the prompt quits."""
    sampling = _sampling(args)
    llm = _open(args)
    history: list[dict] = []
    print("falcon-edge chat: /reset clears the conversation, /stats shows the last turn's statistics, "
          "Ctrl-C stops a reply, Ctrl-D quits")
    last = None
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip() == "/reset":
            history.clear()
            continue
        if line.strip() == "/stats":
            print(_stats_line(f"{llm.mode}:", last) if last else "no turn yet")
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        reply = []
        try:
            # closing the stream stops the generation, also when Ctrl-C lands between two chunks
            with contextlib.closing(llm.chat(history, stream=True, **sampling)) as chunks:
                for chunk in chunks:
                    text = chunk["choices"][0]["delta"].get("content", "")
                    reply.append(text)
                    print(text, end="", flush=True)
                    last = chunk.get("falcon", last)
        except ContextFullError as e:
            history.pop()
            if any(reply):  # the engine ran out of room mid-reply: end the reply's line first
                print()
            print(f"{e} (message dropped; /reset clears the conversation)")
            continue
        except KeyboardInterrupt:
            pass  # the reply ends where it was stopped
        print()
        history.append({"role": "assistant", "content": "".join(reply)})


def _cli_serve(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    serve(_open(args), args.host, args.port, api_key=args.api_key)
    return 0


def _add_torch_cli(sub, name: str, module: str, help: str) -> None:
    """Registers subcommand `name` from falcon_edge.<module>.add_cli; without torch, one that says what to install."""
    try:
        add_cli = importlib.import_module(f".{module}", __package__).add_cli
    except ImportError as e:
        p = sub.add_parser(name, help=f"{help} (needs falcon-edge[train])")
        p.set_defaults(func=lambda args, error=e: _missing_extra(name, error))  # `e` is unbound after the block
        return
    add_cli(sub)


def _missing_extra(name: str, e: ImportError) -> int:
    raise ValueError(f"falcon-edge {name} needs torch ({e}): pip install 'falcon-edge[train]'")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="falcon-edge", description="Falcon speculative decoding on llama.cpp / GGUF")
    parser.add_argument("--verbose", action="store_true", help="llama.cpp logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="answer a chat prompt with the default target, speculative vs plain")
    _add_model_args(p)
    p.add_argument("-p", "--prompt", default=DEMO_PROMPT, help="the user message (default: a Fibonacci task)")
    p.add_argument("-n", "--max-tokens", type=int, default=192, help="tokens to generate at most")
    p.set_defaults(func=_cli_demo)

    p = sub.add_parser("generate", help="complete a raw prompt")
    _add_model_args(p)
    _add_sampling_args(p, temp=0.0)
    p.add_argument("-p", "--prompt", required=True, help="the text to complete (special tokens are parsed)")
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.set_defaults(func=_cli_generate)

    p = sub.add_parser("chat", help="interactive multi-turn chat with streaming")
    _add_model_args(p)
    _add_sampling_args(p, temp=0.2)
    p.set_defaults(func=_cli_chat)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions)")
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="IPv4 address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the model)")
    p.add_argument("--port", type=_port, default=8080, help="TCP port (0: a free one; default 8080)")
    p.add_argument("--api-key", default=os.environ.get("FALCON_EDGE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $FALCON_EDGE_API_KEY, else no key)")
    p.set_defaults(func=_cli_serve)

    bench.add_cli(sub)
    models.add_cli(sub)
    _add_torch_cli(sub, "convert", "convert", "drafter checkpoint -> falcon-sar GGUF")
    _add_torch_cli(sub, "train", "train.trainer", "train a Falcon drafter")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FalconEdgeError, ValueError, OSError) as e:
        if args.verbose:
            raise
        print(f"falcon-edge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
