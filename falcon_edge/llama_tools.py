"""llama.cpp's own command-line tools as benchmark peers: find the built binaries, run them, parse their reports.

``bench/build_llama_tools.sh`` builds ``llama-bench``, ``llama-completion`` and ``llama-speculative-simple`` from
the llama.cpp inside the pinned llama-cpp-python sdist into ``~/.cache/falcon-edge/llama-tools/<key>/bin`` and
writes the pin into ``<key>/PIN``. :func:`find_bin_dir` takes the directory whose pin matches the installed
llama-cpp-python, so the tools always run the llama.cpp our engine links.

Speeds are the tools' own decode-only figures: ``llama-completion``'s ``eval time`` line (one token per run, the
prompt excluded) and ``llama-speculative-simple``'s ``decoded N tokens in T seconds`` (timed after the prompt).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from .errors import ToolOutputError, ToolsNotFoundError

TOOLS = ("llama-bench", "llama-completion", "llama-speculative-simple")
SPEC_TYPES = ("draft-simple", "ngram-simple", "ngram-cache", "ngram-map-k")
TIMEOUT_S = 900  # one generation; a stuck tool must not hang the suite


@dataclass(frozen=True)
class ToolRun:
    """What one tool run reports.

    Attributes:
        tokens_per_s: decode speed, the prompt excluded.
        n_generated: tokens decoded.
        t_decode_s: decode time in seconds.
        n_drafted: drafted tokens (0 without speculation).
        n_accepted: drafted tokens the target accepted.
        n_cycles: target verification passes (0 where the tool does not say).
    """

    tokens_per_s: float
    n_generated: int
    t_decode_s: float
    n_drafted: int = 0
    n_accepted: int = 0
    n_cycles: int = 0


def tools_cache() -> Path:
    """The directory the build script writes into: ``$FALCON_EDGE_TOOLS_CACHE``, else the user cache."""
    if os.environ.get("FALCON_EDGE_TOOLS_CACHE"):
        return Path(os.environ["FALCON_EDGE_TOOLS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "falcon-edge" / "llama-tools"


def find_bin_dir() -> Path:
    """Returns the bin directory of tools built from the installed llama-cpp-python's llama.cpp.

    ``$FALCON_EDGE_LLAMA_TOOLS`` (a bin directory) wins over the cache.

    Raises:
        ToolsNotFoundError: no complete build for this llama-cpp-python version; the message names both.
    """
    if os.environ.get("FALCON_EDGE_LLAMA_TOOLS"):
        candidates = [Path(os.environ["FALCON_EDGE_LLAMA_TOOLS"]).expanduser()]
    else:
        pin = f"llama-cpp-python=={llama_cpp.__version__}"
        root = tools_cache()
        pinned = [d for d in sorted(root.glob("*")) if (d / "PIN").is_file() and (d / "PIN").read_text().strip() == pin]
        candidates = [d / "bin" for d in pinned]
    for bin_dir in candidates:
        if all(os.access(bin_dir / t, os.X_OK) for t in TOOLS):
            return bin_dir
    where = (", ".join(str(c) for c in candidates)
             or f"{tools_cache()} (no build for llama-cpp-python {llama_cpp.__version__})")
    raise ToolsNotFoundError(f"llama.cpp tools {', '.join(TOOLS)} not found in {where}: "
                             "run bash bench/build_llama_tools.sh")


def _run(cmd: list[str]) -> str:
    """Runs a tool and returns stdout and stderr together."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise ToolOutputError(f"{Path(cmd[0]).name} ran past {TIMEOUT_S} s") from e
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise ToolOutputError(f"{Path(cmd[0]).name} exited with code {proc.returncode}: {out[-600:]}")
    return out


def _match(pattern: str, text: str, tool: str) -> re.Match:
    m = re.search(pattern, text)
    if m is None:
        raise ToolOutputError(f"{tool}: no line matching {pattern!r} in its output: {text[-600:]}")
    return m


def parse_completion(text: str) -> ToolRun:
    """Parses ``llama-completion``'s performance report (``common_perf_print``)."""
    m = _match(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", text, "llama-completion")
    t_ms, runs = float(m.group(1)), int(m.group(2))
    if runs == 0 or t_ms <= 0:
        raise ToolOutputError(f"llama-completion decoded nothing: eval time {t_ms} ms over {runs} runs")
    return ToolRun(tokens_per_s=runs / (t_ms / 1e3), n_generated=runs, t_decode_s=t_ms / 1e3, n_cycles=runs)


def parse_speculative(text: str) -> ToolRun:
    """Parses ``llama-speculative-simple``'s summary (decode speed, drafted and accepted tokens)."""
    m = _match(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds", text, "llama-speculative-simple")
    n, t = int(m.group(1)), float(m.group(2))
    if n == 0 or t <= 0:
        raise ToolOutputError(f"llama-speculative-simple decoded nothing: {n} tokens in {t} s")
    drafted = int(_match(r"n_drafted\s*=\s*(\d+)", text, "llama-speculative-simple").group(1))
    accepted = int(_match(r"n_accept\s*=\s*(\d+)", text, "llama-speculative-simple").group(1))
    # every verification pass emits its accepted drafts plus one token of the target's own
    return ToolRun(tokens_per_s=n / t, n_generated=n, t_decode_s=t, n_drafted=drafted, n_accepted=accepted,
                   n_cycles=n - accepted)


def run_completion(bin_dir: Path, model: Path, prompt: str, n_predict: int, n_threads: int, n_ctx: int) -> ToolRun:
    """Plain greedy decoding with llama.cpp's ``llama-completion`` (raw prompt, no chat template applied).

    Args:
        bin_dir: from :func:`find_bin_dir`.
        model: target GGUF.
        prompt: the rendered chat prompt (special tokens are parsed, backslashes kept).
        n_predict, n_threads, n_ctx: tokens to generate, CPU threads, context length.
    """
    out = _run([str(bin_dir / "llama-completion"), "-m", str(model), "-p", prompt, "--no-escape", "-no-cnv",
                "-n", str(n_predict), "-t", str(n_threads), "-tb", str(n_threads), "-c", str(n_ctx),
                "--temp", "0", "--seed", "0"])
    return parse_completion(out)


def run_speculative(bin_dir: Path, model: Path, prompt: str, spec_type: str, n_predict: int, n_threads: int,
                    n_ctx: int, *, draft_model: Path | None = None, draft_n_max: int = 3) -> ToolRun:
    """Greedy speculative decoding with ``llama-speculative-simple --spec-type <spec_type>``.

    Args:
        spec_type: one of :data:`SPEC_TYPES`; ``draft-simple`` needs ``draft_model``.
        draft_model: drafter GGUF of the same vocabulary (``-md``).
        draft_n_max: most drafted tokens per pass (``--spec-draft-n-max``; llama.cpp's default is 3).
        the rest: as for :func:`run_completion`.

    Raises:
        ValueError: unknown ``spec_type``, or ``draft-simple`` without a draft model.
    """
    if spec_type not in SPEC_TYPES:
        raise ValueError(f"unknown spec type {spec_type!r}: known types are {', '.join(SPEC_TYPES)}")
    cmd = [str(bin_dir / "llama-speculative-simple"), "-m", str(model), "-p", prompt, "--no-escape",
           "-n", str(n_predict), "-t", str(n_threads), "-tb", str(n_threads), "-c", str(n_ctx),
           "--temp", "0", "--seed", "0", "--spec-type", spec_type,
           "--spec-draft-n-max", str(draft_n_max)]
    if spec_type == "draft-simple":
        if draft_model is None:
            raise ValueError(f"spec type {spec_type!r} needs a draft model, got draft_model={draft_model!r}")
        cmd += ["-md", str(draft_model), "-td", str(n_threads), "-tbd", str(n_threads)]
    return parse_speculative(_run(cmd))


def run_bench_tg(bin_dir: Path, model: Path, n_threads: int, n_gen: int = 64, n_reps: int = 3) -> dict:
    """``llama-bench`` token generation (tg<n_gen>), llama.cpp's best-case plain decoding speed.

    Returns:
        ``{"test": "tg64", "tokens_per_s": mean, "stddev": sd, "n_reps": n}``.
    """
    out = _run([str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(n_threads), "-p", "0",
                "-n", str(n_gen), "-r", str(n_reps), "-o", "json"])
    start, end = out.find("["), out.rfind("]")
    try:
        rows = json.loads(out[start:end + 1])
        row = next(r for r in rows if r.get("n_gen") == n_gen)
        return {"test": f"tg{n_gen}", "tokens_per_s": float(row["avg_ts"]), "stddev": float(row["stddev_ts"]),
                "n_reps": n_reps}
    except (ValueError, StopIteration, KeyError) as e:
        raise ToolOutputError(f"llama-bench: no tg{n_gen} row in its JSON output: {out[-600:]}") from e
