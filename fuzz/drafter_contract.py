"""The drafter loader's contract, shared by the fuzz target (fuzz_drafter_gguf.py) and its regression tests
(tests/reliability/test_hostile_gguf.py): no atheris needed.

A drafter file is refused with ModelLoadError or IncompatibleDrafterError (ValueError for bad parameters), each with a
message; a file the loader accepts must then load context pairs, evaluate the context and a tree block, and map draft
ids to target ids.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp  # noqa: F401  (before falcon_edge: one libllama per process)
import numpy as np

from falcon_edge import FalconEdgeError, _native

EXPECTED = (FalconEdgeError, ValueError)


def exercise(drafter_path: Path, target_path: Path) -> None:
    """Loads the drafter; if the loader accepts it, runs one drafting phase. Raises what the engine raises."""
    dft = _native.Drafter(str(drafter_path), str(target_path), 0, n_ctx=64, n_scratch=32, n_batch=16, n_threads=1)
    hp = dft.hparams
    k, n_embd = hp["block_size"], hp["n_embd"]
    rng = np.random.default_rng(0)
    n = k + 1
    dft.push_pairs(rng.standard_normal((n, n_embd)).astype(np.float32), np.arange(n, dtype=np.int32) % hp["target_n_vocab"])
    feat, logits = dft.eval_context()
    assert feat.shape == (min(k, n), n_embd) and logits.shape == (min(k, n), hp["n_vocab_draft"]), (feat.shape, logits.shape)
    dft.eval_blocks([-1], rng.standard_normal((1, k, n_embd)).astype(np.float32), np.zeros((1, k), dtype=np.int32))
    assert 0 <= dft.draft_to_target(hp["n_vocab_draft"] - 1) < hp["target_n_vocab"]


def check_one(drafter: bytes, target: bytes, work: Path) -> str:
    """Runs one (drafter, target) pair through the contract; returns "ok" or the refusal's type name."""
    work.mkdir(parents=True, exist_ok=True)
    dpath, tpath = work / "input-drafter.gguf", work / "input-target.gguf"
    dpath.write_bytes(drafter)
    tpath.write_bytes(target)
    try:
        exercise(dpath, tpath)
    except EXPECTED as e:
        if not str(e):
            raise AssertionError(f"{type(e).__name__} without a message") from e
        return type(e).__name__
    return "ok"
