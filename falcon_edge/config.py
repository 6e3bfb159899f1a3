"""Validated configuration of a request: sampling and speculation settings.

Each dataclass mirrors a C++ struct of native/include/falcon-edge/params.h field for field (same names);
``to_native()`` builds it. Values are checked here so that a bad one raises ``ValueError`` naming the field and
the value before anything reaches llama.cpp.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from . import _native

SPEC_MODES = ("plain", "ngram", "falcon")
DEFAULT_N_BATCH = 256  # n_batch where the context holds it


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


# bool is an int subclass: without these checks a JSON ``true`` would pass as max_tokens 1 or temperature 1.0
def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class SamplingConfig:
    """How the target's next-token distribution is shaped, in llama.cpp's order.

    Attributes:
        temperature: 0 = greedy (the output is then token-identical to plain greedy decoding).
        top_k: keep the k most likely tokens (<= 0: all).
        top_p: nucleus mass kept (1: off).
        min_p: drop tokens below min_p times the most likely one (0: off).
        repeat_penalty: llama.cpp's repeat penalty over the last ``repeat_last_n`` tokens (1: off).
        repeat_last_n: tokens looked back by the repeat penalty.
        seed: random seed; None draws a fresh one per request.
    """

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        _check(is_number(self.temperature) and math.isfinite(self.temperature) and self.temperature >= 0,
               f"temperature must be a finite number >= 0, got {self.temperature!r}")
        _check(is_int(self.top_k), f"top_k must be an int, got {self.top_k!r}")
        _check(is_number(self.top_p) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}")
        _check(is_number(self.min_p) and 0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p!r}")
        _check(is_number(self.repeat_penalty) and self.repeat_penalty > 0,
               f"repeat_penalty must be > 0, got {self.repeat_penalty!r}")
        _check(is_int(self.repeat_last_n) and self.repeat_last_n >= -1,
               f"repeat_last_n must be an int >= -1, got {self.repeat_last_n!r}")
        _check(self.seed is None or (is_int(self.seed) and 0 <= self.seed < 2**64),
               f"seed must be None or an int in [0, 2**64), got {self.seed!r}")

    def to_native(self) -> _native.SamplingParams:
        p = _native.SamplingParams()
        p.temperature = float(self.temperature)
        p.top_k = self.top_k
        p.top_p = float(self.top_p)
        p.min_p = float(self.min_p)
        p.repeat_penalty = float(self.repeat_penalty)
        p.repeat_last_n = self.repeat_last_n
        p.seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little")
        return p


@dataclass(frozen=True)
class SpecConfig:
    """Speculation settings.

    Attributes:
        mode: ``"plain"`` (no drafting), ``"ngram"`` (prompt lookup) or ``"falcon"`` (the Falcon drafter).
        n_nodes_max: tree budget including the root; 0 = chosen per cycle from the verify-cost curve measured on
            this device and the drafter's running acceptance, falling back to plain decoding where drafting loses.
        depth_max: deepest drafted token.
        ngram_min, ngram_max: suffix lengths the n-gram proposer matches.
        ngram_branches: distinct continuations the n-gram proposer offers as branches. In mode ``"falcon"``
            they are merged into the drafter's tree every cycle (lookup is free; verification keeps what pays);
            0 there drafts with the drafter alone.
        top_k_draft: candidates kept per drafted position (Falcon).
        n_passes: drafter passes per drafting phase, the context pass included (Falcon).
        preset_parent, preset_rank: a fixed tree shape instead of the dynamic tree (falcon_edge.trees; empty:
            dynamic): node i is the candidate of rank ``preset_rank[i]`` below node ``preset_parent[i]`` (-1: root).
    """

    mode: str = "plain"
    n_nodes_max: int = 0
    depth_max: int = 8
    ngram_min: int = 1
    ngram_max: int = 12
    ngram_branches: int = 3
    top_k_draft: int = 4
    n_passes: int = 2
    preset_parent: tuple[int, ...] = ()
    preset_rank: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(self.mode in SPEC_MODES, f"mode must be one of {', '.join(SPEC_MODES)}, got {self.mode!r}")
        _check(isinstance(self.n_nodes_max, int) and 0 <= self.n_nodes_max <= 256,
               f"n_nodes_max must be an int in [0, 256], got {self.n_nodes_max!r}")
        _check(isinstance(self.depth_max, int) and 1 <= self.depth_max <= 64,
               f"depth_max must be an int in [1, 64], got {self.depth_max!r}")
        _check(isinstance(self.ngram_min, int) and isinstance(self.ngram_max, int) and 1 <= self.ngram_min <= self.ngram_max,
               f"ngram_min and ngram_max must satisfy 1 <= ngram_min <= ngram_max, got {self.ngram_min!r} and {self.ngram_max!r}")
        _check(isinstance(self.ngram_branches, int) and self.ngram_branches >= (1 if self.mode == "ngram" else 0),
               f"ngram_branches must be an int >= 1 (>= 0 unless mode is 'ngram'), got {self.ngram_branches!r}")
        _check(isinstance(self.top_k_draft, int) and 1 <= self.top_k_draft <= 64,
               f"top_k_draft must be an int in [1, 64], got {self.top_k_draft!r}")
        _check(isinstance(self.n_passes, int) and 1 <= self.n_passes <= 16,
               f"n_passes must be an int in [1, 16], got {self.n_passes!r}")
        _check(len(self.preset_parent) == len(self.preset_rank),
               f"preset_parent and preset_rank must have equal lengths, got {len(self.preset_parent)} and {len(self.preset_rank)}")

    def to_native(self) -> _native.SpecParams:
        p = _native.SpecParams()
        for name in self.__dataclass_fields__:
            setattr(p, name, getattr(self, name))
        return p


@dataclass(frozen=True)
class ContextConfig:
    """The target's context.

    Attributes:
        n_ctx: context length in tokens.
        n_batch: prompt chunk; a verification tree must fit in one (None: min(256, n_ctx)).
        n_threads: CPU threads (None: all cores).
        n_gpu_layers: layers offloaded to a GPU (needs a CUDA/Metal build of llama-cpp-python; -1 = all).
        n_seq_max: leaves a tree may have (<= 256).
        flash_attn: flash attention (off by default: tree and sequential decoding then agree bit for bit).
        path_head: on a CPU, trees are decoded up to the final norm and the LM head runs only for the rows the
            acceptance walk reads (used where it reproduces the decode's logits bit for bit).
        verbose: let llama.cpp log to stderr.
    """

    n_ctx: int = 4096
    n_batch: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int = 0
    n_seq_max: int = 64
    flash_attn: bool = False
    path_head: bool = True
    verbose: bool = False

    def __post_init__(self) -> None:
        _check(isinstance(self.n_ctx, int) and self.n_ctx >= 8, f"n_ctx must be an int >= 8, got {self.n_ctx!r}")
        if self.n_batch is None:
            object.__setattr__(self, "n_batch", min(DEFAULT_N_BATCH, self.n_ctx))
        _check(isinstance(self.n_batch, int) and 1 <= self.n_batch <= self.n_ctx,
               f"n_batch must be an int in [1, n_ctx {self.n_ctx}], got {self.n_batch!r}")
        _check(self.n_threads is None or (isinstance(self.n_threads, int) and self.n_threads >= 1),
               f"n_threads must be None or an int >= 1, got {self.n_threads!r}")
        _check(isinstance(self.n_gpu_layers, int) and self.n_gpu_layers >= -1,
               f"n_gpu_layers must be an int >= -1, got {self.n_gpu_layers!r}")
        _check(isinstance(self.n_seq_max, int) and 1 <= self.n_seq_max <= 256,
               f"n_seq_max must be an int in [1, 256], got {self.n_seq_max!r}")

    def to_native(self) -> _native.EngineParams:
        p = _native.EngineParams()
        p.n_ctx = self.n_ctx
        p.n_batch = self.n_batch
        p.n_threads = self.n_threads or 0
        p.n_gpu_layers = self.n_gpu_layers if self.n_gpu_layers >= 0 else 2**31 - 1
        p.n_seq_max = self.n_seq_max
        p.flash_attn = self.flash_attn
        p.path_head = self.path_head
        p.verbose = self.verbose
        return p


@dataclass(frozen=True)
class RequestConfig:
    """One request: sampling, speculation and stopping.

    Attributes:
        max_tokens: tokens to generate at most (None: until the context is full).
        stop: stop strings (not included in the output).
        sampling: see :class:`SamplingConfig`.
        spec: see :class:`SpecConfig`.
    """

    max_tokens: int | None = 256
    stop: tuple[str, ...] = ()
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    spec: SpecConfig = field(default_factory=SpecConfig)

    def __post_init__(self) -> None:
        _check(self.max_tokens is None or (is_int(self.max_tokens) and self.max_tokens >= 1),
               f"max_tokens must be None or an int >= 1, got {self.max_tokens!r}")
        _check(all(isinstance(s, str) for s in self.stop), f"stop must be strings, got {self.stop!r}")

    def to_native(self) -> _native.GenerateParams:
        p = _native.GenerateParams()
        p.max_tokens = self.max_tokens or 0
        p.stop = [s for s in self.stop if s]
        p.sampling = self.sampling.to_native()
        p.spec = self.spec.to_native()
        return p
