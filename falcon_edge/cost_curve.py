"""The target's verify-cost curve c(N) on this device, measured once and cached.

c(N) is the time of one ``llama_decode`` of N tree nodes (every node an output, as verification needs) relative to
one node. The engine sizes each tree from it (native/include/falcon-edge/cost-model.h). The measurement depends on
the model file, the threads, the batch size, the build (CPU features, GPU offload) and the measuring method, so the
cache key holds all of them; a change of any re-measures. Delete the file (``~/.cache/falcon-edge/verify-cost.json``)
to re-measure, e.g. after a measurement taken while other programs loaded the machine. The engine refines the curve
online from the decodes it times (cost-model.h), but each process starts from the cached one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from . import _native
from .models import cache_dir

log = logging.getLogger("falcon_edge")

N_MAX = 16  # largest tree measured: beyond it no CPU-class device gains (peers-and-limits.md §2)
N_REPS = 5
N_DEPTH = 128  # context before the probes, as in a short chat
METHOD = 2  # version of Engine.measure_verify_cost: a curve cached by another method is measured again


def _cache_file() -> Path:
    return cache_dir().parent / "verify-cost.json"


def _key(model_path: Path, n_threads: int, n_batch: int, n_gpu_layers: int) -> str:
    st = model_path.stat()
    system = hashlib.sha256(_native.llama_system_info().encode()).hexdigest()[:16]
    return f"{model_path.resolve()}|{st.st_size}|{int(st.st_mtime)}|t{n_threads}|b{n_batch}|ngl{n_gpu_layers}|{system}|m{METHOD}"


def load_or_measure(engine: _native.Engine, model_path: Path, *, n_threads: int, n_batch: int, n_gpu_layers: int) -> list[float]:
    """Returns c(1..N) for this target and device, measuring (a few seconds) on first use.

    Args:
        engine: the engine whose context is measured (its KV cache is cleared).
        model_path: the target GGUF (part of the cache key).
        n_threads, n_batch, n_gpu_layers: the context settings (part of the cache key).

    Returns:
        relative costs, element i for i+1 nodes (element 0 is 1.0).
    """
    key = _key(model_path, n_threads, n_batch, n_gpu_layers)
    path = _cache_file()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return cached[key]
    n_max = min(N_MAX, n_batch)
    depth = min(N_DEPTH, engine.n_ctx - n_max - 1)
    log.info("measuring the verify-cost curve of %s (once per model and device)", model_path.name)
    times = engine.measure_verify_cost(n_max, N_REPS, depth)
    curve = [t / times[0] for t in times]
    # entries of model files that no longer exist (deleted downloads, test fixtures) are dropped
    cached = {k: v for k, v in cached.items() if Path(k.split("|", 1)[0]).is_file()}
    cached[key] = curve
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(cached, indent=1))
    os.replace(tmp, path)
    return curve
