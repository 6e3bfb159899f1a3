"""The PyTorch reference drafter against docs/drafter-format.md: masks, rope, LSTM, forward, tree expansion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from falcon_edge import gguf_schema as gs
from falcon_edge.train.model import (
    ROPE_MODE_NEOX,
    ROPE_MODE_NORMAL,
    DrafterConfig,
    FalconDrafter,
    block_mask,
    reference_block_outputs,
    reference_context_outputs,
    rope,
    span_mask,
    tree_mask,
    tree_positions,
)
from helpers.tiny_drafter import make_tiny_drafter

torch.set_num_threads(1)


def small_config(**overrides) -> DrafterConfig:
    return DrafterConfig(**{"n_embd": 16, "n_head": 4, "n_head_kv": 2, "head_dim": 4, "n_ff": 24, "n_layer": 2, **overrides})


def small_drafter(seed: int = 0, n_vocab: int = 40, **overrides) -> FalconDrafter:
    torch.manual_seed(seed)
    config = small_config(**overrides)
    model = FalconDrafter(config, torch.randn(n_vocab, config.n_embd), torch.randn(n_vocab, config.n_embd))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


# ---- masks and positions ----


def test_block_mask_explicit_cases():
    expected_k2 = [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ]
    assert block_mask(5, 2).int().tolist() == expected_k2
    expected_k3 = [
        [1, 1, 1, 0],
        [1, 1, 1, 0],
        [1, 1, 1, 0],
        [1, 1, 1, 1],
    ]
    assert block_mask(4, 3).int().tolist() == expected_k3
    assert torch.equal(block_mask(6, 1), torch.ones(6, 6, dtype=torch.bool).tril())  # k = 1 is plain causal


def test_span_mask_aligns_blocks_to_the_span_end():
    # 2 cached keys, span of 5 pairs, k = 2: blocks [0], [1, 2], [3, 4] of the span
    expected = [
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1],
    ]
    assert span_mask(2, 5, 2).int().tolist() == expected
    assert torch.equal(span_mask(0, 6, 2), block_mask(6, 2))
    assert torch.equal(span_mask(0, 6, 3), block_mask(6, 3))


def test_tree_mask_and_positions_explicit():
    # context of 3 pairs; blocks 0 and 1 are children of the context, 2 of block 0, 3 of block 2
    parents = [-1, -1, 0, 2]
    ctx = [1, 1, 1]
    expected = [
        ctx + [1, 1, 0, 0, 0, 0, 0, 0],
        ctx + [1, 1, 0, 0, 0, 0, 0, 0],
        ctx + [0, 0, 1, 1, 0, 0, 0, 0],
        ctx + [0, 0, 1, 1, 0, 0, 0, 0],
        ctx + [1, 1, 0, 0, 1, 1, 0, 0],
        ctx + [1, 1, 0, 0, 1, 1, 0, 0],
        ctx + [1, 1, 0, 0, 1, 1, 1, 1],
        ctx + [1, 1, 0, 0, 1, 1, 1, 1],
    ]
    assert tree_mask(3, parents, 2).int().tolist() == expected
    assert tree_positions(3, parents, 2).tolist() == [3, 4, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("parents", [[0], [-1, 1], [-1, -2], [-1, 3, 0]])
def test_tree_mask_rejects_parents_that_are_not_earlier_blocks(parents):
    with pytest.raises(ValueError, match="must be -1 or an earlier block"):
        tree_mask(4, parents, 2)


# ---- rope ----


def rope_direct(x: np.ndarray, positions: np.ndarray, base: float, mode: int) -> np.ndarray:
    """x [T, d] rotated pair by pair with math.cos / math.sin, as ggml_rope_ext defines it."""
    out = x.astype(np.float64).copy()
    d = x.shape[-1]
    for t, pos in enumerate(positions):
        for j in range(d // 2):
            theta = pos * base ** (-2 * j / d)
            a, b = (2 * j, 2 * j + 1) if mode == ROPE_MODE_NORMAL else (j, j + d // 2)
            x0, x1 = x[t, a], x[t, b]
            out[t, a] = x0 * math.cos(theta) - x1 * math.sin(theta)
            out[t, b] = x0 * math.sin(theta) + x1 * math.cos(theta)
    return out


@pytest.mark.parametrize("mode", [ROPE_MODE_NORMAL, ROPE_MODE_NEOX])
def test_rope_matches_the_direct_formula(mode):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 5, 8)  # [B, nh, T, d]
    positions = torch.tensor([[0, 1, 7, 30, 1000]])  # [B, T]
    got = rope(x, positions, 10000.0, mode)[0, 0].numpy()
    expected = rope_direct(x[0, 0].numpy(), positions[0].numpy(), 10000.0, mode)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_rope_modes_differ_and_position_zero_is_identity():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 3, 8)  # [B, nh, T, d]
    positions = torch.tensor([[0, 3, 9]])
    normal = rope(x, positions, 10000.0, ROPE_MODE_NORMAL)
    neox = rope(x, positions, 10000.0, ROPE_MODE_NEOX)
    assert torch.equal(normal[:, :, 0], x[:, :, 0]) and torch.equal(neox[:, :, 0], x[:, :, 0])
    assert (normal[:, :, 1:] - neox[:, :, 1:]).abs().max() > 1e-2


# ---- fusion ----


def test_per_position_lstm_equals_torch_lstm_on_length_one_sequences():
    torch.manual_seed(0)
    model = small_drafter()
    lstm = nn.LSTM(2 * 16, 16, num_layers=2)  # batch_first=False, as the published Falcon code
    model.load_torch_lstm(lstm)
    x = torch.randn(1, 7, 32)  # [1, T, 2H]: torch reads dim 0 as time, so 7 sequences of length 1
    with torch.no_grad():
        expected, _ = lstm(x)  # [1, 7, H]
        got = model.lstm(x)  # [1, 7, H]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_load_torch_lstm_rejects_other_shapes():
    model = small_drafter()
    with pytest.raises(ValueError, match=r"expected \(32, 16, 2, False, 0\)"):
        model.load_torch_lstm(nn.LSTM(32, 16, num_layers=1))
    with pytest.raises(ValueError, match="fusion is 'linear'"):
        small_drafter(fusion=gs.FUSION_LINEAR).load_torch_lstm(nn.LSTM(32, 16, num_layers=2))


# ---- the forward pass against the contract ----


def contract_forward(model: FalconDrafter, feats, tokens, positions, mask) -> np.ndarray:
    """docs/drafter-format.md written out in float64 numpy, one head at a time; feats [T, H] → [T, H]."""
    c = model.config
    w = {name: p.detach().double().numpy() for name, p in model.state_dict().items()}
    x = np.concatenate([model.embed.double().numpy()[tokens], feats.double().numpy()], axis=1)  # [T, 2H]
    if c.fusion == gs.FUSION_LSTM:
        for layer in range(gs.LSTM_LAYERS):
            i, _, g, o = np.split(x @ w[f"lstm.weight_ih_l{layer}"].T + w[f"lstm.bias_l{layer}"], 4, axis=1)
            sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
            x = sigmoid(o) * np.tanh(sigmoid(i) * np.tanh(g))
    else:
        x = x @ w["fc.weight"].T + w["fc.bias"]
    h = x  # [T, H]

    def rms(v, weight):
        return v / np.sqrt((v**2).mean(-1, keepdims=True) + c.rms_eps) * weight

    for i in range(c.n_layer):
        p = f"layers.{i}."
        a = h if i == 0 else rms(h, w[p + "input_layernorm.weight"])
        q = (a @ w[p + "self_attn.q_proj.weight"].T).reshape(len(h), c.n_head, c.head_dim)
        k = (a @ w[p + "self_attn.k_proj.weight"].T).reshape(len(h), c.n_head_kv, c.head_dim)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(len(h), c.n_head_kv, c.head_dim)
        o = np.zeros_like(q)
        for head in range(c.n_head):
            kv = head // (c.n_head // c.n_head_kv)
            qh = rope_direct(q[:, head], positions, c.rope_freq_base, c.rope_mode)
            kh = rope_direct(k[:, kv], positions, c.rope_freq_base, c.rope_mode)
            scores = np.where(mask, qh @ kh.T / math.sqrt(c.head_dim), -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            o[:, head] = (probs / probs.sum(-1, keepdims=True)) @ v[:, kv]
        h = h + o.reshape(len(h), -1) @ w[p + "self_attn.o_proj.weight"].T
        m = rms(h, w[p + "post_attention_layernorm.weight"])
        gate = m @ w[p + "mlp.gate_proj.weight"].T
        h = h + (gate / (1 + np.exp(-gate)) * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    return h


@pytest.mark.parametrize(
    "overrides",
    [
        {"fusion": gs.FUSION_LSTM, "rope_mode": ROPE_MODE_NORMAL},
        {"fusion": gs.FUSION_LINEAR, "rope_mode": ROPE_MODE_NEOX, "block_size": 3},
        {"fusion": gs.FUSION_LSTM, "rope_mode": ROPE_MODE_NEOX, "n_head_kv": 1, "n_layer": 3},
    ],
)
def test_forward_matches_the_contract(overrides):
    model = small_drafter(**overrides)
    torch.manual_seed(1)
    feats, tokens = torch.randn(7, 16), torch.randint(0, 40, (7,))
    positions = np.arange(7)
    mask = span_mask(0, 7, model.config.block_size)  # [7, 7], first block shorter
    with torch.no_grad():
        got = model(feats[None], tokens[None], torch.as_tensor(positions)[None], mask)[0].numpy()
    np.testing.assert_allclose(got, contract_forward(model, feats, tokens, positions, mask.numpy()), rtol=0, atol=1e-4)


def test_default_mask_is_the_training_block_mask():
    model = small_drafter()
    torch.manual_seed(1)
    feats, tokens = torch.randn(2, 6, 16), torch.randint(0, 40, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(feats, tokens), model(feats, tokens, torch.arange(6).expand(2, 6), block_mask(6, 2)))


def test_cached_spans_at_block_boundaries_match_one_pass():
    model = small_drafter()
    torch.manual_seed(1)
    feats, tokens = torch.randn(7, 16), torch.randint(0, 40, (7,))
    one_pass = reference_context_outputs(model, feats, tokens)
    # (0, 3) ends on the block boundary [1, 2] | [3, 4]: every pair sees what it sees in one pass
    torch.testing.assert_close(reference_context_outputs(model, feats, tokens, spans=[(0, 3), (3, 7)]), one_pass)
    # re-evaluating (4, 7) after (0, 6) changes layer-1 keys of positions 4, 5: a different, valid history
    assert reference_context_outputs(model, feats, tokens, spans=[(0, 6), (4, 7)]).shape == (2, 16)


@pytest.mark.parametrize("spans", [[(0, 3), (4, 7)], [(0, 7), (6, 7)], [(0, 5)], [(1, 7)]])
def test_invalid_spans_are_rejected(spans):
    model = small_drafter()
    with pytest.raises(ValueError, match="span"):
        reference_context_outputs(model, torch.randn(7, 16), torch.randint(0, 40, (7,)), spans=spans)


def test_tree_blocks_match_chains_evaluated_as_one_sequence():
    model = small_drafter()
    torch.manual_seed(2)
    k, n = 2, 4
    ctx_feats, ctx_tokens = torch.randn(n, 16), torch.randint(0, 40, (n,))
    block_feats = [torch.randn(k, 16) for _ in range(3)]
    block_tokens = [torch.randint(0, 40, (k,)) for _ in range(3)]
    parents = [-1, -1, 0]
    blocks = list(zip(parents, block_feats, block_tokens))
    got = reference_block_outputs(model, ctx_feats, ctx_tokens, blocks)  # [3, k, H]
    # a root-to-block path, appended to a context of whole blocks, is one sequence of whole blocks
    for b, path in ((0, [0]), (1, [1]), (2, [0, 2])):
        feats = torch.cat([ctx_feats] + [block_feats[i] for i in path])
        tokens = torch.cat([ctx_tokens] + [block_tokens[i] for i in path])
        torch.testing.assert_close(got[b], reference_context_outputs(model, feats, tokens), rtol=1e-5, atol=1e-5)


def test_siblings_do_not_see_each_other():
    model = small_drafter()
    torch.manual_seed(3)
    ctx_feats, ctx_tokens = torch.randn(5, 16), torch.randint(0, 40, (5,))
    a = (-1, torch.randn(2, 16), torch.randint(0, 40, (2,)))
    b = (-1, torch.randn(2, 16), torch.randint(0, 40, (2,)))
    alone = reference_block_outputs(model, ctx_feats, ctx_tokens, [a])
    together = reference_block_outputs(model, ctx_feats, ctx_tokens, [a, b])
    torch.testing.assert_close(together[0], alone[0], rtol=1e-5, atol=1e-5)


# ---- vocabulary and configuration ----


def test_reduced_draft_vocabulary_uses_the_d2t_rows_of_the_lm_head():
    torch.manual_seed(0)
    embed, head = torch.randn(40, 16), torch.randn(40, 16)
    d2t = [3, 17, 5, 39]
    model = FalconDrafter(small_config(draft_vocab_size=4), embed, head, d2t=d2t)
    feat = torch.randn(2, 3, 16)
    torch.testing.assert_close(model.logits(feat), feat @ head[d2t].T)
    assert model.state_dict()["d2t"].tolist() == d2t
    assert "embed" not in model.state_dict() and "lm_head" not in model.state_dict()


@pytest.mark.parametrize(
    ("d2t", "message"),
    [(None, "no d2t map"), ([1, 2, 3], r"d2t shape \(3,\)"), ([1, 2, 3, 40], r"must lie in \[0, 40\)")],
)
def test_bad_d2t_is_rejected(d2t, message):
    with pytest.raises(ValueError, match=message):
        FalconDrafter(small_config(draft_vocab_size=4), torch.randn(40, 16), d2t=d2t)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_head_kv": 3}, r"n_head \(4\) must be a multiple of n_head_kv \(3\)"),
        ({"block_size": 0}, "block_size must be a positive integer, got 0"),
        ({"fusion": "gru"}, "fusion must be one of .* got 'gru'"),
        ({"rope_mode": 1}, "rope_mode must be one of .* got 1"),
        ({"head_dim": 5}, "head_dim must be even for rope, got 5"),
        ({"rms_eps": 0.0}, "rms_eps must be a positive number, got 0.0"),
        ({"draft_vocab_size": 50, "target_n_vocab": 40}, r"draft_vocab_size \(50\) exceeds target_n_vocab \(40\)"),
    ],
)
def test_config_validation_names_field_and_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        small_config(**overrides)


def test_config_for_target_takes_shapes_from_the_target(tiny_target, tiny_meta):
    config = DrafterConfig.for_target(tiny_meta, n_ff=80, fusion=gs.FUSION_LINEAR)
    assert (config.n_embd, config.n_head, config.n_head_kv, config.head_dim) == (64, 4, 2, 16)
    assert (config.n_ff, config.fusion, config.rope_mode, config.rms_eps) == (80, "linear", ROPE_MODE_NORMAL, 1e-5)
    assert (config.target_arch, config.target_n_vocab, config.target_vocab_hash) == ("llama", 320, tiny_meta["vocab_hash"])
    assert DrafterConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="n_embd is fixed by the target: override 32 differs from target 64"):
        DrafterConfig.for_target(tiny_meta, n_embd=32)
    with pytest.raises(ValueError, match="unknown drafter config keys: n_blocks"):
        DrafterConfig.for_target(tiny_meta, n_blocks=2)


def test_drafter_runs_on_the_tiny_target_embeddings(tiny_target, tiny_meta):
    model = make_tiny_drafter(tiny_target, tiny_meta)
    out = reference_context_outputs(model, torch.randn(5, 64), torch.randint(0, 320, (5,)))
    assert out.shape == (2, 64) and model.logits(out).shape == (2, 320)
