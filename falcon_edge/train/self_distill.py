"""Self-distilled training data: the target's own greedy answers, with their features, in one pass.

A drafter is asked to predict what the target will say, so the target's own answers are the training
text that fits it best (fixed responses written by another model teach another style). The engine
decodes many answers in parallel sequences of one batch (`Engine.self_distill`), which on a CPU yields
several times the tokens per second of one-at-a-time generation, and returns the target's feature of
every prompt and answer token on the way, so no separate extraction pass is needed.

The output is an ordinary feature directory (falcon_edge.train.features): shards of
`shard_size` conversations, loss mask 1 on answer tokens, resumable shard by shard. Beside it,
`answers.jsonl` holds the conversations as text (dataset schema, "regenerated": true) for inspection
and for the data-mix record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import features as feature_store

log = logging.getLogger("falcon_edge.train")

ANSWERS = "answers.jsonl"


def _fingerprint(prompts: Sequence[Sequence[int]], max_tokens: int) -> str:
    """sha256 over the prompt tokens and the answer cap (what the shards are a function of)."""
    h = hashlib.sha256(f"self-distill:{max_tokens}".encode())
    for p in prompts:
        h.update(np.int64(len(p)).tobytes())
        h.update(np.asarray(p, dtype=np.int32).tobytes())
    return h.hexdigest()


def distill(llm, conversations: Sequence[dict], out_dir: str | os.PathLike, *, max_tokens: int = 256,
            n_parallel: int = 16, shard_size: int = 64, max_prompt_tokens: int = 384, time_budget_s: float | None = None,
            meta: dict | None = None, progress: bool = True) -> dict:
    """Answer every conversation's last user turn with the target and store the features.

    Args:
        llm: an EdgeFalcon on the target.
        conversations: dataset records; the messages before the last assistant turn are the prompt
            (the assistant content, fixed or None, is ignored).
        out_dir: the feature directory (created; resumed when it holds an index for the same inputs).
        max_tokens: answer length cap.
        n_parallel: sequences decoded together (throughput grows with it until the CPU is saturated).
        shard_size: conversations per shard.
        max_prompt_tokens: prompts longer than this are skipped.
        time_budget_s: stop at the first answer that completes after this many seconds: the answers
            of unfinished shards are written as shorter shards, those still being decoded are dropped,
            and the index is closed at the shards written (marked "stopped_early"), so it loads as a
            complete directory.
        meta: extra facts for the index.
        progress: tqdm bar with tokens/s.

    Returns:
        the index.

    Raises:
        FeatureStoreError: if out_dir holds features of other inputs.
        ValueError: if no prompt fits max_prompt_tokens.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eng = llm._native_engine()
    n_embd = int(eng.n_embd)
    prompts, records = [], []
    for c in conversations:
        tokens = llm.chat_tokens(c["messages"][:-1])
        if len(tokens) <= max_prompt_tokens:
            prompts.append(tokens)
            records.append(c)
    if not prompts:
        raise ValueError(f"no prompt fits max_prompt_tokens={max_prompt_tokens} (of {len(conversations)} conversations)")
    index = feature_store.open_index(out, _fingerprint(prompts, max_tokens), n_embd, shard_size, len(prompts),
                                     {"self_distilled": True, "max_tokens": max_tokens, **(meta or {})})
    todo = feature_store.pending_shards(out, index)
    # one native call for every pending prompt: answers arrive in completion order and a shard is
    # written as soon as all of its conversations are in, so the batch never drains between shards
    submitted = [i for s in todo for i in range(s * shard_size, min((s + 1) * shard_size, len(prompts)))]
    waiting = {s: {} for s in todo}  # shard -> {conversation index: answer}
    bar = tqdm(total=len(submitted), desc="self-distill", unit="conv", disable=not progress)
    start, n_tok = time.monotonic(), 0
    stopped = False

    def on_done(j: int, answer: tuple) -> bool:
        nonlocal n_tok, stopped
        i = submitted[j]
        s = i // shard_size
        waiting[s][i] = answer
        n_tok += len(answer[0]) - answer[1]
        bar.update(1)
        bar.set_postfix(answer_tok_s=f"{n_tok / max(time.monotonic() - start, 1e-9):.1f}")
        if len(waiting[s]) == min(shard_size, len(prompts) - s * shard_size):
            write(s)
        stopped = time_budget_s is not None and time.monotonic() - start > time_budget_s and bool(waiting)
        return not stopped

    def write(s: int) -> None:
        done = waiting.pop(s)
        _write(llm, out, index, s, [done[i] for i in sorted(done)], [records[i] for i in sorted(done)], n_embd)

    eng.self_distill([prompts[i] for i in submitted], max_tokens, n_parallel, on_done)
    bar.close()
    if stopped:
        for s in [s for s in sorted(waiting) if waiting[s]]:
            write(s)
        _close_early(index, time_budget_s)
    elapsed = time.monotonic() - start
    log.info("self-distilled %d answer tokens in %.0f s (%.1f tok/s)", n_tok, elapsed, n_tok / max(elapsed, 1e-9))
    feature_store.add_timing(out, index, "self_distill_s", elapsed)
    return index


def _write(llm, out: Path, index: dict, s: int, answers: list[tuple], records: list[dict], n_embd: int) -> None:
    """Shard s of the answers (engine tuples, in conversation order) and their lines of answers.jsonl."""
    eng = llm._native_engine()
    feats, tokens, masks, lines = [], [], [], []
    mix = index["meta"].setdefault("mix", {})
    for (toks, n_prompt, finished, raw), rec in zip(answers, records):
        toks = np.asarray(toks, dtype=np.int32)  # [n]
        feats.append(np.frombuffer(raw, dtype=np.float32).reshape(len(toks), n_embd).astype(np.float16))  # [n, H]
        tokens.append(toks)
        masks.append((np.arange(len(toks)) >= n_prompt).astype(np.uint8))  # [n]
        answer = [int(t) for t in toks[n_prompt:] if not eng.is_eog(int(t))]
        messages = [*rec["messages"][:-1], {"role": "assistant", "content": llm.detokenize(answer)}]
        lines.append(json.dumps({"source": rec["source"], "messages": messages, "regenerated": True,
                                 "finished": bool(finished)}, ensure_ascii=False))
        row = mix.setdefault(rec["source"], {"records": 0, "regenerated": 0, "tokens": 0, "assistant_tokens": 0})
        for key, value in (("records", 1), ("regenerated", 1), ("tokens", len(toks)), ("assistant_tokens", len(toks) - n_prompt)):
            row[key] += value
    feature_store.write_shard(out, index, s, feats, tokens, masks)
    with open(out / ANSWERS, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _close_early(index: dict, time_budget_s: float) -> None:
    """Shrink the index to the shards written so far (renumbered in order; their files keep their names)."""
    written = [index["shards"][k] for k in sorted(index["shards"], key=int)]
    index["shards"] = {str(i): v for i, v in enumerate(written)}
    index["n_shards"] = len(written)
    index["stopped_early"] = True
    log.info("time budget of %.0f s spent: closing at %d shards", time_budget_s, len(written))
