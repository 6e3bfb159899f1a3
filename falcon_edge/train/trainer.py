"""Drafter training: the loop around csgd_step, checkpoints, validation, the draft vocabulary, the GGUF.

`falcon-edge train` has three stages, each resumable:

    falcon-edge train prepare --target qwen2.5-coder-1.5b-instruct --work runs/qwen --tokens 80000
    falcon-edge train fit     --target qwen2.5-coder-1.5b-instruct --work runs/qwen --out drafter.gguf
    (falcon-edge train all    does both)

`prepare` builds the data mix and extracts the target's features (falcon_edge.train.prepare); `fit`
trains with CSGD (falcon_edge.train.csgd), validates on held-out training conversations each epoch,
and converts the result to a falcon-sar GGUF through falcon_edge.convert.

Runs on CPU, or CUDA when torch sees a GPU. Under torchrun (WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel and every rank takes every WORLD_SIZE-th batch; rank 0 validates, saves and
converts. The DDP path is tested with 2 CPU ranks (gloo) under torchrun; multi-GPU (NCCL) has not been run here.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from falcon_edge import gguf_schema, host
from falcon_edge.convert import read_gguf, write_gguf

from . import card
from . import features as feature_store
from .csgd import CSGDConfig, csgd_step, evaluate, make_batch
from .model import DrafterConfig, FalconDrafter
from .target_weights import load_target_embeddings, read_target_meta

log = logging.getLogger("falcon_edge.train")

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"  # the drafter of the best validation so far (export_checkpoint's layout plus "validation")


@dataclass
class TrainConfig:
    """Everything fit() needs besides the data.

    Attributes:
        n_layer, n_ff, fusion, block_size: the drafter's shape (the rest follows the target).
        draft_vocab: V' of the reduced draft vocabulary (0 = the target's full vocabulary).
        epochs: passes over the training conversations.
        time_budget_s: stop training after this long (0 = no limit); the step count of the λ and lr
            schedules is then fitted to the budget from the measured step time.
        tokens_per_batch: pairs per optimiser step (sequences are grouped up to this many tokens).
        lr, warmup_steps, min_lr_ratio: AdamW (0.9, 0.95) learning rate, linear warmup, cosine decay
            to lr·min_lr_ratio.
        weight_decay: AdamW weight decay.
        grad_clip: clip gradients by value (the Falcon code clips by value 0.5); 0 = off.
        heldout: fraction of conversations held out for validation.
        save_every: steps between checkpoints (also at every epoch end).
        seed: RNG seed.
        amp: "bf16" runs the forward passes under torch.autocast in bfloat16 (losses and optimiser stay
            float32), "off" = float32, "auto" (default) = bf16 where it pays (resolve_amp).
        csgd: the objective (csgd.CSGDConfig).
    """

    n_layer: int = 1
    n_ff: int = 2048
    fusion: str = gguf_schema.FUSION_LINEAR
    block_size: int = 2
    draft_vocab: int = 16384
    epochs: int = 2
    time_budget_s: float = 0.0
    tokens_per_batch: int = 2048
    lr: float = 3e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 0.5
    heldout: float = 0.05
    save_every: int = 50
    seed: int = 0
    amp: str = "auto"
    csgd: CSGDConfig = field(default_factory=CSGDConfig)


# The peak learning rate a continuation (--init-from) defaults to. A fresh AdamW at TrainConfig.lr moved the shipped
# drafter far enough to undo what it knew: on the same new answers, 3e-4 left its agreement with the target where it
# started and 1e-4 raised it by 0.017 (docs/training.md, session 26).
LR_CONTINUE = 1e-4


# ---- the draft vocabulary -----------------------------------------------------------------------


def token_counts(sequences, n_vocab: int, assistant_only: bool = True) -> np.ndarray:
    """`[n_vocab]` counts of tokens (assistant tokens only by default) over stored sequences."""
    counts = np.zeros(n_vocab, dtype=np.int64)
    for s in sequences:
        toks = np.asarray(s.tokens)
        if assistant_only:
            toks = toks[np.asarray(s.loss_mask, dtype=bool)]
        np.add.at(counts, toks, 1)
    return counts


def choose_draft_vocab(counts: np.ndarray, size: int) -> np.ndarray:
    """The `size` most frequent ids, ties (and never-seen ids) broken by the lower id (BPE merge order).

    Returns:
        `[size]` int32 target ids, most frequent first.
    """
    order = np.lexsort((np.arange(len(counts)), -counts))  # by count desc, then id asc
    return order[:size].astype(np.int32)


def coverage(d2t: np.ndarray, sequences) -> float:
    """Fraction of held-out assistant tokens inside the draft vocabulary (an upper bound on top-1 agreement)."""
    inside = np.zeros(int(d2t.max()) + 1 if len(d2t) else 1, dtype=bool)
    inside[d2t] = True
    hit = total = 0
    for s in sequences:
        toks = np.asarray(s.tokens)[np.asarray(s.loss_mask, dtype=bool)]
        hit += int(inside[toks[toks < len(inside)]].sum())
        total += len(toks)
    return hit / max(total, 1)


# ---- batching -----------------------------------------------------------------------------------


def make_batches(sequences, tokens_per_batch: int, rng: random.Random) -> list[list[int]]:
    """Indices of sequences grouped into batches of about tokens_per_batch padded tokens (similar lengths together)."""
    order = list(range(len(sequences)))
    rng.shuffle(order)
    # sort within windows of 64 by length so padding stays small, keep the shuffle across windows
    chunks = [sorted(order[i : i + 64], key=lambda j: len(sequences[j].tokens)) for i in range(0, len(order), 64)]
    batches, cur, cur_max = [], [], 0
    for chunk in chunks:
        for j in chunk:
            n = len(sequences[j].tokens)
            if cur and max(cur_max, n) * (len(cur) + 1) > tokens_per_batch:
                batches.append(cur)
                cur, cur_max = [], 0
            cur.append(j)
            cur_max = max(cur_max, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to lr·min_lr_ratio at `total`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    t = min(1.0, (step - config.warmup_steps) / max(total - config.warmup_steps, 1))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


# ---- checkpoints --------------------------------------------------------------------------------


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_checkpoint(model: FalconDrafter, accept_rates: list[float]) -> dict:
    """The converter's checkpoint: {"config", "state_dict", "accept_rates"} (d2t travels inside the state dict;
    accept_rates are the held-out rates per acceptance key measured on these weights, calibration.py)."""
    return {"config": model.config.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "accept_rates": accept_rates}


def load_init(path: str | os.PathLike) -> dict:
    """Weights to start a run from, in export_checkpoint's layout: an earlier run's drafter.pt, or a falcon-sar
    GGUF such as a shipped drafter (its weights dequantized, its d2t kept).

    Raises:
        FileNotFoundError: if path does not exist.
        ValueError: if a GGUF is not a falcon-sar drafter.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {path}: no such file")
    if path.suffix != ".gguf":
        return torch.load(path, map_location="cpu", weights_only=False)
    config, state = read_gguf.read_drafter_state(path)
    return {"config": config.to_dict(), "state_dict": state}


# ---- the loop -----------------------------------------------------------------------------------


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world


def _reduce_over_ranks(value: int, op, world: int, dev: torch.device) -> int:
    """`value` reduced by `op` (a torch.distributed.ReduceOp) over all ranks: under DDP every rank must leave the
    loop at the same step, so a stop decided from one rank's clock is shared."""
    if world == 1:
        return value
    t = torch.tensor([value], device=dev)
    torch.distributed.all_reduce(t, op=op)
    return int(t.item())


def rank_batches(batches: list, rank: int, world: int) -> list:
    """This rank's share of an epoch's batches: every WORLD_SIZE-th, the list first wrapped around to a multiple of
    WORLD_SIZE so that every rank takes the same number of steps (DDP's all-reduce waits for all of them)."""
    n_padded = -(-len(batches) // world) * world
    return [batches[i % len(batches)] for i in range(rank, n_padded, world)]


def _epoch_batches(train_seqs, config: TrainConfig, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This rank's batches of one epoch; each epoch shuffles anew, so their number can differ from epoch to epoch."""
    return rank_batches(make_batches(train_seqs, config.tokens_per_batch, random.Random(config.seed + epoch)), rank, world)


def split_heldout(sequences, fraction: float, seed: int):
    """(train, heldout): a seeded random `fraction` of conversations (at least one) is held out."""
    idx = list(range(len(sequences)))
    random.Random(seed).shuffle(idx)
    n_held = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
    held = set(idx[:n_held])
    return [s for i, s in enumerate(sequences) if i not in held], [s for i, s in enumerate(sequences) if i in held]


def fit(target_gguf: str | os.PathLike, feature_dir: str | os.PathLike, work_dir: str | os.PathLike,
        config: TrainConfig, *, out_gguf: str | os.PathLike | None = None, outtype: str = "q8_0",
        progress: bool = True, device: str | None = None, max_steps: int | None = None,
        allow_partial: bool = False, init_from: str | os.PathLike | None = None) -> dict:
    """Train a drafter on extracted features; resume from work_dir/checkpoint.pt when present.

    Args:
        target_gguf: the target file (embedding, LM head, hyper-parameters).
        feature_dir: a complete feature directory, or a list of them (e.g. a second extraction that
            grew the data set; their conversations are concatenated).
        work_dir: checkpoints and report.json go here.
        config: the training configuration.
        out_gguf: convert the result to this falcon-sar GGUF (None: no conversion), with its model card beside it
            (the same name, ``.md``).
        outtype: the converter's weight type.
        progress: tqdm bar.
        device: torch device (default: cuda when available, else cpu).
        allow_partial: also train on the finished shards of an unfinished extraction.
        init_from: start from the weights of an earlier run's drafter.pt or of a drafter GGUF (same shape and draft vocabulary;
            the optimizer and schedules start fresh), e.g. to continue training with more data.
        max_steps: stop after this many steps in total (an interruption, for tests); the schedules keep
            their full length.

    Returns:
        the report: configuration, data, steps, wall time, coverage, validation per epoch and the selected
        validation ("selected": the best α; its drafter is the one exported to drafter.pt and out_gguf).

    Raises:
        ValueError: no feature directory (an empty list: nothing was prepared), or features of another target.
    """
    from tqdm import tqdm

    rank, world = _dist_info()
    work = Path(work_dir)
    feature_dirs = [feature_dir] if isinstance(feature_dir, (str, os.PathLike)) else list(feature_dir)
    if not feature_dirs:
        raise ValueError(f"no features in {work}: run `falcon-edge train prepare` first")
    work.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or (f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"))
    config = replace(config, amp=resolve_amp(config.amp, dev))  # the report names what ran
    log.info("autocast: %s", config.amp)
    torch.manual_seed(config.seed)
    indexes = [feature_store.read_index(d) for d in feature_dirs]
    sequences = [s for d in feature_dirs for s in feature_store.load_sequences(d, allow_partial=allow_partial)]
    index = _merge_indexes(indexes)
    train_seqs, held = split_heldout(sequences, config.heldout, config.seed)
    meta = read_target_meta(target_gguf)
    if index["n_embd"] != meta["n_embd"]:
        raise ValueError(f"features have width {index['n_embd']}, the target {meta['n_embd']}: extracted from another model?")
    embed, lm_head = load_target_embeddings(target_gguf)
    ckpt_path = work / CHECKPOINT
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.is_file() else None
    init = load_init(init_from) if init_from is not None and state is None else None
    if state is not None:
        d2t = np.asarray(state["d2t"]) if state["d2t"] is not None else None
        log.info("resuming from %s at step %d", ckpt_path, state["step"])
    elif init is not None:
        d2t = init["state_dict"]["d2t"].numpy() if "d2t" in init["state_dict"] else None
        log.info("starting from the weights of %s", init_from)
    else:
        d2t = None
        if config.draft_vocab and config.draft_vocab < meta["n_vocab"]:
            d2t = choose_draft_vocab(token_counts(train_seqs, meta["n_vocab"]), config.draft_vocab)
    cov = {}
    for size in sorted({4096, 8192, 16384, 32768, config.draft_vocab} - {0}):
        if size < meta["n_vocab"]:
            cov[size] = coverage(choose_draft_vocab(token_counts(train_seqs, meta["n_vocab"]), size), held)
    if cov:
        log.info("held-out coverage of the draft vocabulary: %s", ", ".join(f"{v}: {c:.3f}" for v, c in cov.items()))
    dcfg = DrafterConfig.for_target(meta, n_layer=config.n_layer, n_ff=config.n_ff, fusion=config.fusion,
                                    block_size=config.block_size, draft_vocab_size=0 if d2t is None else len(d2t))
    model = FalconDrafter(dcfg, embed, None if lm_head is embed else lm_head, d2t).to(dev)
    del embed, lm_head
    if init is not None:
        if init["config"] != dcfg.to_dict():
            raise ValueError(f"{init_from} has another drafter shape: {init['config']} vs {dcfg.to_dict()}")
        model.load_state_dict(init["state_dict"])
    n_params = sum(p.numel() for p in model.parameters())
    log.info("drafter: %s, %.1fM trainable parameters", dcfg, n_params / 1e6)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    step, epoch, batch_pos, elapsed_prev = 0, 0, 0, 0.0
    history: list[dict] = []
    total_steps = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, epoch, batch_pos = state["step"], state["epoch"], state["batch_pos"]
        history, total_steps, elapsed_prev = state["history"], state["total_steps"], state["elapsed_s"]
    train_model = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel
        # the frozen target tensors (embed, lm_head, d2t) are buffers each rank loads from the same target file; synced,
        # they would cross the interconnect at every step (about 1 GB for Qwen2.5-1.5B); newer torch renames the switch
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
        train_model = ddp(model, device_ids=[dev.index] if dev.type == "cuda" else None, **{no_sync: False})
    k = dcfg.block_size
    held_batches = [make_batch([held[j] for j in b], k).to(dev) for b in make_batches(held, config.tokens_per_batch, random.Random(0))]
    if total_steps is None:
        total_steps = sum(len(_epoch_batches(train_seqs, config, e, rank, world)) for e in range(config.epochs))
    np_rng = np.random.default_rng(config.seed + 1000 * step + rank)
    gen = torch.Generator().manual_seed(config.seed + 1000 * step + rank)
    start = time.monotonic()
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress or rank != 0)
    stop = False
    budget_fitted = state is not None and config.time_budget_s > 0
    tokens_seen = 0
    while epoch < config.epochs and not stop:
        batches = _epoch_batches(train_seqs, config, epoch, rank, world)
        model.train()
        while batch_pos < len(batches):
            over_budget = config.time_budget_s > 0 and bool(_reduce_over_ranks(
                int(elapsed_prev + time.monotonic() - start > config.time_budget_s), torch.distributed.ReduceOp.MAX, world, dev))
            if step >= total_steps or (max_steps is not None and step >= max_steps) or over_budget:
                stop = True
                break
            batch = make_batch([train_seqs[j] for j in batches[batch_pos]], k).to(dev)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total_steps, config)
            with _autocast(dev, config.amp):
                out = csgd_step(train_model, batch, config.csgd, step / max(total_steps, 1), np_rng, gen)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip)
            opt.step()
            step += 1
            batch_pos += 1
            tokens_seen += int(batch.lengths.sum())
            elapsed = time.monotonic() - start
            if config.time_budget_s > 0 and not budget_fitted and step >= 10:
                # fit the schedules to the time left, from the measured step time
                per_step = elapsed / 10
                fitted = _reduce_over_ranks(int((config.time_budget_s - elapsed_prev) / per_step),
                                            torch.distributed.ReduceOp.MIN, world, dev)
                total_steps = max(step + 1, min(total_steps, fitted))
                budget_fitted = True
                bar.total = total_steps
                log.info("%.2f s/step: %d steps fit the %.0f s budget", per_step, total_steps, config.time_budget_s)
            bar.update(1)
            bar.set_postfix(loss=f"{out['loss'].item():.3f}", agree=f"{out['agree']:.2f}", lam=f"{out['lambda']:.2f}",
                            tok_s=f"{tokens_seen / max(elapsed, 1e-9):.0f}")
            if rank == 0 and step % config.save_every == 0:
                _save_checkpoint(ckpt_path, model, opt, step, epoch, batch_pos, history, total_steps,
                                 elapsed_prev + elapsed, d2t)
        else:
            epoch += 1
            batch_pos = 0
            if rank == 0:
                _record_validation(work, model, history, _validate(model, held_batches, k, epoch, step, dev, config.amp))
                _save_checkpoint(ckpt_path, model, opt, step, epoch, batch_pos, history, total_steps,
                                 elapsed_prev + time.monotonic() - start, d2t)
    bar.close()
    wall = elapsed_prev + time.monotonic() - start
    if world > 1:
        # the last collective is behind: each rank leaves the group before exiting (rank 0 goes on alone), so no
        # rank's gloo threads are still running when its interpreter shuts down
        torch.distributed.destroy_process_group()
    if rank != 0:
        return {}
    if not history or history[-1]["step"] != step:
        _record_validation(work, model, history, _validate(model, held_batches, k, epoch, step, dev, config.amp))
    _save_checkpoint(ckpt_path, model, opt, step, epoch, batch_pos, history, total_steps, wall, d2t)
    final = work / "drafter.pt"
    best = torch.load(work / BEST, map_location="cpu", weights_only=False)
    selected = best.pop("validation")
    if selected["step"] != step:
        log.info("keeping the drafter of epoch %d (step %d, alpha %.3f): the last validation scored alpha %.3f",
                 selected["epoch"], selected["step"], selected["alpha"], history[-1]["alpha"])
    _save_atomic(best, final)
    report = {"target": str(target_gguf), "drafter": dcfg.to_dict(), "train": {**asdict(config), "csgd": asdict(config.csgd)},
              "trainable_params": n_params, "steps": step, "epochs_done": epoch, "wall_s": wall,
              "device": str(dev), "world_size": world, "torch_threads": torch.get_num_threads(),
              "data": {"conversations_train": len(train_seqs), "conversations_heldout": len(held),
                       "tokens_train": int(sum(len(s.tokens) for s in train_seqs)), "mix": index.get("meta", {}).get("mix"),
                       "template": index.get("meta", {}).get("template"),
                       "extract_s": index.get("timing", {}).get("extract_s")},
              "draft_vocab_coverage": {str(v): c for v, c in cov.items()}, "validation": history,
              "selected": {key: selected[key] for key in ("epoch", "step", "alpha")}}
    if out_gguf is not None:
        write_gguf.run(final, target_gguf, out_gguf, outtype=outtype, progress=False)
        report["gguf"] = {"path": str(out_gguf), "bytes": Path(out_gguf).stat().st_size, "outtype": outtype}
    (work / "report.json").write_text(json.dumps(report, indent=1, default=str))
    if out_gguf is not None:
        card_path = Path(out_gguf).with_suffix(".md")
        card_path.write_text(card.render(report, name=Path(out_gguf).name, target_name=Path(target_gguf).stem,
                                         hardware=host.describe()))
        log.info("wrote the model card %s", card_path)
    return report


AMP_CHOICES = ("auto", "bf16", "off")


def resolve_amp(amp: str, dev: torch.device, cpu_flags: set[str] | None = None) -> str:
    """"bf16" or "off" for amp on dev: "auto" takes bf16 on a GPU that supports it and on a CPU with AMX.

    A CPU with AVX512-BF16 but no AMX ran the drafter's LM-head matmul (forward + backward, 1024 x 1536 x 16384, one
    thread) in 1.69 s under bf16 autocast against 0.92 s in float32 (docs/training.md); with AMX bf16 was ~2x faster
    per step. cpu_flags: /proc/cpuinfo's flags (read when None; empty where there is no such file).

    Raises:
        ValueError: if amp is not one of AMP_CHOICES.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp != "auto":
        return amp
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "off"
    if cpu_flags is None:
        cpuinfo = Path("/proc/cpuinfo")
        cpu_flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    return "bf16" if dev.type == "cpu" and "amx_bf16" in cpu_flags else "off"


def _autocast(dev: torch.device, amp: str):
    """amp: resolved by resolve_amp ("bf16" or "off")."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16)


def _merge_indexes(indexes: list[dict]) -> dict:
    """One index for several feature directories: the mix summed per source, extraction and self-distillation times summed."""
    if len({i["n_embd"] for i in indexes}) != 1:
        raise ValueError(f"feature directories of different widths: {[i['n_embd'] for i in indexes]}")
    mix: dict = {}
    for i in indexes:
        for source, row in (i.get("meta", {}).get("mix") or {}).items():
            acc = mix.setdefault(source, {})
            for key, value in row.items():
                acc[key] = acc.get(key, 0) + value
    return {"n_embd": indexes[0]["n_embd"],
            "meta": {"mix": mix, "template": indexes[0].get("meta", {}).get("template")},
            "timing": {"extract_s": sum(i.get("timing", {}).get(key, 0.0) for i in indexes for key in ("extract_s", "self_distill_s"))}}


def _validate(model, held_batches, k: int, epoch: int, step: int, dev: torch.device, amp: str) -> dict:
    model.eval()
    with _autocast(dev, amp):
        res = evaluate(model, held_batches, k)
    model.train()
    res.update({"epoch": epoch, "step": step})
    log.info("validation epoch %d step %d: alpha %.3f, top-1 per depth %s, P(d2|d1) %.3f", epoch, step, res["alpha"],
             ", ".join(f"{x:.3f}" for x in res["top1_per_depth"]), res["p_depth2_given_1"])
    return res


def _record_validation(work: Path, model, history: list[dict], res: dict) -> None:
    """Appends a validation to the history and keeps the drafter in work/BEST when it has the best α so far (the first
    of equals). Training continues from the current weights either way; fit exports the best drafter at the end."""
    best_path = work / BEST
    best_alpha = max((h["alpha"] for h in history if h.get("kept")), default=-math.inf) if best_path.is_file() else -math.inf
    res["kept"] = res["alpha"] > best_alpha
    history.append(res)
    if res["kept"]:
        _save_atomic({**export_checkpoint(model, res["accept_rates"]), "validation": res}, best_path)


def _save_checkpoint(path, model, opt, step, epoch, batch_pos, history, total_steps, elapsed, d2t) -> None:
    _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "epoch": epoch,
                  "batch_pos": batch_pos, "history": history, "total_steps": total_steps, "elapsed_s": elapsed,
                  "d2t": None if d2t is None else np.asarray(d2t), "config": model.config.to_dict()}, path)


# ---- CLI ----------------------------------------------------------------------------------------


def add_cli(subparsers) -> None:
    """Register `train` with its stages prepare, fit and all."""
    p = subparsers.add_parser("train", help="train a Falcon drafter for a GGUF target (CSGD)")
    stages = p.add_subparsers(dest="train_stage", required=True)
    for name, helptext in (("prepare", "build the data mix and extract the target's features"),
                           ("fit", "train on extracted features and convert to GGUF"),
                           ("all", "prepare, then fit")):
        s = stages.add_parser(name, help=helptext)
        s.add_argument("--target", required=True, help="registry name or path of the target GGUF")
        s.add_argument("--work", required=True, help="work directory (dataset, features, checkpoints)")
        s.add_argument("--seed", type=int, default=0, help="random seed (prompt choice and order, initial weights, held-out split)")
        if name in ("prepare", "all"):
            s.add_argument("--data-dir", default=None, help="shared data directory (default: falcon_edge.datasets.data_dir())")
            s.add_argument("--tokens", type=int, default=80000, help="tokens of fixed-response conversations to extract")
            s.add_argument("--self-distill-seconds", type=float, default=0.0,
                           help="time for the target's own answers to training prompts (with their features)")
            s.add_argument("--parallel", type=int, default=16, help="sequences decoded together while self-distilling")
            s.add_argument("--self-distill-max-tokens", type=int, default=256, help="answer length cap while self-distilling")
            s.add_argument("--self-distill-prompts", type=int, default=4000,
                           help="training prompts offered to self-distillation (the time budget usually ends it first)")
            s.add_argument("--max-len", type=int, default=640, help="truncate conversations to this many tokens")
            s.add_argument("--n-ctx", type=int, default=2048, help="target context for extraction")
            s.add_argument("--llama-threads", type=int, default=None,
                           help="llama.cpp CPU threads for extraction and self-distillation (default: all cores)")
        if name in ("fit", "all"):
            s.add_argument("--out", default=None, help="write the drafter GGUF here")
            s.add_argument("--extra-features", action="append", default=[],
                           help="another feature directory to train on as well (repeatable)")
            s.add_argument("--allow-partial", action="store_true", help="use the finished shards of unfinished extractions")
            s.add_argument("--init-from", default=None,
                           help="start from an earlier run's drafter.pt or a drafter GGUF, e.g. a shipped one "
                           "(same shape; fresh optimizer and schedules)")
            s.add_argument("--outtype", default="q8_0", choices=list(write_gguf.OUTTYPES),
                           help="weight type of the drafter GGUF")
            s.add_argument("--n-ff", type=int, default=2048, help="SwiGLU width of the drafter")
            s.add_argument("--n-layer", type=int, default=1, help="decoder layers of the drafter")
            s.add_argument("--fusion", default=gguf_schema.FUSION_LINEAR, choices=list(gguf_schema.FUSIONS),
                           help="feature+embedding fusion: Falcon's LSTM or EAGLE-1's linear layer")
            s.add_argument("--block-size", type=int, default=2, help="k: tokens drafted per pass")
            s.add_argument("--draft-vocab", type=int, default=16384, help="V' (0 = full vocabulary)")
            s.add_argument("--epochs", type=int, default=2, help="passes over the training data")
            s.add_argument("--time-budget", type=float, default=0.0, help="seconds of training at most (0 = none)")
            s.add_argument("--tokens-per-batch", type=int, default=2048, help="tokens per optimizer step")
            s.add_argument("--lr", type=float, default=None, help=f"peak AdamW learning rate (default: "
                           f"{TrainConfig.lr:g}, or {LR_CONTINUE:g} with --init-from)")
            s.add_argument("--warmup", type=int, default=50, help="linear warmup steps")
            s.add_argument("--objective", default="csgd", choices=["csgd", "token-shift"],
                           help="CSGD (glancing) or EAGLE-1's token-shift objective")
            s.add_argument("--lambda-schedule", default="paper", choices=["paper", "code", "none"],
                           help="glancing ratio schedule (docs/training.md)")
            s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default); on a "
                           "shared 2-core machine 1 thread was 3-5x faster than 2")
            s.add_argument("--amp", default="auto", choices=list(AMP_CHOICES),
                           help="bfloat16 autocast for the forward passes (auto: on a GPU with bf16 and on a CPU with AMX)")
        s.set_defaults(func=_cli_train)


def _cli_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from falcon_edge import models

    target = models.resolve_model(args.target)
    work = Path(args.work)
    if args.train_stage in ("prepare", "all"):
        from falcon_edge import EdgeFalcon
        from falcon_edge.datasets import data_dir

        from .prepare import prepare

        llm = EdgeFalcon(target, drafter=None, n_ctx=args.n_ctx, n_threads=args.llama_threads)
        prepare(llm, work, data_dir=args.data_dir or data_dir(), token_budget=args.tokens,
                self_distill_seconds=args.self_distill_seconds, self_distill_prompts=args.self_distill_prompts,
                self_distill_max_tokens=args.self_distill_max_tokens, n_parallel=args.parallel, max_len=args.max_len,
                seed=args.seed)
        llm.close()
    if args.train_stage in ("fit", "all"):
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        config = TrainConfig(n_layer=args.n_layer, n_ff=args.n_ff, fusion=args.fusion, block_size=args.block_size,
                             draft_vocab=args.draft_vocab, epochs=args.epochs, time_budget_s=args.time_budget,
                             tokens_per_batch=args.tokens_per_batch,
                             lr=args.lr if args.lr is not None else LR_CONTINUE if args.init_from else TrainConfig.lr,
                             warmup_steps=args.warmup,
                             seed=args.seed, amp=args.amp, csgd=CSGDConfig(objective=args.objective, lambda_schedule=args.lambda_schedule))
        from .prepare import feature_dirs

        report = fit(target, [*feature_dirs(work), *args.extra_features], work, config, out_gguf=args.out,
                     outtype=args.outtype, allow_partial=args.allow_partial, init_from=args.init_from)
        if report:
            kept = next(h for h in report["validation"] if h["step"] == report["selected"]["step"])
            print(f"steps {report['steps']}, {report['wall_s']:.0f} s, exported the drafter of epoch {kept['epoch']} "
                  f"(step {kept['step']}): held-out alpha {kept['alpha']:.3f}, "
                  f"top-1 per depth {', '.join(f'{x:.3f}' for x in kept['top1_per_depth'])}")
            if args.out:
                print(f"wrote {args.out} ({report['gguf']['bytes'] / 1e6:.1f} MB)")
    return 0
