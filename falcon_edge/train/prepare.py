"""Stage 1 of training: build the mix, regenerate some responses with the target, extract features.

`prepare()` writes into one work directory:

    dataset.jsonl     the conversations actually used (after regeneration and the token budget)
    mix.json          per source: records, regenerated records, tokens, assistant tokens
    features/         the shards (falcon_edge.train.features)

Each step is skipped when its output exists, so a rerun after an interruption resumes the extraction.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

from . import data, features

log = logging.getLogger("falcon_edge.train")

# default share of the token budget per source; ShareGPT prompts only count once regenerated
DEFAULT_SHARES = {
    "gsm8k-train": 0.30,
    "alpaca-demo": 0.25,
    "alpaca-eval-gpt4": 0.25,
    "alpaca-seed": 0.05,
    "sharegpt-prompts": 0.15,
}


def _take_by_tokens(encoded: list, budget: int) -> list:
    out, total = [], 0
    for e in encoded:
        if total >= budget:
            break
        out.append(e)
        total += len(e.tokens)
    return out


def prepare(llm, work_dir: str | os.PathLike, *, data_dir: str | os.PathLike, token_budget: int,
            shares: dict[str, float] | None = None, regen_seconds: float = 0.0, regen_max_tokens: int = 192,
            max_len: int = 640, seed: int = 0, shard_size: int = 32, progress: bool = True,
            exclude: list[str | os.PathLike] = ()) -> dict:
    """Build the training set for llm's target and extract its features into work_dir/features.

    Args:
        llm: an EdgeFalcon on the target.
        work_dir: output directory.
        data_dir: the shared data directory (allowed sources only are read).
        token_budget: total tokens to extract (features cost ~1/90 s per token for a 1.5B Q4 target on 2 cores).
        shares: fraction of the budget per source (DEFAULT_SHARES).
        regen_seconds: time for regenerating responses with the target (ShareGPT prompts first, then a
            share of the other sources); 0 = fixed responses only, ShareGPT prompts dropped.
        regen_max_tokens: cap of a regenerated response.
        max_len: truncate conversations to this many tokens.
        seed: shuffling seed.
        shard_size: conversations per shard.
        progress: tqdm bars.
        exclude: dataset.jsonl files of earlier runs: their prompts are not used again (to grow a
            training set with a second work directory).

    Returns:
        the feature index.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    shares = dict(shares or DEFAULT_SHARES)
    dataset_path = work / "dataset.jsonl"
    if dataset_path.is_file():
        convs = data.load_conversations(dataset_path)
        log.info("reusing %s (%d conversations)", dataset_path, len(convs))
    else:
        rng = random.Random(seed)
        seen = {c["messages"][0]["content"] for path in exclude for c in data.load_conversations(path)}
        by_source = {name: [c for c in data.build_mix(data_dir, {name: -1}, seed=seed) if c["messages"][0]["content"] not in seen]
                     for name in shares}
        if regen_seconds > 0 and "sharegpt-prompts" in by_source:
            pool = by_source["sharegpt-prompts"]
            rng.shuffle(pool)
            data.regenerate(pool, llm, max_tokens=regen_max_tokens, time_budget_s=regen_seconds,
                            max_prompt_tokens=320, progress=progress)
        by_source["sharegpt-prompts"] = [c for c in by_source.get("sharegpt-prompts", []) if c.get("regenerated")]
        convs = []
        for name, share in shares.items():
            encoded = [(c, e) for c in by_source[name] for e in [_encode_or_none(c, llm, max_len)] if e is not None]
            budget = int(share * token_budget)
            taken, total = [], 0
            for c, e in encoded:
                if total >= budget:
                    break
                taken.append(c)
                total += len(e.tokens)
            log.info("mix: %s %d conversations, %d tokens (budget %d)", name, len(taken), total, budget)
            convs.extend(taken)
        rng.shuffle(convs)
        data.save_conversations(convs, dataset_path)
    encoded = data.encode_all(convs, llm, max_len=max_len)
    mix = data.mix_summary(convs)
    for e in encoded:
        row = mix[e.source]
        row["tokens"] = row.get("tokens", 0) + len(e.tokens)
        row["assistant_tokens"] = row.get("assistant_tokens", 0) + int(e.loss_mask.sum())
    (work / "mix.json").write_text(json.dumps(mix, indent=1))
    meta = {"target": str(llm.target_path), "mix": mix, "max_len": max_len,
            "template": "fallback: plain completion 'role: content'" if llm.template.is_fallback else "chat template"}
    return features.extract(llm, encoded, work / "features", shard_size=shard_size, meta=meta, progress=progress)


def _encode_or_none(conv: dict, llm, max_len: int):
    try:
        e = data.encode(conv, llm.template, data.engine_tokenizer(llm), max_len=max_len)
    except data.DatasetError:
        return None
    return e if e.loss_mask.sum() > 0 else None
