"""The peers suite: one GGUF target decoded by every method people use today, greedy, same prompts, same threads.

Methods (:data:`METHODS`): plain decoding in our own loop (the baseline every ratio is taken against), falcon-edge
speculation with the shipped Falcon drafter (and, on request, our n-gram trees), llama-cpp-python's ``Llama`` at
temperature 0 and with its ``LlamaPromptLookupDecoding``, and llama.cpp's own tools (``llama-completion`` plain,
``llama-speculative-simple`` with ``draft-simple`` and the n-gram modes; see :mod:`falcon_edge.llama_tools`).

Every prompt is rendered once with the target's chat template; the in-process methods get the same token ids, the
tools the same text (special tokens parsed). For each prompt the methods run back to back, so background load hits
them alike. Speed counts decoding only: the prefill is excluded everywhere (in-process: from the first emitted
token on; tools: their own decode-only timers). Ratios against plain from the same run are the claim; absolute
tokens/s are context.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llama_cpp import Llama
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
from tqdm import tqdm

from . import __version__, drafters, host, llama_tools, models
from .datasets import load_prompts
from .engine import EdgeFalcon
from .errors import ToolOutputError, ToolsNotFoundError

# llama-cpp-python's README: "10 is the default and generally good for gpu, 2 performs better for cpu-only machines"
PLD_NUM_PRED_TOKENS = 2
PLD_MAX_NGRAM_SIZE = 2
DRAFT_N_MAX = 3  # llama.cpp's default --spec-draft-n-max, and the best of 3/5/8 on the project's CPU (peers §2.4)
VERIFY_COST_N_MAX = 16
VERIFY_COST_REPS = 3
VERIFY_COST_DEPTH = 128
WARMUP_TOKENS = 4


@dataclass(frozen=True)
class PeerMethod:
    """One way of decoding the target.

    Attributes:
        name: identifier used on the command line and in the JSON (``--methods``).
        label: what runs, for the report.
        tool: whether it runs one of llama.cpp's tools (skipped when they are not built).
        speculative: whether τ and acceptance apply.
    """

    name: str
    label: str
    tool: bool
    speculative: bool


METHODS = {m.name: m for m in (
    PeerMethod("plain", "falcon-edge, speculative=False (our loop, the baseline)", False, False),
    PeerMethod("falcon", "falcon-edge, shipped Falcon drafter, trees sized from c(N)", False, True),
    PeerMethod("edge-ngram", "falcon-edge, n-gram trees from the context", False, True),
    PeerMethod("llama-cpp-python", "llama-cpp-python Llama, temperature 0", False, False),
    PeerMethod("llama-cpp-python-pld",
               f"llama-cpp-python LlamaPromptLookupDecoding(max_ngram_size={PLD_MAX_NGRAM_SIZE}, "
               f"num_pred_tokens={PLD_NUM_PRED_TOKENS}), logits_all=True", False, True),
    PeerMethod("llama-completion", "llama.cpp llama-completion (plain)", True, False),
    PeerMethod("spec-draft-simple",
               f"llama-speculative-simple --spec-type draft-simple, small LM drafter, n-max {DRAFT_N_MAX}", True, True),
    PeerMethod("spec-ngram-simple", "llama-speculative-simple --spec-type ngram-simple", True, True),
    PeerMethod("spec-ngram-cache", "llama-speculative-simple --spec-type ngram-cache", True, True),
    PeerMethod("spec-ngram-map-k", "llama-speculative-simple --spec-type ngram-map-k", True, True),
)}
DEFAULT_METHODS = tuple(n for n in METHODS if n != "edge-ngram")
SMALL_DRAFTERS = {"qwen2.5-coder": "qwen2.5-coder-0.5b-instruct"}  # target family -> registry drafter, same vocab


class MethodUnavailable(Exception):
    """A method cannot run on this target or machine; its message is the reason written into the report."""


@dataclass(frozen=True)
class Settings:
    """What every method shares.

    Attributes:
        target: target GGUF.
        n_threads: CPU threads of every method (tools: ``-t``, ``-tb``, ``-td``).
        n_ctx: context length of every method.
        max_tokens: tokens generated per prompt at most.
        falcon_drafter: falcon-sar drafter GGUF for ``falcon`` (None: that method is unavailable).
        draft_model: small LM of the target's vocabulary for ``spec-draft-simple`` (None: unavailable).
    """

    target: Path
    n_threads: int
    n_ctx: int
    max_tokens: int
    falcon_drafter: Path | None
    draft_model: Path | None


# tokens_per_s, n_generated, n_decoded (tokens inside the decode timer), t_decode_s, n_drafted, n_accepted, n_cycles,
# and the text for the in-process methods
Row = dict
Runner = Callable[[str, list[int]], Row]  # (rendered prompt, its token ids) -> row


def small_drafter(target: Path) -> Path | None:
    """A registry LM of the target's vocabulary that is smaller than the target (fetched on first use), if any."""
    stem = target.name.lower()
    for family, name in SMALL_DRAFTERS.items():
        if family in stem and not stem.startswith(name):
            return models.fetch(name)
    return None


def _edge_row(res) -> Row:
    st = res.stats
    t = st.t_total_s - st.t_prefill_s
    # as the other peers count: the first token comes from the prefill, an end-of-generation token was decoded too
    n_decoded = max(st.n_generated + (res.finish_reason == "stop") - 1, 0)
    return {"tokens_per_s": n_decoded / t if t > 0 else 0.0, "n_generated": st.n_generated,
            "n_decoded": n_decoded, "t_decode_s": t, "n_drafted": st.n_drafted, "n_accepted": st.n_accepted,
            "n_cycles": st.n_cycles, "text": res.text}


def _edge_runner(llm: EdgeFalcon, speculative: bool, max_tokens: int) -> Runner:
    llm.generate("Hello", max_tokens=WARMUP_TOKENS, speculative=speculative)
    return lambda _text, tokens: _edge_row(llm.generate(tokens, max_tokens=max_tokens, speculative=speculative))


class _CountingLookup(LlamaPromptLookupDecoding):
    """llama-cpp-python's prompt lookup, counting its calls (one per verification pass) and drafted tokens."""

    def __init__(self, max_ngram_size: int, num_pred_tokens: int):
        super().__init__(max_ngram_size=max_ngram_size, num_pred_tokens=num_pred_tokens)
        self.n_calls = 0
        self.n_drafted = 0

    def __call__(self, input_ids, /, **kwargs):
        draft = super().__call__(input_ids, **kwargs)
        self.n_calls += 1
        self.n_drafted += len(draft)
        return draft


class _LlamaCppPeer:
    """llama-cpp-python's own generation loop (``Llama.generate``), timed from its first emitted token to its last.

    Args:
        s: the shared settings.
        is_eog: whether a token ends the generation (the target's vocabulary).
        pld: draft with :class:`_CountingLookup` (prompt lookup decoding).
    """

    def __init__(self, s: Settings, is_eog: Callable[[int], bool], pld: bool):
        self.is_eog = is_eog
        self.max_tokens = s.max_tokens
        self.draft = _CountingLookup(PLD_MAX_NGRAM_SIZE, PLD_NUM_PRED_TOKENS) if pld else None
        # a draft model needs logits_all=True in the constructor (llama-cpp-notes.md §6: scores has n_batch rows else)
        self.llm = Llama(model_path=str(s.target), n_ctx=s.n_ctx, n_threads=s.n_threads, n_threads_batch=s.n_threads,
                         logits_all=pld, draft_model=self.draft, verbose=False)
        self.generate(self.llm.tokenize(b"Hello"), WARMUP_TOKENS)

    def __call__(self, _text: str, tokens: list[int]) -> Row:
        return self.generate(tokens, self.max_tokens)

    def generate(self, tokens: list[int], max_tokens: int) -> Row:
        """Greedy generation of at most ``max_tokens`` after ``tokens``; returns the row of :data:`Row`."""
        calls0, drafted0 = (self.draft.n_calls, self.draft.n_drafted) if self.draft else (0, 0)
        out: list[int] = []
        n_emitted = 0  # the end-of-generation token included: its decode is timed too
        t_first = t_last = time.perf_counter()
        for tok in self.llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):
            t_last = time.perf_counter()
            n_emitted += 1
            if n_emitted == 1:
                t_first = t_last
            if self.is_eog(tok):
                break
            out.append(tok)
            if len(out) == max_tokens:
                break
        t = t_last - t_first
        n_decoded = max(n_emitted - 1, 0)  # the first token comes from the prefill
        cycles = (self.draft.n_calls - calls0) if self.draft else n_decoded
        return {"tokens_per_s": n_decoded / t if t > 0 else 0.0, "n_generated": len(out), "n_decoded": n_decoded,
                "t_decode_s": t, "n_drafted": (self.draft.n_drafted - drafted0) if self.draft else 0,
                "n_accepted": max(n_decoded - cycles, 0), "n_cycles": cycles,
                "text": self.llm.detokenize(out).decode("utf-8", "replace")}


def _tool_runner(name: str, s: Settings, bin_dir: Path) -> Runner:
    def as_row(r: llama_tools.ToolRun) -> Row:
        return {"tokens_per_s": r.tokens_per_s, "n_generated": r.n_generated, "n_decoded": r.n_generated,
                "t_decode_s": r.t_decode_s,
                "n_drafted": r.n_drafted, "n_accepted": r.n_accepted, "n_cycles": r.n_cycles}

    if name == "llama-completion":
        return lambda text, _tokens: as_row(llama_tools.run_completion(bin_dir, s.target, text, s.max_tokens,
                                                                       s.n_threads, s.n_ctx))
    spec_type = name.removeprefix("spec-")
    if spec_type == "draft-simple" and s.draft_model is None:
        raise MethodUnavailable(f"no registry LM of the vocabulary of {s.target.name} smaller than it to draft with")
    return lambda text, _tokens: as_row(llama_tools.run_speculative(
        bin_dir, s.target, text, spec_type, s.max_tokens, s.n_threads, s.n_ctx, draft_model=s.draft_model,
        draft_n_max=DRAFT_N_MAX))


def _open_runners(names: list[str], s: Settings, plain: EdgeFalcon) -> tuple[dict[str, Runner], dict[str, str]]:
    """Opens every method; returns the runners and, for the ones that cannot run here, the reason."""
    runners: dict[str, Runner] = {}
    skipped: dict[str, str] = {}
    try:
        bin_dir: Path | None = llama_tools.find_bin_dir()
        tools_error = ""
    except ToolsNotFoundError as e:
        bin_dir, tools_error = None, str(e)
    is_eog = plain._native_engine().is_eog
    for name in names:
        try:
            if name == "plain":
                runners[name] = _edge_runner(plain, False, s.max_tokens)
            elif name == "falcon":
                if s.falcon_drafter is None:
                    raise MethodUnavailable(f"no shipped Falcon drafter for {s.target.name}")
                llm = EdgeFalcon(s.target, drafter=s.falcon_drafter, n_ctx=s.n_ctx, n_threads=s.n_threads)
                runners[name] = _edge_runner(llm, True, s.max_tokens)
            elif name == "edge-ngram":
                llm = EdgeFalcon(s.target, drafter="ngram", n_ctx=s.n_ctx, n_threads=s.n_threads)
                runners[name] = _edge_runner(llm, True, s.max_tokens)
            elif name in ("llama-cpp-python", "llama-cpp-python-pld"):
                runners[name] = _LlamaCppPeer(s, is_eog, pld=name.endswith("-pld"))
            elif bin_dir is None:
                raise MethodUnavailable(tools_error)
            else:
                runners[name] = _tool_runner(name, s, bin_dir)
        except MethodUnavailable as e:
            skipped[name] = str(e)
    return runners, skipped


def _rate(rows: list[dict], method: str) -> float:
    """Decode speed of ``method`` over all prompts: decoded tokens over decode time."""
    t = sum(r["results"][method]["t_decode_s"] for r in rows)
    return sum(r["results"][method]["n_decoded"] for r in rows) / t if t > 0 else 0.0


def summarize(rows: list[dict], name: str, baseline: str = "plain") -> dict:
    """Per-dataset summary of one method: speed over all prompts, ratio to ``baseline``, τ, acceptance.

    τ counts the target's own token (mean tokens per verification pass); acceptance is accepted / drafted.
    """
    cycles = sum(r["results"][name]["n_cycles"] for r in rows)
    accepted = sum(r["results"][name]["n_accepted"] for r in rows)
    drafted = sum(r["results"][name]["n_drafted"] for r in rows)
    tokens_per_s = _rate(rows, name)
    base = _rate(rows, baseline) if all(baseline in r["results"] for r in rows) else 0.0
    summary = {
        "tokens_per_s": tokens_per_s,
        "ratio_to_plain": tokens_per_s / base if base > 0 else None,
        "tau": (accepted + cycles) / cycles if METHODS[name].speculative and cycles else None,
        "acceptance": accepted / drafted if METHODS[name].speculative and drafted else None,
        "n_drafted": drafted,
        "n_generated": sum(r["results"][name]["n_generated"] for r in rows),
    }
    if all("text" in r["results"][name] and "text" in r["results"].get(baseline, {}) for r in rows):
        summary["same_text_as_plain"] = sum(r["results"][name]["text"] == r["results"][baseline]["text"] for r in rows)
    return summary


def run(target: str, datasets: list[str], n_prompts: int, max_tokens: int, *, n_threads: int | None = None,
        methods: list[str] | None = None, falcon_drafter: str | None = "auto", draft_model: str | None = "auto",
        n_ctx: int = 2048, commit: str = "unknown", first_prompt: int = 0, progress: bool = True) -> dict:
    """Runs the peers suite on one target and returns the report (JSON-ready; see docs/benchmarks.md).

    A method whose llama.cpp tool fails on a prompt (:class:`ToolOutputError`) is dropped from the whole report, its
    results on earlier prompts included, and ``skipped`` gives the prompt and the tool's error; the others go on.

    Args:
        target: registry name or GGUF path.
        datasets, n_prompts, max_tokens: prompt sets (:data:`falcon_edge.datasets.DATASETS`), prompts per set,
            tokens per prompt.
        n_threads: CPU threads of every method (None: all cores).
        methods: subset of :data:`METHODS` (None: :data:`DEFAULT_METHODS`); ``plain`` always runs.
        falcon_drafter: drafter GGUF for ``falcon``; ``"auto"``: the installed drafter shipped for the target
            (:func:`falcon_edge.drafters.shipped_drafter_for_file`); None: none.
        draft_model: small LM for ``spec-draft-simple``; ``"auto"``: see :func:`small_drafter`; None: none.
        n_ctx: context length of every method.
        commit: the source revision, written into the report.
        first_prompt: 0-based index of each set's first prompt.

    Raises:
        ValueError: an unknown method name, bad sizes, or a dataset that cannot be read.
    """
    names = list(methods or DEFAULT_METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: known methods are {', '.join(METHODS)}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    prompts = {name: load_prompts(name, n_prompts, first=first_prompt) for name in datasets}
    names = ["plain"] + [n for n in names if n != "plain"]
    target_path = models.resolve_model(target)
    n_threads = n_threads or os.cpu_count() or 1
    drafter = drafters.shipped_drafter_for_file(target_path) if falcon_drafter == "auto" else falcon_drafter
    small = draft_model
    if draft_model == "auto":
        small = small_drafter(target_path) if "spec-draft-simple" in names else None
    s = Settings(target=target_path, n_threads=n_threads, n_ctx=n_ctx, max_tokens=max_tokens,
                 falcon_drafter=Path(drafter) if drafter else None, draft_model=Path(small) if small else None)
    load_before = list(os.getloadavg())

    # every node's logits from the decode: the curve of the report is that of llama.cpp's own verification
    plain = EdgeFalcon(target_path, drafter=None, n_ctx=n_ctx, n_threads=n_threads, path_head=False)
    times = plain._native_engine().measure_verify_cost(VERIFY_COST_N_MAX, VERIFY_COST_REPS, VERIFY_COST_DEPTH)
    runners, skipped = _open_runners(names, s, plain)
    report = {
        "suite": "peers", "target": str(target), "target_file": target_path.name,
        "regime": target_path.stem, "n_threads": n_threads, "n_ctx": n_ctx, "max_tokens": max_tokens,
        "n_prompts": n_prompts, "first_prompt": first_prompt, "machine": host.cpu_name(), "n_cpu": os.cpu_count(), "commit": commit,
        "version": __version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_before": load_before,
        "methods": {n: {"label": METHODS[n].label, "tool": METHODS[n].tool} for n in names},
        "falcon_drafter": str(s.falcon_drafter) if s.falcon_drafter else None,
        "draft_model": str(s.draft_model) if s.draft_model else None,
        "skipped": skipped,
        "verify_cost": [t / times[0] for t in times],
        "llama_bench": None,
        "datasets": {},
    }
    if any(METHODS[n].tool for n in runners):
        report["llama_bench"] = llama_tools.run_bench_tg(llama_tools.find_bin_dir(), target_path, n_threads)
    rows_of: dict[str, list[dict]] = {}
    for ds, ds_prompts in prompts.items():
        rows = rows_of[ds] = []
        for i, prompt in enumerate(tqdm(ds_prompts, desc=ds, disable=not progress), start=first_prompt):
            text = plain.template.render([{"role": "user", "content": prompt}])
            tokens = plain._native_engine().tokenize(text, False, True)
            if len(tokens) + max_tokens + 1 > n_ctx:
                raise ValueError(f"{ds} prompt {i} of {len(tokens)} tokens plus max_tokens {max_tokens} does not fit: "
                                 f"n_ctx {n_ctx}")
            results = {}
            for name, runner in list(runners.items()):
                try:
                    results[name] = runner(text, tokens)
                except ToolOutputError as e:
                    del runners[name]
                    # one line: the reason is a cell of the report's table, and a tool's output has newlines
                    skipped[name] = f"failed on {ds} prompt {i}: {' '.join(str(e).split())}"
                    for earlier in (r for ds_rows in rows_of.values() for r in ds_rows):
                        earlier["results"].pop(name, None)
            rows.append({"prompt_index": i, "n_prompt_tokens": len(tokens), "results": results})
    for ds, rows in rows_of.items():
        report["datasets"][ds] = {
            "n_prompts": len(rows),
            "methods": {name: summarize(rows, name) for name in runners},
            # a llama.cpp tool against llama.cpp's own plain decoding
            "llama_cpp_ratio": {name: _rate(rows, name) / _rate(rows, "llama-completion")
                                for name in runners if METHODS[name].tool and "llama-completion" in runners},
            "rows": rows,
        }
    report["load_after"] = list(os.getloadavg())
    return report


def format_table(report: dict) -> str:
    """A fixed-width table: tokens/s and ratio to plain per method and dataset."""
    sets = list(report["datasets"])
    lines = [(f"{report['regime']}  threads {report['n_threads']}  commit {report['commit']}  {report['date']}  "
             f"load before {report['load_before'][0]:.2f}"),
             f"{'method':<22}" + "".join(f" {ds:>20}" for ds in sets)]
    for name in report["methods"]:
        if name in report["skipped"]:
            lines.append(f"{name:<22} skipped: {report['skipped'][name]}")
            continue
        cells = []
        for ds in sets:
            m = report["datasets"][ds]["methods"][name]
            tau = f" t{m['tau']:.2f}" if m["tau"] else ""
            cells.append(f"{m['tokens_per_s']:7.2f} {m['ratio_to_plain']:.2f}x{tau}")
        lines.append(f"{name:<22}" + "".join(f" {c:>20}" for c in cells))
    return "\n".join(lines)
