"""Target features for drafter training, extracted through llama.cpp from the GGUF that will be served.

For every encoded conversation the engine returns the target's post-norm final hidden state at every
position (the LM-head input, `Engine.features`). They are stored in shards under one directory:

    index.json                 what was extracted from what, and the finished shards
    shard_00000.npz            feat f16 [N, H], tokens i32 [N], loss_mask u8 [N], offsets i64 [n_seq + 1]

Conversation s of a shard spans rows offsets[s] … offsets[s+1]-1. Extraction is resumable: a shard
is written to a temporary name and renamed, then the index is rewritten (also atomically), so after an
interruption the finished shards are kept and the rest is recomputed. The index records a fingerprint
of the encoded inputs; resuming against different inputs is refused instead of mixing them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Encoded

log = logging.getLogger("falcon_edge.train")

INDEX = "index.json"
FORMAT_VERSION = 1


class FeatureStoreError(ValueError):
    """A feature directory that does not match what is asked of it."""


def fingerprint(encoded: Sequence[Encoded]) -> str:
    """sha256 over every conversation's tokens and loss mask (what the shards are a function of)."""
    h = hashlib.sha256()
    for e in encoded:
        h.update(np.int64(len(e.tokens)).tobytes())
        h.update(e.tokens.astype(np.int32).tobytes())
        h.update(e.loss_mask.astype(np.uint8).tobytes())
    return h.hexdigest()


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_index(out_dir: str | os.PathLike) -> dict:
    """The index of a feature directory.

    Raises:
        FeatureStoreError: if there is none or it is not a feature index.
    """
    path = Path(out_dir) / INDEX
    if not path.is_file():
        raise FeatureStoreError(f"{out_dir} holds no {INDEX}: not a feature directory (run extraction first)")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT_VERSION:
        raise FeatureStoreError(f"{path}: unknown feature format {index.get('format')!r}")
    return index


def extract(llm, encoded: Sequence[Encoded], out_dir: str | os.PathLike, *, shard_size: int = 64,
            meta: dict | None = None, progress: bool = True, stop_after_shards: int | None = None) -> dict:
    """Run the target over every conversation and store features, tokens and loss masks in shards.

    Args:
        llm: an EdgeFalcon on the target, or any object with `_native_engine()` whose engine has
            `features(tokens) -> bytes` (float32 [n, n_embd]) and `n_embd`.
        encoded: the conversations, in order (data.encode_all).
        out_dir: the feature directory (created; resumed when it already holds an index for these inputs).
        shard_size: conversations per shard.
        meta: extra facts for the index (target path, data mix, template kind, ...).
        progress: show a tqdm bar with tokens/s.
        stop_after_shards: stop after writing this many new shards (for tests of interruption).

    Returns:
        the index.

    Raises:
        FeatureStoreError: if out_dir holds an index for other inputs or another target width.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eng = llm._native_engine()
    n_embd = int(eng.n_embd)
    fp = fingerprint(encoded)
    index = open_index(out, fp, n_embd, shard_size, len(encoded), meta)
    todo = pending_shards(out, index)
    total = sum(len(e.tokens) for s in todo for e in encoded[s * shard_size : (s + 1) * shard_size])
    bar = tqdm(total=total, desc="features", unit="tok", unit_scale=True, disable=not progress)
    start, done_tok, written = time.monotonic(), 0, 0
    for s in todo:
        part = encoded[s * shard_size : (s + 1) * shard_size]
        feats = []
        for e in part:
            raw = eng.features([int(t) for t in e.tokens])
            f = np.frombuffer(raw, dtype=np.float32).reshape(len(e.tokens), n_embd)  # [n, H]
            feats.append(f.astype(np.float16))
            bar.update(len(e.tokens))
            done_tok += len(e.tokens)
            bar.set_postfix(tok_s=f"{done_tok / max(time.monotonic() - start, 1e-9):.0f}")
        write_shard(out, index, s, feats, [e.tokens for e in part], [e.loss_mask for e in part])
        written += 1
        if stop_after_shards is not None and written >= stop_after_shards:
            break
    bar.close()
    elapsed = time.monotonic() - start
    log.info("extracted %d tokens in %.0f s (%.0f tok/s)", done_tok, elapsed, done_tok / max(elapsed, 1e-9))
    add_timing(out, index, "extract_s", elapsed)
    return index


def add_timing(out: Path, index: dict, key: str, seconds: float) -> None:
    """Add seconds of work to index["timing"][key] (summed over resumed runs) and rewrite the index."""
    index.setdefault("timing", {})
    index["timing"][key] = index["timing"].get(key, 0.0) + seconds
    write_json_atomic(out / INDEX, index)


def open_index(out: Path, fp: str, n_embd: int, shard_size: int, n_conversations: int, meta: dict | None) -> dict:
    """The index of out (resumed when it exists for the same inputs, else a new empty one, written).

    Raises:
        FeatureStoreError: if out holds an index for other inputs, another width or another shard size.
    """
    if (out / INDEX).is_file():
        index = read_index(out)
        differ = [f"{name} {str(have)[:12]} in the index, {str(want)[:12]} asked"  # a fingerprint by its first 12 digits
                  for name, have, want in (("fingerprint", index["fingerprint"], fp), ("n_embd", index["n_embd"], n_embd),
                                           ("shard size", index["shard_size"], shard_size))
                  if have != want]
        if differ:
            raise FeatureStoreError(f"{out} holds features of other inputs ({'; '.join(differ)}); use a fresh directory")
        log.info("resuming in %s: %d of %d shards done", out, len(index["shards"]), index["n_shards"])
        return index
    index = {"format": FORMAT_VERSION, "fingerprint": fp, "n_embd": n_embd, "shard_size": shard_size,
             "n_conversations": n_conversations, "n_shards": (n_conversations + shard_size - 1) // shard_size,
             "shards": {}, "meta": meta or {}}
    write_json_atomic(out / INDEX, index)
    return index


def pending_shards(out: Path, index: dict) -> list[int]:
    """Shards of the index not written yet (or listed but missing on disk)."""
    return [s for s in range(index["n_shards"])
            if str(s) not in index["shards"] or not (out / index["shards"][str(s)]["file"]).is_file()]


def write_shard(out: Path, index: dict, s: int, feats: Sequence[np.ndarray], tokens: Sequence[np.ndarray],
                loss_masks: Sequence[np.ndarray]) -> None:
    """Write shard s (per conversation: feat `[n, H]` f16, tokens `[n]`, loss_mask `[n]`) and record it in the index.

    The shard is written under a temporary name and renamed, then the index is rewritten atomically.
    """
    offsets = np.cumsum([0] + [len(t) for t in tokens]).astype(np.int64)  # [n_seq + 1]
    name = f"shard_{s:05d}.npz"
    tmp = out / (name + ".tmp.npz")
    np.savez(tmp, feat=np.concatenate(feats), tokens=np.concatenate(tokens).astype(np.int32),
             loss_mask=np.concatenate(loss_masks).astype(np.uint8), offsets=offsets)
    os.replace(tmp, out / name)
    index["shards"][str(s)] = {"file": name, "n_seq": len(tokens), "n_tokens": int(offsets[-1])}
    write_json_atomic(out / INDEX, index)


def is_complete(index: dict) -> bool:
    """Whether every shard of the index has been written."""
    return len(index["shards"]) == index["n_shards"]


@dataclass
class StoredSequence:
    """One stored conversation: feat `[n, H]` f16, tokens `[n]` i32, loss_mask `[n]` u8."""

    feat: np.ndarray
    tokens: np.ndarray
    loss_mask: np.ndarray


def load_sequences(out_dir: str | os.PathLike, *, allow_partial: bool = False) -> list[StoredSequence]:
    """All stored conversations, in order.

    Raises:
        FeatureStoreError: if the extraction is unfinished (unless allow_partial) or a shard is missing.
    """
    out = Path(out_dir)
    index = read_index(out)
    if not is_complete(index) and not allow_partial:
        raise FeatureStoreError(f"{out}: extraction unfinished ({len(index['shards'])} of {index['n_shards']} shards); "
                                "run it again to resume")
    seqs = []
    for s in sorted(index["shards"], key=int):
        path = out / index["shards"][s]["file"]
        if not path.is_file():
            raise FeatureStoreError(f"{path} is listed in the index but missing")
        with np.load(path) as z:
            feat, tokens, mask, offsets = z["feat"], z["tokens"], z["loss_mask"], z["offsets"]
        for a, b in itertools.pairwise(offsets):
            seqs.append(StoredSequence(feat[a:b], tokens[a:b], mask[a:b]))
    return seqs
