"""Stage 1 of training: build the mix, extract the target's features of fixed responses, and self-distill.

`prepare()` writes into one work directory:

    dataset.jsonl     the conversations with fixed responses actually used (after the token budget)
    features/         their features (falcon_edge.train.features)
    self-distilled/   prompts answered by the target itself, with features (falcon_edge.train.self_distill)
    mix.json          per source: records, records answered by the target, tokens, assistant tokens

Each step is skipped when its output exists, so a rerun after an interruption resumes.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

from . import data, features, self_distill

log = logging.getLogger("falcon_edge.train")

# default share of the fixed-response token budget per source
DEFAULT_SHARES = {
    "gsm8k-train": 0.35,
    "alpaca-demo": 0.30,
    "alpaca-eval-gpt4": 0.30,
    "alpaca-seed": 0.05,
}
# default share of the self-distillation prompts per source (ShareGPT prompts have no fixed response)
SELF_DISTILL_SHARES = {
    "sharegpt-prompts": 0.35,
    "gsm8k-train": 0.30,
    "alpaca-eval-gpt4": 0.20,
    "alpaca-demo": 0.15,
}
FIXED_DIR = "features"
SELF_DISTILLED_DIR = "self-distilled"


def feature_dirs(work_dir: str | os.PathLike) -> list[Path]:
    """The feature directories prepare() wrote into work_dir (fixed responses, self-distilled)."""
    work = Path(work_dir)
    return [work / d for d in (FIXED_DIR, SELF_DISTILLED_DIR) if (work / d / features.INDEX).is_file()]


def prepare(llm, work_dir: str | os.PathLike, *, data_dir: str | os.PathLike, token_budget: int,
            shares: dict[str, float] | None = None, self_distill_seconds: float = 0.0, self_distill_prompts: int = 4000,
            self_distill_max_tokens: int = 256, n_parallel: int = 16, max_len: int = 640, seed: int = 0,
            shard_size: int = 32, progress: bool = True, exclude: list[str | os.PathLike] = ()) -> list[Path]:
    """Build the training data for llm's target in work_dir.

    Args:
        llm: an EdgeFalcon on the target.
        work_dir: output directory.
        data_dir: the shared data directory (allowed sources only are read).
        token_budget: tokens of fixed-response conversations to extract (0: none); features cost
            ~1/75 s per token for a 1.5B Q4 target on 2 cores.
        shares: fraction of the token budget per source (DEFAULT_SHARES).
        self_distill_seconds: time for answers by the target itself (0: none), decoded n_parallel at a time.
        self_distill_prompts: prompts offered to self-distillation (SELF_DISTILL_SHARES of them per
            source, shuffled, so the mix holds wherever the time budget stops it).
        self_distill_max_tokens: answer length cap.
        n_parallel: sequences decoded together during self-distillation.
        max_len: truncate fixed-response conversations to this many tokens.
        seed: shuffling seed.
        shard_size: conversations per shard of fixed-response features (self-distillation writes shards of
            4 · n_parallel conversations).
        progress: tqdm bars.
        exclude: dataset.jsonl files of earlier runs: their prompts are not used again.

    Returns:
        the feature directories written (feature_dirs(work_dir)).
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    shares = dict(shares or DEFAULT_SHARES)
    seen = {c["messages"][0]["content"] for path in exclude for c in data.load_conversations(path)}
    template = "fallback: plain completion 'role: content'" if llm.template.is_fallback else "chat template"
    mix: dict[str, dict[str, int]] = {}
    if token_budget > 0:
        convs = _fixed_mix(llm, work / "dataset.jsonl", data_dir, shares, token_budget, max_len, seed, seen)
        seen |= {c["messages"][0]["content"] for c in convs}
        encoded = data.encode_all(convs, llm, max_len=max_len)
        mix = data.mix_summary(convs)
        for e in encoded:
            row = mix[e.source]
            row["tokens"] = row.get("tokens", 0) + len(e.tokens)
            row["assistant_tokens"] = row.get("assistant_tokens", 0) + int(e.loss_mask.sum())
        meta = {"target": str(llm.target_path), "mix": mix, "max_len": max_len, "template": template}
        features.extract(llm, encoded, work / FIXED_DIR, shard_size=shard_size, meta=meta, progress=progress)
    if self_distill_seconds > 0:
        rng = random.Random(seed + 1)
        pool = []
        for name, share in SELF_DISTILL_SHARES.items():
            rows = [c for c in data.read_source(name, data_dir) if c["messages"][0]["content"] not in seen]
            rng.shuffle(rows)
            pool.extend(rows[: int(share * self_distill_prompts)])
        rng.shuffle(pool)
        out = work / SELF_DISTILLED_DIR
        self_distill.distill(llm, pool, out, max_tokens=self_distill_max_tokens, n_parallel=n_parallel,
                             shard_size=4 * n_parallel, time_budget_s=self_distill_seconds,
                             meta={"target": str(llm.target_path), "seed": seed, "template": template}, progress=progress)
        for answer in data.read_jsonl(out / self_distill.ANSWERS):
            row = mix.setdefault(answer["source"], {"records": 0, "regenerated": 0})
            row["records"] += 1
            row["regenerated"] += 1
    (work / "mix.json").write_text(json.dumps(mix, indent=1))
    return feature_dirs(work)


def _fixed_mix(llm, dataset_path: Path, data_dir, shares: dict[str, float], token_budget: int, max_len: int,
               seed: int, seen: set[str]) -> list[dict]:
    """The fixed-response conversations within the token budget (reused from dataset_path when it exists)."""
    if dataset_path.is_file():
        convs = data.load_conversations(dataset_path)
        log.info("reusing %s (%d conversations)", dataset_path, len(convs))
        return convs
    rng = random.Random(seed)
    convs = []
    for name, share in shares.items():
        rows = [c for c in data.build_mix(data_dir, {name: -1}, seed=seed) if c["messages"][0]["content"] not in seen]
        budget, total = int(share * token_budget), 0
        for c in rows:
            if total >= budget:
                break
            e = _encode_or_none(c, llm, max_len)
            if e is not None:
                convs.append(c)
                total += len(e.tokens)
        log.info("mix: %s %d tokens (budget %d)", name, total, budget)
    rng.shuffle(convs)
    data.save_conversations(convs, dataset_path)
    return convs


def _encode_or_none(conv: dict, llm, max_len: int):
    try:
        e = data.encode(conv, llm.template, data.engine_tokenizer(llm), max_len=max_len)
    except data.DatasetError:
        return None
    return e if e.loss_mask.sum() > 0 else None
