"""The target's verify-cost curve c(N) on this device, measured once and cached.

c(N) is the time of one ``llama_decode`` of N tree nodes, as verification decodes them, relative to one node with its
logits (a plain step): every node an output, and with the path head (target-head.h) the decode stops at the final norm
for N >= 2. The path head's own cost comes with it: a call of one row, and each further row of a call, relative to a
plain step ((0, 0) without the path head). The engine sizes each tree from both
(native/include/falcon-edge/cost-model.h). The measurement depends on the model file, the threads, the batch size, the
build (CPU features, GPU offload), whether the path head runs and the measuring method, so the cache key holds all of
them; a change of any re-measures. Delete the file (``~/.cache/falcon-edge/verify-cost.json``)
to re-measure, e.g. after a measurement taken while other programs loaded the machine. The engine refines the curve
online from the decodes it times (cost-model.h), but each process starts from the cached one.

The drafter's costs relative to a plain step (a drafting cycle, a pair of its catch-up over a new prompt) are measured
and cached the same way, once per drafter, target, device and drafting settings (load_or_measure_draft), so that the
engine weighs them from its first request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from . import _native
from .config import SpecConfig, is_number
from .models import cache_dir

log = logging.getLogger("falcon_edge")

N_MAX_CPU = 16  # largest tree measured on a CPU: beyond it no CPU-class device gains (peers-and-limits.md §2)
N_MAX_GPU = 64  # with layers on a GPU, whose verification of a few dozen nodes costs little more than one
N_REPS = 5
N_DEPTH = 128  # context before the probes, as in a short chat
N_HEAD_ROWS = 8  # rows of the path-head call timed against a one-row call
METHOD = 3  # version of the measurement (3: the path head): a curve cached by another method is measured again
# the context the drafting cost is measured after: ordinary prose and code, as a request brings (the cost of a cycle
# follows the shape of the tree, which follows how sure the drafter is)
DRAFT_CONTEXT = (
    "A running average smooths a noisy series: each output is the mean of the inputs seen so far.\n\n"
    "def running_average(values):\n"
    "    total = 0.0\n"
    "    out = []\n"
    "    for i, value in enumerate(values, start=1):\n"
    "        total += value\n"
    "        out.append(total / i)\n"
    "    return out\n\n"
    "For the series 2, 4, 6 the function returns"
)


@dataclass(frozen=True)
class VerifyCost:
    """What the engine sizes trees from.

    Attributes:
        curve: c(1..N), element i for i+1 nodes (element 0 is 1.0).
        head: (row, extra): the path head's cost of a one-row call and of each further row of a call, relative to a
            plain step; (0.0, 0.0) without the path head.
    """

    curve: list[float]
    head: tuple[float, float]


@dataclass(frozen=True)
class DraftCost:
    """The drafter's costs relative to one plain step of the target.

    Attributes:
        cycle: drafting one cycle's tree (a probe's: the curve's largest size).
        pair: one committed pair of a catch-up (a new prompt's, the drafter's window at most).
    """

    cycle: float
    pair: float


def _cache_file() -> Path:
    return cache_dir().parent / "verify-cost.json"


def _key(model_path: Path, n_threads: int, n_batch: int, n_gpu_layers: int, path_head: bool, flash_attn: bool) -> str:
    st = model_path.stat()
    system = hashlib.sha256(_native.llama_system_info().encode()).hexdigest()[:16]
    return (f"{model_path.resolve()}|{st.st_size}|{int(st.st_mtime)}|t{n_threads}|b{n_batch}|ngl{n_gpu_layers}|"
            f"ph{int(path_head)}|fa{int(flash_attn)}|{system}|m{METHOD}")


def n_max(n_gpu_layers: int) -> int:
    """The largest tree the curve is measured for, and so the largest tree the engine sizes: N_MAX_GPU where target
    layers run on a GPU (a GPU build of llama-cpp-python and ``n_gpu_layers != 0``), N_MAX_CPU otherwise."""
    return N_MAX_GPU if n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload() else N_MAX_CPU


def _read_cache() -> dict:
    try:
        cached = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def _write_cache(cached: dict) -> None:
    """Writes the cache atomically, without the entries of files that no longer exist (deleted downloads, test
    fixtures): an entry's key starts with its target's path, and a drafting cost's entry names its drafter."""
    path = _cache_file()
    cached = {k: v for k, v in cached.items() if Path(k.split("|", 1)[0]).is_file()
              and (not isinstance(v, dict) or "drafter" not in v or Path(str(v["drafter"])).is_file())}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(cached, indent=1))
    os.replace(tmp, path)


def load_or_measure(engine: _native.Engine, model_path: Path, *, n_threads: int, n_batch: int, n_gpu_layers: int,
                    flash_attn: bool) -> VerifyCost:
    """Returns the verify cost of this target and device, measuring (a few seconds) on first use.

    Args:
        engine: the engine whose context is measured (its KV cache is cleared).
        model_path: the target GGUF (part of the cache key).
        n_threads, n_batch, n_gpu_layers, flash_attn: the context settings (part of the cache key).
    """
    key = _key(model_path, n_threads, n_batch, n_gpu_layers, engine.path_head, flash_attn)
    cached = _read_cache()
    n_sizes = min(n_max(n_gpu_layers), n_batch)
    entry = cached.get(key)
    # a curve cached for another range of sizes (an older release's GPU curve of 16), or one whose numbers are not
    # usable costs (an edited or damaged file: NaN, 0, negative), is measured again
    if (isinstance(entry, dict) and isinstance(entry.get("curve"), list) and len(entry["curve"]) == n_sizes
            and isinstance(entry.get("head"), list) and len(entry["head"]) == 2
            and all(is_number(c) and math.isfinite(c) and c > 0 for c in entry["curve"])
            and all(is_number(h) and math.isfinite(h) and h >= 0 for h in entry["head"])):
        return VerifyCost(entry["curve"], tuple(entry["head"]))
    depth = min(N_DEPTH, engine.n_ctx - n_sizes - 1)
    log.info("measuring the verify-cost curve of %s (once per model and device)", model_path.name)
    times = engine.measure_verify_cost(n_sizes, N_REPS, depth)
    row_us, extra_us = engine.measure_head_cost(N_HEAD_ROWS, N_REPS)
    cost = VerifyCost([t / times[0] for t in times], (row_us / times[0], extra_us / times[0]))
    cached[key] = {"curve": cost.curve, "head": list(cost.head)}
    _write_cache(cached)
    return cost


def load_or_measure_draft(engine: _native.Engine, model_path: Path, drafter_path: Path, spec: SpecConfig, *,
                          n_threads: int, n_batch: int, n_gpu_layers: int, flash_attn: bool) -> DraftCost:
    """Returns the drafter's costs relative to one plain step of the target, measuring (a second or two) on first use.

    The engine counts them from its first cycle (cost-model.h: where even the drafter's best case, its catch-up over a
    new prompt included, cannot pay, no request drafts); without them, the cost of a cycle is known only once the
    drafter has drafted, so an engine's first request would probe, and a catch-up's not at all. A cycle is measured as
    a probe drafts: a tree of the curve's largest size with `spec`, after DRAFT_CONTEXT, against a one-node decode
    timed alternately with it; a pair as the drafter catches up on DRAFT_CONTEXT.

    Args:
        engine: an engine with the drafter loaded and its verify-cost curve set (its KV cache is cleared).
        model_path, drafter_path: the target and drafter GGUFs (part of the cache key).
        spec: the drafting settings (its top_k_draft, n_passes and depth_max shape the cycle and key the cache).
        n_threads, n_batch, n_gpu_layers, flash_attn: the context settings (part of the cache key).
    """
    st = drafter_path.stat()
    key = (f"{_key(model_path, n_threads, n_batch, n_gpu_layers, engine.path_head, flash_attn)}|draft|"
           f"{drafter_path.resolve()}|{st.st_size}|{int(st.st_mtime)}|"
           f"k{spec.top_k_draft}|p{spec.n_passes}|d{spec.depth_max}")
    cached = _read_cache()
    entry = cached.get(key)
    if isinstance(entry, dict) and all(is_number(entry.get(f)) and math.isfinite(entry[f]) and entry[f] >= 0
                                       for f in ("cycle", "pair")):
        return DraftCost(float(entry["cycle"]), float(entry["pair"]))
    log.info("measuring the drafting cost of %s on %s (once per drafter, model and device)", drafter_path.name,
             model_path.name)
    tokens = engine.tokenize(DRAFT_CONTEXT, True, False)
    n_nodes = min(len(engine.verify_cost()) or N_MAX_CPU, n_batch)
    draft_us, step_us, pair_us = engine.measure_draft_cost(tokens, spec.to_native(), n_nodes, N_REPS)
    cost = DraftCost(draft_us / step_us, pair_us / step_us)
    cached[key] = {"cycle": cost.cycle, "pair": cost.pair, "drafter": str(drafter_path.resolve())}
    _write_cache(cached)
    return cost
