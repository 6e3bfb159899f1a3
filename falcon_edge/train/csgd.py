"""Coupled Sequential Glancing Distillation (Falcon, arXiv 2412.12639 §3.2), one training step at a time.

Alignment (docs/drafter-format.md, falcon-method.md §3): pair i = (f_i, t_{i+1}) is the drafter input at
position i; its output f̂ regresses f_{i+k}, and LMhead(f̂) predicts t_{i+k+1}. Blocks of k positions
are anchored at position 0.

A CSGD step on a batch:

1. noise: input features get U(-0.1, 0.1)·min(1, 512/L) (L = padded sequence length; EAGLE/Falcon's
   `(rand - 0.5) · 0.2 · 512 / L`, capped so short sequences keep the paper's U(-0.1, 0.1));
2. a no-grad pass counts d = loss-masked positions where argmax LMhead(f̂) ≠ argmax LMhead(f_{i+k})
   (the target's own greedy token there);
3. N = λ·d glancing slots, **aligned to block starts** (positions ≡ 0 mod k), sampled uniformly among
   loss-masked block starts; for k > 2, N // k starts each extended by 0 … k-2 consecutive positions
   inside their block (the public code's `b[::k]` starts at the first masked index, whose parity
   depends on the template, and then leaks f_{i+k} to the block partner that must predict f_{i+1});
4. coupled replacement at every slot i: (f_i, t_{i+1}) ← (f_{i+k}, t_{i+k+1}), feature and token together,
   taken from the unmodified inputs;
5. the graded pass on the modified inputs and the loss
   L = SmoothL1(f̂, f_{i+k}) + 0.1 · (0.9 · KL(p ‖ q) + 0.1 · CE(y, q)),
   p = softmax(LMhead f_{i+k}), q = softmax(LMhead f̂), KL with the code's temperature 0.95 inside the
   log-ratio and p untempered as the weight, y a Gumbel-max sample from p (not its argmax).

With a reduced draft vocabulary LMhead is the d2t rows for both p and q (p renormalised over them).
The "token-shift" objective (EAGLE-1, the no-CSGD ablation) skips steps 2–4 and uses
L = SmoothL1 + 0.1 · soft-CE(p, q).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .calibration import CANDIDATES, AcceptCounts

OBJECTIVES = ("csgd", "token-shift")
LAMBDA_SCHEDULES = ("paper", "code", "none")


@dataclass(frozen=True)
class CSGDConfig:
    """Loss weights and the glancing schedule.

    Attributes:
        objective: "csgd" (Falcon) or "token-shift" (EAGLE-1, no glancing).
        lambda_schedule: "paper" λ = 0.4·(1 - progress); "code" λ = 0.35·(1 - progress) + 0.1
            (the released code's 0.45 → 0.10 per epoch, made continuous); "none" λ = 0.
        w_reg: weight of the SmoothL1 feature loss (1.0).
        w_dist: weight of the distillation loss (0.1).
        kl_share: α of L_dist = α·KL + (1-α)·CE (0.9).
        kl_temperature: T inside the KL log-ratio (the code's 0.95; 1.0 = the textbook KL).
        noise: the noise width: U(-noise/2, noise/2)·512/L on input features (0.2).
    """

    objective: str = "csgd"
    lambda_schedule: str = "paper"
    w_reg: float = 1.0
    w_dist: float = 0.1
    kl_share: float = 0.9
    kl_temperature: float = 0.95
    noise: float = 0.2

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise ValueError(f"lambda_schedule must be one of {LAMBDA_SCHEDULES}, got {self.lambda_schedule!r}")


def glance_lambda(progress: float, schedule: str = "paper") -> float:
    """λ at a training progress in [0, 1] (step / total steps).

    paper: 0.4·(ep_t - ep_c)/ep_t, 0.4 → 0; code: (0.6 - 0.25)·(E - e)/E + 0.1, 0.45 → 0.1.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    if schedule == "paper":
        return 0.4 * (1.0 - progress)
    if schedule == "code":
        return 0.35 * (1.0 - progress) + 0.1
    if schedule == "none":
        return 0.0
    raise ValueError(f"lambda schedule must be one of {LAMBDA_SCHEDULES}, got {schedule!r}")


# ---- batches ------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Drafter inputs and targets for B padded sequences of T pairs.

    Attributes:
        feat: `[B, T, H]` input features f_i.
        tokens: `[B, T]` input tokens t_{i+1}.
        target: `[B, T, H]` regression targets f_{i+k} (zeros where absent).
        valid: `[B, T]` bool, positions that count in the loss: f_{i+k} exists and t_{i+k+1} is an
            assistant token.
        lengths: `[B]` pairs per sequence (T_b = n_b - 1).
    """

    feat: torch.Tensor
    tokens: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    lengths: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(self.feat.to(device), self.tokens.to(device), self.target.to(device), self.valid.to(device),
                     self.lengths.to(device))


def make_batch(sequences, k: int) -> Batch:
    """Pairs, targets and loss positions of stored sequences (objects with feat `[n, H]`, tokens `[n]`, loss_mask `[n]`).

    Pair i = (f_i, t_{i+1}), i = 0 … n-2; target f_{i+k}; position i counts iff i + k <= n - 1 and the
    token f_{i+k} predicts (t_{i+k+1}, or the last token itself at the end) is an assistant token.
    """
    lengths = [len(s.tokens) - 1 for s in sequences]
    b, t = len(sequences), max(lengths)
    h = sequences[0].feat.shape[1]
    feat = torch.zeros(b, t, h)
    tokens = torch.zeros(b, t, dtype=torch.long)
    target = torch.zeros(b, t, h)
    valid = torch.zeros(b, t, dtype=torch.bool)
    for j, s in enumerate(sequences):
        n = len(s.tokens)
        f = torch.as_tensor(np.asarray(s.feat, dtype=np.float32))  # [n, H]
        mask = np.asarray(s.loss_mask, dtype=bool)
        feat_mask = np.concatenate([mask[1:], mask[-1:]])  # [n]: f_j predicts t_{j+1}
        feat[j, : n - 1] = f[: n - 1]
        tokens[j, : n - 1] = torch.as_tensor(np.asarray(s.tokens[1:], dtype=np.int64))
        if n - k > 0:
            target[j, : n - k] = f[k:]
            valid[j, : n - k] = torch.as_tensor(feat_mask[k:])
    return Batch(feat, tokens, target, valid, torch.tensor(lengths))


def add_noise(feat: torch.Tensor, width: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """feat + U(-width/2, width/2)·min(1, 512/L), L = feat.shape[1].

    EAGLE-1 / Falcon scale by 512/L, written for ShareGPT conversations of ~1-2k tokens; the cap keeps
    short sequences at the paper's stated U(-0.1, 0.1) instead of up to ±0.5 for L = 100.
    """
    if width <= 0:
        return feat
    u = torch.rand(feat.shape, generator=generator, device="cpu").to(feat.device)  # [B, T, H]
    return feat + (u - 0.5) * width * min(1.0, 512.0 / feat.shape[1])


# ---- glancing -----------------------------------------------------------------------------------


def glancing_slots(valid: torch.Tensor, length: int, n_glance: float, k: int, rng: np.random.Generator) -> list[int]:
    """Positions of one sequence whose inputs get the coupled ground truth.

    Args:
        valid: `[T]` bool loss positions.
        length: the sequence's real number of pairs T_b (slots need a source pair at i + k < T_b).
        n_glance: N = λ·d.
        k: block size.
        rng: numpy generator.

    Returns:
        sorted positions: k = 2: int(N) block starts; k > 2: N // k block starts, each extended by 0 … k-2
        consecutive positions within its block. Every start is ≡ 0 mod k and loss-masked.
    """
    valid = valid.detach().cpu().numpy()
    starts = [i for i in range(0, length - k, k) if valid[i]]
    n_starts = int(n_glance) if k == 2 else int(n_glance) // k
    n_starts = min(n_starts, len(starts))
    if n_starts <= 0:
        return []
    chosen = rng.choice(len(starts), size=n_starts, replace=False)
    slots = []
    for c in chosen:
        s = starts[int(c)]
        extra = int(rng.integers(0, k - 1)) if k > 2 else 0  # 0 … k-2
        slots.extend(j for j in range(s, s + extra + 1) if j + k < length)
    return sorted(slots)


def apply_glance(feat: torch.Tensor, tokens: torch.Tensor, slots: list[list[int]], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled replacement (f_i, t_{i+1}) ← (f_{i+k}, t_{i+k+1}) at every slot, from the unmodified inputs.

    Args:
        feat: `[B, T, H]`; tokens: `[B, T]`; slots: per sequence, positions.

    Returns:
        new (feat, tokens); the inputs are not modified.
    """
    feat_out, tokens_out = feat.clone(), tokens.clone()
    for b, positions in enumerate(slots):
        if positions:
            idx = torch.as_tensor(positions, device=feat.device)
            feat_out[b, idx] = feat[b, idx + k]
            tokens_out[b, idx] = tokens[b, idx + k]
    return feat_out, tokens_out


# ---- losses -------------------------------------------------------------------------------------


def gumbel_labels(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample from softmax(logits) per row by the Gumbel-max trick (= gumbel_softmax(hard=True)'s argmax)."""
    u = torch.rand(logits.shape, generator=generator, device="cpu").to(logits.device).clamp_(1e-10, 1.0)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


def falcon_loss(pred: torch.Tensor, target: torch.Tensor, logits_d: torch.Tensor, logits_t: torch.Tensor,
                config: CSGDConfig, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Falcon's loss (or EAGLE-1's for objective "token-shift") over M loss positions.

    Args:
        pred: `[M, H]` predicted features f̂; target: `[M, H]` f_{i+k}.
        logits_d: `[M, V']` LMhead(f̂); logits_t: `[M, V']` LMhead(f_{i+k}).

    Returns:
        {"loss", "reg", "kl", "ce"} (scalars; kl and ce are the soft-CE for token-shift).
    """
    reg = F.smooth_l1_loss(pred, target, reduction="none").mean(-1).mean()
    logp_t = F.log_softmax(logits_t.float(), -1)  # [M, V']
    p = logp_t.exp()
    logq = F.log_softmax(logits_d.float(), -1)  # [M, V']
    if config.objective == "token-shift":
        soft_ce = -(p * logq).sum(-1).mean()
        return {"loss": config.w_reg * reg + config.w_dist * soft_ce, "reg": reg, "kl": soft_ce, "ce": soft_ce}
    temp = config.kl_temperature
    kl = (p * (F.log_softmax(logits_t.float() / temp, -1) - F.log_softmax(logits_d.float() / temp, -1))).sum(-1).mean()
    labels = gumbel_labels(logits_t.float(), generator)  # [M]
    ce = F.nll_loss(logq, labels)
    dist = config.kl_share * kl + (1.0 - config.kl_share) * ce
    return {"loss": config.w_reg * reg + config.w_dist * dist, "reg": reg, "kl": kl, "ce": ce}


# ---- one step -----------------------------------------------------------------------------------


def csgd_step(model, batch: Batch, config: CSGDConfig, progress: float, rng: np.random.Generator,
              generator: torch.Generator | None = None, *, noise: bool = True) -> dict:
    """Both passes of one step; returns the loss (with grad) and statistics. The caller does backward().

    Args:
        model: the FalconDrafter (or DDP-wrapped one; .module is used for the no-grad pass and logits).
        batch: inputs on the model's device.
        config: losses and schedule.
        progress: step / total steps, for λ.
        rng: numpy generator for slot sampling; generator: torch generator for noise and Gumbel samples.
        noise: add input noise (off for validation).

    Returns:
        {"loss": tensor, "reg", "kl", "ce": float, "lambda", "mismatch", "glanced", "positions": int,
         "agree": float top-1 agreement of the no-grad pass (or the graded pass for token-shift)}.
    """
    core = getattr(model, "module", model)
    k = core.config.block_size
    feat = add_noise(batch.feat, config.noise, generator) if noise else batch.feat
    tokens = batch.tokens
    valid = batch.valid
    with torch.no_grad():
        tgt = batch.target[valid]  # [M, H]
        logits_t = core.logits(tgt)  # [M, V']
        top_t = logits_t.argmax(-1)  # [M]
    lam, mismatch, glanced = 0.0, 0, 0
    agree = None
    if config.objective == "csgd":
        lam = glance_lambda(progress, config.lambda_schedule)
        with torch.no_grad():
            pred0 = core(feat, tokens)  # [B, T, H]
            wrong = torch.zeros_like(valid)
            wrong[valid] = core.logits(pred0[valid]).argmax(-1) != top_t
            agree = 1.0 - wrong.sum().item() / max(int(valid.sum()), 1)
        slots = []
        for b in range(feat.shape[0]):
            d = int(wrong[b].sum())
            mismatch += d
            slots.append(glancing_slots(valid[b], int(batch.lengths[b]), lam * d, k, rng))
            glanced += len(slots[-1])
        feat, tokens = apply_glance(feat, tokens, slots, k)
    pred = model(feat, tokens)[valid]  # [M, H]
    logits_d = core.logits(pred)  # [M, V']
    losses = falcon_loss(pred, tgt, logits_d, logits_t, config, generator)
    if agree is None:
        agree = (logits_d.argmax(-1) == top_t).float().mean().item()
    out = {"loss": losses["loss"], "lambda": lam, "mismatch": mismatch, "glanced": glanced,
           "positions": int(valid.sum()), "agree": agree}
    out.update({name: float(losses[name].detach()) for name in ("reg", "kl", "ce")})
    return out


@torch.no_grad()
def evaluate(model, batches, k: int) -> dict:
    """Held-out readout with teacher-forced inputs (no noise, no glancing), as the drafter starts a draft.

    Position i ≡ j (mod k) predicts depth j + 1 below the last committed token. Reports top-1 agreement
    with the target's greedy token per depth, the chance that a depth-2 token is right given depth 1
    is (k ≥ 2), α = the mean top-1 agreement over depths, and the acceptance rate per engine key
    (``accept_rates``, calibration.AcceptCounts; ``accept_trials`` counts its trials).

    Args:
        model: the drafter; batches: iterable of Batch on the model's device; k: block size.
    """
    core = getattr(model, "module", model)
    hits = np.zeros(k)
    counts = np.zeros(k)
    both, first = 0, 0
    loss_sum, n_loss = 0.0, 0
    accept = AcceptCounts()
    for batch in batches:
        pred = core(batch.feat, batch.tokens)  # [B, T, H]
        t = batch.feat.shape[1]
        depth = (torch.arange(t, device=pred.device) % k).expand_as(batch.valid)  # [B, T]
        logits_t = core.logits(batch.target[batch.valid])
        logits_d = core.logits(pred[batch.valid])
        target_id = logits_t.argmax(-1)  # [n]
        ok = torch.zeros_like(batch.valid)
        ok[batch.valid] = logits_d.argmax(-1) == target_id
        n_cand = min(CANDIDATES, logits_d.shape[-1])
        top_p, top_id = torch.softmax(logits_d.float(), -1).topk(n_cand, -1)  # [n, C]
        cand_p = torch.zeros(*batch.valid.shape, n_cand, device=pred.device)  # [B, T, C]
        cand_hit = torch.zeros(*batch.valid.shape, n_cand, dtype=torch.bool, device=pred.device)  # [B, T, C]
        cand_p[batch.valid] = top_p
        cand_hit[batch.valid] = top_id == target_id[:, None]
        accept.add(cand_p, cand_hit, batch.valid, k)
        loss_sum += F.smooth_l1_loss(pred[batch.valid], batch.target[batch.valid], reduction="none").mean(-1).sum().item()
        n_loss += int(batch.valid.sum())
        for j in range(k):
            sel = batch.valid & (depth == j)
            hits[j] += ok[sel].sum().item()
            counts[j] += sel.sum().item()
        if k >= 2:
            # block starts whose partner is also a loss position: chain of two
            starts = batch.valid[:, 0:t - 1:k] & batch.valid[:, 1:t:k][:, : batch.valid[:, 0:t - 1:k].shape[1]]
            ok0 = ok[:, 0:t - 1:k][:, : starts.shape[1]]
            ok1 = ok[:, 1:t:k][:, : starts.shape[1]]
            first += (ok0 & starts).sum().item()
            both += (ok0 & ok1 & starts).sum().item()
    top1 = [float(h / c) if c else math.nan for h, c in zip(hits, counts)]
    return {"top1_per_depth": top1, "alpha": float(np.nansum(hits) / max(np.sum(counts), 1)),
            "p_depth2_given_1": float(both / first) if first else math.nan,
            "reg_loss": loss_sum / max(n_loss, 1), "positions": int(counts.sum()),
            "accept_rates": accept.rates(), "accept_trials": accept.trials.tolist()}
