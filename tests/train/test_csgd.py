"""CSGD: the glancing step (block-aligned slots, coupled replacement), the λ schedule, the losses, a few steps of training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from falcon_edge import gguf_schema as gs
from falcon_edge.train.calibration import CANDIDATES
from falcon_edge.train.csgd import (
    CSGDConfig,
    add_noise,
    apply_glance,
    csgd_step,
    evaluate,
    falcon_loss,
    glance_lambda,
    glancing_slots,
    gumbel_labels,
    make_batch,
)
from falcon_edge.train.model import DrafterConfig, FalconDrafter


def _seq(n: int, h: int, assistant_from: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, np.uint8)
    mask[assistant_from:] = 1
    return SimpleNamespace(feat=rng.standard_normal((n, h)).astype(np.float16), tokens=np.arange(100, 100 + n, dtype=np.int32),
                           loss_mask=mask)


# ---- λ schedule ---------------------------------------------------------------------------------


def test_lambda_schedules():
    assert glance_lambda(0.0, "paper") == pytest.approx(0.4)
    assert glance_lambda(0.5, "paper") == pytest.approx(0.2)
    assert glance_lambda(1.0, "paper") == pytest.approx(0.0)
    assert glance_lambda(0.0, "code") == pytest.approx(0.45)
    assert glance_lambda(1.0, "code") == pytest.approx(0.10)
    assert glance_lambda(0.3, "none") == 0.0
    assert glance_lambda(-1.0, "paper") == pytest.approx(0.4) and glance_lambda(2.0, "paper") == 0.0
    values = [glance_lambda(p / 10) for p in range(11)]
    assert values == sorted(values, reverse=True)
    with pytest.raises(ValueError, match="lambda schedule"):
        glance_lambda(0.1, "linear")


# ---- batches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [12, 4, 3, 2])
@pytest.mark.parametrize("k", [2, 3])
def test_make_batch_alignment(k, n):
    h = 8
    s = _seq(n, h, assistant_from=min(5, n - 1))
    b = make_batch([s], k)
    f = torch.as_tensor(s.feat.astype(np.float32))
    assert b.feat.shape == (1, n - 1, h) and int(b.lengths[0]) == n - 1
    for i in range(n - 1):
        assert torch.equal(b.feat[0, i], f[i])  # pair i = (f_i, t_{i+1})
        assert int(b.tokens[0, i]) == int(s.tokens[i + 1])
        if i + k <= n - 1:
            assert torch.equal(b.target[0, i], f[i + k])  # target f_{i+k}
            # counts iff the token f_{i+k} predicts is an assistant token
            expect = bool(s.loss_mask[min(i + k + 1, n - 1)])
            assert bool(b.valid[0, i]) == expect
        else:
            assert not b.valid[0, i]


def test_make_batch_pads_shorter_sequences():
    b = make_batch([_seq(10, 4, 2), _seq(6, 4, 2, seed=1)], 2)
    assert b.feat.shape == (2, 9, 4)
    assert not b.valid[1, 5:].any() and b.tokens[1, 5:].eq(0).all()


# ---- glancing slots -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 4])
def test_slots_are_block_starts_or_extend_within_block(k):
    t = 40
    valid = torch.zeros(t, dtype=torch.bool)
    valid[7:] = True  # the first masked index is odd: the public code would start b[::k] there
    rng = np.random.default_rng(0)
    for trial in range(50):
        slots = glancing_slots(valid, t, n_glance=12, k=k, rng=rng)
        assert slots == sorted(set(slots))
        for j in slots:
            start = j - j % k
            assert valid[start], "every span starts at a loss-masked block start"
            assert start in slots, "a span is contiguous from its block start"
            assert j % k <= k - 2, "the last position of a block is never replaced"
            assert j + k < t, "the source pair exists"
        starts = [j for j in slots if j % k == 0]
        assert len(starts) == (12 if k == 2 else 12 // k)


def test_slot_count_is_lambda_times_mismatches_and_capped():
    valid = torch.ones(20, dtype=torch.bool)
    rng = np.random.default_rng(0)
    assert len(glancing_slots(valid, 20, 3.9, 2, rng)) == 3  # int(N)
    assert len(glancing_slots(valid, 20, 0.0, 2, rng)) == 0
    # only 9 block starts have a source pair at i + 2 < 20
    assert len(glancing_slots(valid, 20, 100, 2, rng)) == 9
    assert glancing_slots(torch.zeros(20, dtype=torch.bool), 20, 5, 2, rng) == []


def test_apply_glance_couples_features_and_tokens():
    b, t, h, k = 2, 10, 3, 2
    feat = torch.arange(b * t * h, dtype=torch.float32).reshape(b, t, h)
    tokens = torch.arange(b * t).reshape(b, t)
    slots = [[0, 4], [2, 4]]  # slot 2 and its source 4 both chosen: the source is the unmodified pair
    new_feat, new_tokens = apply_glance(feat, tokens, slots, k)
    for bi, positions in enumerate(slots):
        for i in range(t):
            if i in positions:
                assert torch.equal(new_feat[bi, i], feat[bi, i + k])
                assert new_tokens[bi, i] == tokens[bi, i + k]
            else:
                assert torch.equal(new_feat[bi, i], feat[bi, i]) and new_tokens[bi, i] == tokens[bi, i]
    assert torch.equal(feat, torch.arange(b * t * h, dtype=torch.float32).reshape(b, t, h)), "inputs untouched"


def test_noise_width_scales_with_length():
    g = torch.Generator().manual_seed(0)
    for length, bound in ((1024, 0.1 * 512 / 1024), (256, 0.1)):  # capped at the paper's U(-0.1, 0.1)
        noisy = add_noise(torch.zeros(1, length, 64), 0.2, g)
        assert noisy.abs().max() <= bound and noisy.abs().max() > 0.9 * bound
    feat = torch.zeros(1, 8, 4)
    assert add_noise(feat, 0.0) is feat


# ---- losses -------------------------------------------------------------------------------------


def test_loss_parts():
    torch.manual_seed(0)
    m, h, v = 16, 8, 32
    target = torch.randn(m, h)
    logits_t = torch.randn(m, v) * 3
    config = CSGDConfig()
    same = falcon_loss(target, target, logits_t, logits_t, config)
    assert same["reg"].item() == 0.0
    assert same["kl"].item() == pytest.approx(0.0, abs=1e-6)
    pred = target + 0.5
    logits_d = torch.randn(m, v)
    out = falcon_loss(pred, target, logits_d, logits_t, config, torch.Generator().manual_seed(1))
    assert out["reg"].item() == pytest.approx(F.smooth_l1_loss(pred, target).item(), rel=1e-6)
    t = 0.95
    p = F.softmax(logits_t, -1)
    kl = (p * (F.log_softmax(logits_t / t, -1) - F.log_softmax(logits_d / t, -1))).sum(-1).mean()
    assert out["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    expect = out["reg"] + 0.1 * (0.9 * out["kl"] + 0.1 * out["ce"])
    assert out["loss"].item() == pytest.approx(float(expect), rel=1e-5)
    shift = falcon_loss(pred, target, logits_d, logits_t, CSGDConfig(objective="token-shift"))
    soft_ce = -(p * F.log_softmax(logits_d, -1)).sum(-1).mean()
    assert shift["loss"].item() == pytest.approx(float(out["reg"] + 0.1 * soft_ce), rel=1e-5)


def test_gumbel_labels_sample_the_distribution_not_the_argmax():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).expand(20000, 3)
    labels = gumbel_labels(logits, torch.Generator().manual_seed(0))
    freq = torch.bincount(labels, minlength=3).float() / len(labels)
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.02)


def test_config_rejects_unknown_objective():
    with pytest.raises(ValueError, match="objective"):
        CSGDConfig(objective="glat")
    with pytest.raises(ValueError, match="lambda_schedule"):
        CSGDConfig(lambda_schedule="cosine")


# ---- steps --------------------------------------------------------------------------------------


def _tiny_model(seed=0, fusion="lstm"):
    torch.manual_seed(seed)
    v, h = 64, 16
    cfg = DrafterConfig(n_embd=h, n_head=2, n_head_kv=1, head_dim=8, n_ff=32, fusion=fusion, target_n_vocab=v)
    embed = torch.randn(v, h)
    return FalconDrafter(cfg, embed, torch.randn(v, h))


def _fixed_batch(h=16, seed=0):
    seqs = [_seq(24, h, 4, seed=seed + j) for j in range(2)]
    for s in seqs:
        s.tokens = (s.tokens % 64).astype(np.int32)
    return make_batch(seqs, 2)


@pytest.mark.parametrize("objective,fusion", [("csgd", "lstm"), ("token-shift", "linear")])
def test_training_lowers_loss_on_a_fixed_batch(objective, fusion):
    model = _tiny_model(fusion=fusion)
    batch = _fixed_batch()
    config = CSGDConfig(objective=objective, noise=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))

    def loss_now():
        with torch.no_grad():
            return csgd_step(model, batch, CSGDConfig(objective="token-shift", noise=0.0), 1.0,
                             np.random.default_rng(0), torch.Generator().manual_seed(0), noise=False)["loss"].item()

    before = loss_now()
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for step in range(40):
        out = csgd_step(model, batch, config, step / 40, rng, gen)
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 0.5)
        opt.step()
    assert loss_now() < 0.7 * before


def test_csgd_step_glances_lambda_times_mismatches():
    model = _tiny_model()
    batch = _fixed_batch()
    out = csgd_step(model, batch, CSGDConfig(noise=0.0), 0.0, np.random.default_rng(0))
    assert out["lambda"] == pytest.approx(0.4)
    assert out["mismatch"] > 0
    # per sequence int(0.4 * d) slots, capped by the available block starts
    assert 0 < out["glanced"] <= int(0.4 * out["mismatch"]) + 1
    late = csgd_step(model, batch, CSGDConfig(noise=0.0), 1.0, np.random.default_rng(0))
    assert late["lambda"] == 0.0 and late["glanced"] == 0


def test_evaluate_reports_per_depth():
    model = _tiny_model()
    res = evaluate(model, [_fixed_batch()], 2)
    assert len(res["top1_per_depth"]) == 2 and 0.0 <= res["alpha"] <= 1.0
    assert res["positions"] == int(_fixed_batch().valid.sum())
    # depth 1: every valid even position tries CANDIDATES drafted tokens; depth 2 only under an accepted one
    n_depth1 = int(_fixed_batch().valid[:, 0::2].sum())
    trials = np.array(res["accept_trials"]).reshape(2, -1).sum(-1)
    assert trials[0] == n_depth1 * CANDIDATES  # 64 > CANDIDATES tokens in the vocabulary
    assert 0 <= trials[1] <= trials[0]
    assert len(res["accept_rates"]) == gs.N_ACCEPT_KEYS and all(0.0 <= r <= 1.0 for r in res["accept_rates"])
