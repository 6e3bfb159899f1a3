"""EdgeFalcon: a GGUF target with optional speculation, as a chat and completion API.

Python validates arguments, renders chat templates and shapes results; each request crosses into the C++ engine
once (``_native.Engine.generate``), which runs the whole per-token loop with the GIL released and calls back once
per verified chunk.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from . import _native, cost_curve, drafters, models, trees
from .chat_template import ChatTemplate
from .config import ContextConfig, RequestConfig, SamplingConfig, SpecConfig
from .errors import ModelLoadError
from .types import GenerationResult, SpecStats, StreamChunk


def _spec_stats(mode: str, st: _native.GenStats) -> SpecStats:
    return SpecStats(
        mode=mode,
        n_prompt=st.n_prompt,
        n_prefill=st.n_prefill,
        n_generated=st.n_generated,
        n_cycles=st.n_cycles,
        n_drafted=st.n_drafted,
        n_accepted=st.n_accepted,
        n_drafted_ngram=st.n_drafted_ngram,
        n_accepted_ngram=st.n_accepted_ngram,
        n_draft_passes=st.n_draft_passes,
        drafter_joined=st.drafter_joined,
        n_prompt_features=st.n_prompt_features,
        n_nodes_max=st.n_nodes_max,
        n_head_rows=st.n_head_rows,
        verify_units=st.verify_units,
        t_prefill_s=st.t_prefill_us / 1e6,
        t_draft_s=st.t_draft_us / 1e6,
        t_verify_s=st.t_verify_us / 1e6,
        t_sample_s=st.t_sample_us / 1e6,
        t_total_s=st.t_total_us / 1e6,
        t_head_s=st.t_head_us / 1e6,
    )


class EdgeFalcon:
    """A target GGUF model with optional speculative decoding.

    Args:
        target: a registry name (see ``falcon-edge models list``; fetched on first use) or a path to a GGUF file.
        drafter: ``"auto"`` (default: the drafter shipped for the target, a registry name or a GGUF file named after
            one such as an export ``<name>-f16.gguf``, else plain decoding), None (plain decoding), ``"ngram"``
            (prompt lookup) or a path to a falcon-sar drafter GGUF.
        n_ctx: context length in tokens.
        n_threads: CPU threads (None: all cores).
        n_gpu_layers: target layers offloaded to a GPU (CUDA/Metal builds of llama-cpp-python; -1 = all).
        seed: default seed of sampling requests (None: a fresh one each request).
        verbose: let llama.cpp log to stderr.
        tree_budget: nodes verified per pass, root included; 0 (default) sizes each tree from the verify-cost curve
            measured on this device (up to 16 nodes on a CPU, 64 on a GPU) and the drafter's running acceptance, and
            decodes plainly where drafting loses; a request where even the drafter's best case cannot pay leaves it
            out from the prefill on (:attr:`SpecStats.drafter_joined`), so that it costs what plain decoding costs.
        n_batch: prompt chunk size (a tree must fit in one; None: min(256, n_ctx)).
        flash_attn: flash attention in the target (off: tree verification is then bit-exact with sequential decoding).
        path_head: on a CPU, decode each tree up to the final norm and compute the LM head only for the rows the
            acceptance walk reads (the root and each accepted node, plus nodes likely enough to be read that one
            batched call is cheaper). Used only where that head reproduces the decode's logits bit for bit (checked
            when the target loads; :attr:`path_head_active` says whether it is); off: every node's logits come from
            the decode.
        spec: further speculation settings (:class:`SpecConfig`: tree depth, candidates per drafted position,
            drafter passes, n-gram lengths); its ``mode`` and ``n_nodes_max`` come from ``drafter`` and ``tree_budget``.
        verify_cost: the target's verify-cost curve c(1..N) relative to one node, instead of measuring it on this
            device (a curve measured elsewhere, or a constructed one in tests). With the path head it is the cost of
            the decode up to the final norm, and the head's own cost is learnt from the first trees.
        tree: a fixed tree shape for the Falcon drafter instead of the dynamic tree: a preset name (e.g.
            ``"falcon-168"``, the paper's default tree) or a preset JSON path (:mod:`falcon_edge.trees`). The whole
            preset is verified every cycle, whatever it costs on this device: for comparisons, not for speed.

    Raises:
        ModelLoadError: the target or drafter cannot be loaded.
        IncompatibleDrafterError: the drafter was made for another target.
        ValueError: invalid arguments.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        drafter: str | os.PathLike[str] | None = "auto",
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        seed: int | None = None,
        verbose: bool = False,
        tree_budget: int = 0,
        n_batch: int | None = None,
        flash_attn: bool = False,
        path_head: bool = True,
        spec: SpecConfig | None = None,
        verify_cost: list[float] | None = None,
        tree: str | os.PathLike[str] | None = None,
    ):
        preset = trees.load(tree) if tree is not None else None
        self.context = ContextConfig(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, n_gpu_layers=n_gpu_layers,
                                     flash_attn=flash_attn, path_head=path_head, verbose=verbose,
                                     n_seq_max=max(ContextConfig.n_seq_max, preset.n_leaves if preset else 0))
        SamplingConfig(seed=seed)  # validates the seed
        self.seed = seed
        self.target_path = models.resolve_model(target)
        self.model_name = str(target) if models.is_registry_name(str(target)) else self.target_path.name
        self._engine = _native.Engine(str(self.target_path), self.context.to_native())
        self.drafter_path: Path | None = None
        if str(drafter) == "auto":
            drafter = drafters.shipped_drafter_for_file(self.target_path)
        if drafter is None:
            self.mode = "plain"
        elif str(drafter) == "ngram":
            self.mode = "ngram"
        elif str(drafter).endswith(".gguf") or Path(drafter).is_file():
            self.drafter_path = Path(drafter)
            if not self.drafter_path.is_file():
                raise ModelLoadError(f"drafter file {self.drafter_path} does not exist")
            self._engine.load_drafter(str(self.drafter_path), n_threads or 0)
            self.mode = "falcon"
        else:
            raise ValueError(f"drafter must be 'auto', None, 'ngram' or a falcon-sar GGUF path, got {drafter!r}")
        self.spec = dataclasses.replace(spec or SpecConfig(), mode=self.mode, n_nodes_max=tree_budget)
        if preset is not None:
            if self.mode != "falcon":
                raise ValueError(f"a tree preset needs a Falcon drafter, got drafter {drafter!r} (mode {self.mode})")
            if preset.n_nodes + 1 > self.context.n_batch:
                raise ValueError(f"tree preset {preset.name} has {preset.n_nodes + 1} nodes with the root but n_batch is "
                                 f"{self.context.n_batch}")
            # the preset alone, as published: no n-gram branches merged in
            self.spec = dataclasses.replace(self.spec, n_nodes_max=preset.n_nodes + 1, depth_max=preset.depth,
                                            preset_parent=preset.parent, preset_rank=preset.rank, ngram_branches=0)
        # what the cached costs were measured with (cost_curve's cache keys)
        device = {"n_threads": n_threads or os.cpu_count() or 1, "n_batch": self.context.n_batch,
                  "n_gpu_layers": n_gpu_layers, "flash_attn": self.context.flash_attn}
        if verify_cost is not None:
            if not verify_cost or any(not c > 0 for c in verify_cost):
                raise ValueError(f"verify_cost must be a non-empty list of positive costs, got {verify_cost!r}")
            self._engine.set_verify_cost([float(c) for c in verify_cost])
        elif self.mode != "plain":
            # the curve sizes trees (tree_budget 0); the path head's costs decide which rows it computes together
            cost = cost_curve.load_or_measure(self._engine, self.target_path, **device)
            self._engine.set_verify_cost(cost.curve)
            self._engine.set_head_cost(*cost.head)
        if self.mode == "falcon" and self.spec.n_nodes_max == 0:
            # auto-sized trees weigh the drafter's costs from the first cycle
            draft = cost_curve.load_or_measure_draft(self._engine, self.target_path, self.drafter_path, self.spec,
                                                     **device)
            self._engine.set_draft_cost(draft.cycle, draft.pair)
        eng = self._engine
        self.template = ChatTemplate(
            eng.meta("tokenizer.chat_template") or None,
            eng.token_to_piece(eng.token_bos, True).decode("utf-8", "replace") if eng.token_bos >= 0 else "",
            eng.token_to_piece(eng.token_eos, True).decode("utf-8", "replace") if eng.token_eos >= 0 else "",
        )

    @classmethod
    def from_name(cls, name: str, **kwargs) -> EdgeFalcon:
        """A registry target (fetched on first use) with the drafter shipped for it, if any.

        Args:
            name: registry name, e.g. ``"qwen2.5-coder-1.5b-instruct"``.
            **kwargs: the other constructor arguments (``drafter`` overrides the shipped one).

        Raises:
            UnknownModelError: ``name`` is not a registry name.
        """
        models.get_entry(name)
        return cls(name, **kwargs)

    # ---- lifecycle ----

    def close(self) -> None:
        """Frees the model and context; the object is unusable afterwards."""
        self._engine = None

    def __enter__(self) -> EdgeFalcon:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _native_engine(self) -> _native.Engine:
        if self._engine is None:
            raise ValueError("this EdgeFalcon is closed")
        return self._engine

    # ---- tokens ----

    @property
    def path_head_active(self) -> bool:
        """Whether trees get their logits from the path head (``path_head`` asked for, a CPU target, and a head that
        reproduced the decode's logits bit for bit when the target loaded)."""
        return self._native_engine().path_head

    @property
    def n_ctx(self) -> int:
        return self._native_engine().n_ctx

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text`` with the target's tokenizer."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._native_engine().tokenize(text, add_special, parse_special)

    def chat_tokens(self, messages: list[dict]) -> list[int]:
        """The prompt token ids :meth:`chat` decodes for ``messages``: the chat template rendered with the generation
        prompt, special tokens parsed. Raises ValueError when the rendering is empty."""
        tokens = self._native_engine().tokenize(self.template.render(messages), False, True)
        if not tokens:
            raise ValueError("the rendered chat prompt is empty")
        return tokens

    def detokenize(self, tokens: list[int]) -> str:
        """Text of token ids (special tokens rendered as text)."""
        eng = self._native_engine()
        return b"".join(eng.token_to_piece(int(t), True) for t in tokens).decode("utf-8", "replace")

    # ---- requests ----

    def _request(self, max_tokens, stop, sampling: SamplingConfig, speculative: bool) -> RequestConfig:
        if isinstance(stop, str):
            stop = (stop,)
        spec = self.spec if speculative else SpecConfig(mode="plain")
        return RequestConfig(max_tokens=max_tokens, stop=tuple(stop or ()), sampling=sampling, spec=spec)

    def _prompt_tokens(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty")
            return self.tokenize(prompt, add_special=True, parse_special=True)
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        raise TypeError(f"prompt must be a str or a list of token ids, got {type(prompt).__name__}")

    def _run(self, tokens: list[int], req: RequestConfig, on_chunk=None) -> GenerationResult:
        if req.max_tokens is not None and len(tokens) + req.max_tokens > self.n_ctx:
            raise _native.ContextFullError(
                f"prompt of {len(tokens)} tokens plus max_tokens {req.max_tokens} does not fit: n_ctx {self.n_ctx}")
        params = req.to_native()
        if req.sampling.seed is None and self.seed is not None:
            params.sampling.seed = self.seed
        # a callback on every step, even a no-op, lets Ctrl-C (KeyboardInterrupt) stop the native loop promptly
        res = self._native_engine().generate(tokens, params, on_chunk or (lambda _tokens, _text: True))
        return GenerationResult(
            text=res.text.decode("utf-8", "replace"),
            tokens=list(res.tokens),
            finish_reason=res.finish_reason,
            stats=_spec_stats(req.spec.mode, res.stats),
        )

    def generate(
        self,
        prompt: str | list[int],
        *,
        max_tokens: int | None = 256,
        temperature: float = 0.0,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        speculative: bool = True,
    ) -> GenerationResult:
        """Completes raw text (or token ids) and returns text, tokens and speculative statistics.

        Args:
            prompt: text (tokenized with the model's BOS rules, special tokens parsed) or token ids.
            max_tokens: tokens to generate at most (None: until the context is full).
            temperature, top_k, top_p, min_p, repeat_penalty, seed: sampling (:class:`SamplingConfig`);
                temperature 0 is greedy.
            stop: stop string(s), not included in the text.
            speculative: False decodes plainly with the same engine (the baseline of every benchmark).

        Raises:
            ContextFullError: the prompt (plus max_tokens) does not fit in n_ctx.
            ValueError: invalid arguments or an empty prompt.
        """
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                  repeat_penalty=repeat_penalty, seed=seed)
        req = self._request(max_tokens, stop, sampling, speculative)
        return self._run(self._prompt_tokens(prompt), req)

    def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        stream: bool = False,
        speculative: bool = True,
    ) -> dict | Iterator[dict]:
        """OpenAI-style chat completion, shaped like llama-cpp-python's ``create_chat_completion``.

        The prompt is rendered with the model's chat template; the KV cache keeps the prefix shared with the
        previous request, so a follow-up turn evaluates only its new tokens.

        Returns:
            a ``chat.completion`` dict (with ``usage`` and a ``falcon`` field holding :class:`SpecStats` as a dict),
            or with ``stream=True`` an iterator of ``chat.completion.chunk`` dicts (the last one carries
            ``finish_reason`` and ``falcon``). Closing the iterator early stops the generation.
        """
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                  repeat_penalty=repeat_penalty, seed=seed)
        req = self._request(max_tokens, stop, sampling, speculative)
        tokens = self.chat_tokens(messages)
        if stream:
            return self._chat_stream(tokens, req)
        res = self._run(tokens, req)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": res.text},
                "logprobs": None,
                "finish_reason": res.openai_finish_reason,
            }],
            "usage": res.usage,
            "falcon": res.stats.as_dict(),
        }

    def _stream(self, tokens: list[int], req: RequestConfig) -> Iterator[StreamChunk]:
        """Runs the request on a worker thread and yields its text as each verification step lands."""
        pieces: queue.Queue = queue.Queue()
        stop_flag = threading.Event()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def on_chunk(_tokens, text: bytes) -> bool:
            piece = decoder.decode(text)
            if piece:
                pieces.put(("text", piece))
            return not stop_flag.is_set()

        def worker() -> None:
            try:
                pieces.put(("done", self._run(tokens, req, on_chunk)))
            except BaseException as e:  # delivered to the consumer's thread
                pieces.put(("error", e))

        def gen() -> Iterator[StreamChunk]:
            thread = threading.Thread(target=worker, daemon=True)
            thread.start()
            try:
                while True:
                    kind, value = pieces.get()
                    if kind == "text":
                        yield StreamChunk(value)
                    elif kind == "error":
                        raise value
                    else:
                        yield StreamChunk(decoder.decode(b"", final=True), value)
                        return
            finally:
                stop_flag.set()
                thread.join()

        return gen()

    def generate_stream(
        self,
        prompt: str | list[int],
        *,
        max_tokens: int | None = 256,
        temperature: float = 0.0,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        speculative: bool = True,
    ) -> Iterator[StreamChunk]:
        """Like :meth:`generate`, yielding text as it is verified; the last chunk carries the result.

        Closing the iterator early stops the generation (its result then says ``"cancelled"``).
        """
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                  repeat_penalty=repeat_penalty, seed=seed)
        req = self._request(max_tokens, stop, sampling, speculative)
        return self._stream(self._prompt_tokens(prompt), req)

    def _chat_stream(self, tokens: list[int], req: RequestConfig) -> Iterator[dict]:
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict, finish=None, **extra) -> dict:
            out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            out.update(extra)
            return out

        def gen() -> Iterator[dict]:
            pieces = self._stream(tokens, req)
            try:
                yield chunk({"role": "assistant"})
                for piece in pieces:
                    if piece.text:
                        yield chunk({"content": piece.text})
                    if piece.result is not None:
                        res = piece.result
                        yield chunk({}, res.openai_finish_reason, usage=res.usage, falcon=res.stats.as_dict())
            finally:
                pieces.close()

        return gen()
