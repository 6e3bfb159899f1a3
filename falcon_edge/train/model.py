"""The falcon-sar drafter in PyTorch: the reference the converter and the ggml runtime are checked against.

Everything here computes what docs/drafter-format.md specifies: fusion of (target embedding of
t_{i+1}, target feature f_i), LLaMA-style decoder layers under the relaxed-causal k-block mask, and
the frozen target LM head. The same module is trained later (falcon_edge.train), so parameters carry
the Falcon / EAGLE state-dict names (`layers.{i}.self_attn.q_proj.weight`, …) and the LSTM is stored
as the format stores it (`lstm.weight_ih_l{l}`, `lstm.bias_l{l}` = b_ih + b_hh).

Masks are bool, True where a query may attend a key. Positions are the RoPE positions of the pairs
(pair i sits at position i).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from falcon_edge import gguf_schema

ROPE_MODE_NORMAL = 0  # ggml: rotate pairs (2j, 2j+1), llama
ROPE_MODE_NEOX = 2  # ggml: rotate pairs (j, j + d/2), qwen2 / gemma3 / HF rotate_half
ROPE_MODES = (ROPE_MODE_NORMAL, ROPE_MODE_NEOX)

# config fields fixed by the target: for_target() refuses overrides that change them
_TARGET_FIELDS = ("n_embd", "target_arch", "target_n_vocab", "target_vocab_hash")


# ---- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrafterConfig:
    """Hyper-parameters of a falcon-sar drafter and the identity of the target it was trained for.

    Attributes:
        n_embd: H, hidden size; equals the target's n_embd (the fusion reads target features).
        n_head: attention heads.
        n_head_kv: key/value heads (GQA); divides n_head.
        head_dim: per-head width d (even, for rope).
        n_ff: SwiGLU width.
        n_layer: decoder layers after the fusion.
        block_size: k, tokens emitted per drafter pass and the width of a relaxed-causal block.
        rms_eps: epsilon of every RMSNorm.
        rope_freq_base: rope base; theta_j = pos * base^(-2j/d).
        rope_mode: ROPE_MODE_NORMAL (0) or ROPE_MODE_NEOX (2), as ggml_rope_ext's mode.
        fusion: gguf_schema.FUSION_LSTM (Falcon) or gguf_schema.FUSION_LINEAR (EAGLE-1).
        draft_vocab_size: V' of a reduced draft vocabulary (d2t), 0 for the target's full vocabulary.
        target_arch: the target's general.architecture ("" when unknown).
        target_n_vocab: the target's vocabulary size (0 when unknown).
        target_vocab_hash: gguf_schema.vocab_hash of the target's tokens ("" when unknown).
    """

    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_layer: int = 1
    block_size: int = 2
    rms_eps: float = 1e-6
    rope_freq_base: float = 10000.0
    rope_mode: int = ROPE_MODE_NORMAL
    fusion: str = gguf_schema.FUSION_LSTM
    draft_vocab_size: int = 0
    target_arch: str = ""
    target_n_vocab: int = 0
    target_vocab_hash: str = ""

    def __post_init__(self) -> None:
        for name in ("n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_layer", "block_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("draft_vocab_size", "target_n_vocab"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.n_head % self.n_head_kv:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_head_kv ({self.n_head_kv})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rope, got {self.head_dim}")
        for name in ("rms_eps", "rope_freq_base"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.rope_mode not in ROPE_MODES:
            raise ValueError(f"rope_mode must be one of {ROPE_MODES}, got {self.rope_mode!r}")
        if self.fusion not in gguf_schema.FUSIONS:
            raise ValueError(f"fusion must be one of {gguf_schema.FUSIONS}, got {self.fusion!r}")
        if self.target_n_vocab and self.draft_vocab_size > self.target_n_vocab:
            raise ValueError(f"draft_vocab_size ({self.draft_vocab_size}) exceeds target_n_vocab ({self.target_n_vocab})")
        for name in ("target_arch", "target_vocab_hash"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """All fields as plain Python values (what a checkpoint stores under "config")."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> DrafterConfig:
        """The inverse of to_dict().

        Raises:
            ValueError: if a key is not a field, or a value is invalid.
        """
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown drafter config keys: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def for_target(cls, target_meta: Mapping, **overrides) -> DrafterConfig:
        """A config shaped like the target: its width, heads, head dim, FFN width, norm eps and rope.

        Args:
            target_meta: what falcon_edge.train.target_weights.read_target_meta returns.
            **overrides: any field except the target's identity (n_embd, target_*), e.g. n_ff=1024,
                n_layer=2, block_size=3, fusion="linear".

        Returns:
            the config.

        Raises:
            ValueError: if an override is not a field or changes the target's identity.
        """
        values = {
            "n_embd": target_meta["n_embd"],
            "n_head": target_meta["n_head"],
            "n_head_kv": target_meta["n_head_kv"],
            "head_dim": target_meta["head_dim"],
            "n_ff": target_meta["n_ff"],
            "rms_eps": target_meta["rms_eps"],
            "rope_freq_base": target_meta["rope_freq_base"],
            "rope_mode": target_meta["rope_mode"],
            "target_arch": target_meta["architecture"],
            "target_n_vocab": target_meta["n_vocab"],
            "target_vocab_hash": target_meta["vocab_hash"],
        }
        for name in _TARGET_FIELDS:
            if name in overrides and overrides[name] != values[name]:
                raise ValueError(f"{name} is fixed by the target: override {overrides[name]!r} differs from target {values[name]!r}")
        values.update(overrides)
        return cls.from_dict(values)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ---- masks and positions ------------------------------------------------------------------------


def _relaxed_causal(n_rows: int, k: int, shift: int, device) -> torch.Tensor:
    """[n_rows, n_rows] bool: row q sees column p iff p is in q's k-block or an earlier one.

    Blocks start at -shift, i.e. the first block holds k - shift positions (0 <= shift < k).
    """
    q = torch.arange(n_rows, device=device)[:, None] + shift  # [n, 1]
    p = torch.arange(n_rows, device=device)[None, :] + shift  # [1, n]
    return p < (q // k + 1) * k  # [n, n]


def block_mask(n: int, k: int, device=None) -> torch.Tensor:
    """The training mask: blocks anchored at position 0, query q sees key p iff p < (q // k + 1) * k.

    Args:
        n: sequence length T.
        k: block size.
        device: torch device of the result.

    Returns:
        `[T, T]` bool, True where q may attend p.
    """
    return _relaxed_causal(n, k, 0, device)


def span_mask(n_past: int, n: int, k: int, device=None) -> torch.Tensor:
    """The inference mask for evaluating a span of n pairs after n_past cached ones.

    The span's blocks are aligned to its end ([n-k, n), [n-2k, n-k), …, the first possibly
    shorter), so the last k pairs always form one complete block; every cached key is visible.

    Args:
        n_past: cached positions before the span (keys only).
        n: pairs in the span (queries).
        k: block size.
        device: torch device of the result.

    Returns:
        `[n, n_past + n]` bool, True where a query may attend a key; keys are the cached positions
        followed by the span.
    """
    past = torch.ones(n, n_past, dtype=torch.bool, device=device)  # [n, n_past]
    return torch.cat([past, _relaxed_causal(n, k, (-n) % k, device)], dim=1)  # [n, n_past + n]


def _block_depths(parents: Sequence[int]) -> list[int]:
    """Tree level L >= 1 of every expansion block (1 = child of the context's last block).

    Raises:
        ValueError: if a parent is not -1 or an earlier block.
    """
    depths: list[int] = []
    for b, parent in enumerate(parents):
        if not _is_int(parent) or not -1 <= parent < b:
            raise ValueError(f"block {b} has parent {parent!r}: must be -1 or an earlier block index")
        depths.append(1 if parent == -1 else depths[parent] + 1)
    return depths


def tree_mask(n_ctx: int, parents: Sequence[int], k: int, device=None) -> torch.Tensor:
    """The mask of one tree-expansion pass: blocks of k pairs evaluated after n_ctx cached context pairs.

    Block b sees the whole context, every block of its ancestors and all k positions of itself;
    siblings and other branches are hidden.

    Args:
        n_ctx: context pairs in the cache (keys 0 … n_ctx-1).
        parents: per block, the index of its parent block, or -1 for a child of the context's last block;
            parents come before children.
        k: block size.
        device: torch device of the result.

    Returns:
        `[len(parents)*k, n_ctx + len(parents)*k]` bool; rows b*k … b*k+k-1 are block b, key columns are
        the context then the blocks in order.

    Raises:
        ValueError: if a parent index is not -1 or an earlier block.
    """
    _block_depths(parents)
    n_rows = len(parents) * k
    mask = torch.zeros(n_rows, n_ctx + n_rows, dtype=torch.bool, device=device)  # [m*k, n_ctx + m*k]
    mask[:, :n_ctx] = True
    for b in range(len(parents)):
        a = b
        while a != -1:
            mask[b * k : (b + 1) * k, n_ctx + a * k : n_ctx + (a + 1) * k] = True
            a = parents[a]
    return mask


def tree_positions(n_ctx: int, parents: Sequence[int], k: int, device=None) -> torch.Tensor:
    """RoPE positions of the pairs of a tree-expansion pass: block at level L, pair j sits at n_ctx + (L-1)*k + j.

    Args:
        n_ctx: context pairs in the cache.
        parents: as for tree_mask.
        k: block size.
        device: torch device of the result.

    Returns:
        `[len(parents)*k]` int64.

    Raises:
        ValueError: if a parent index is not -1 or an earlier block.
    """
    depths = torch.tensor(_block_depths(parents), dtype=torch.long, device=device)  # [m]
    offsets = torch.arange(k, device=device)  # [k]
    return (n_ctx + (depths[:, None] - 1) * k + offsets[None, :]).reshape(-1)  # [m*k]


# ---- building blocks ----------------------------------------------------------------------------


def rope(x: torch.Tensor, positions: torch.Tensor, freq_base: float, mode: int) -> torch.Tensor:
    """Rotary position embedding exactly as ggml_rope_ext computes it (freq_scale 1, no YaRN).

    theta_j = pos * freq_base^(-2j/d) rotates the pair (2j, 2j+1) in normal mode and (j, j + d/2) in
    neox mode, j = 0 … d/2-1.

    Args:
        x: `[B, n_heads, T, d]`.
        positions: `[B, T]` integer positions.
        freq_base: rope base.
        mode: ROPE_MODE_NORMAL or ROPE_MODE_NEOX.

    Returns:
        `[B, n_heads, T, d]`, the rotated x.
    """
    d = x.shape[-1]
    exponents = torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d  # [d/2], 2j/d
    theta = positions.to(torch.float64)[..., None] * freq_base**-exponents  # [B, T, d/2]
    cos = theta.cos().to(x.dtype)[:, None]  # [B, 1, T, d/2]
    sin = theta.sin().to(x.dtype)[:, None]  # [B, 1, T, d/2]
    if mode == ROPE_MODE_NORMAL:
        x0, x1 = x[..., 0::2], x[..., 1::2]  # [B, nh, T, d/2] each
        return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)  # [B, nh, T, d]
    x0, x1 = x[..., : d // 2], x[..., d // 2 :]  # [B, nh, T, d/2] each
    return torch.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)  # [B, nh, T, d]


class ZeroStateLSTM(nn.Module):
    """Falcon's fusion: two LSTM layers 2H → H → H, each run once per position from h = c = 0.

    With a zero state a layer is (i, f, g, o) = W_ih x + b, h = σ(o)·tanh(σ(i)·tanh(g)); W_hh and the
    forget gate have no effect. Parameters: `weight_ih_l{l}` `[4H, in_l]` (in_0 = 2H, in_1 = H) and
    `bias_l{l}` `[4H]` = b_ih + b_hh, gate order (i, f, g, o) as torch.nn.LSTM.
    """

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.n_embd = n_embd
        for layer in range(gguf_schema.LSTM_LAYERS):
            n_in = 2 * n_embd if layer == 0 else n_embd
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * n_embd, n_in)))  # [4H, in]
            self.register_parameter(f"bias_l{layer}", nn.Parameter(torch.empty(4 * n_embd)))  # [4H]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's initialisation: U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.n_embd)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def load_torch_lstm(self, lstm: nn.LSTM) -> None:
        """Copy a torch.nn.LSTM(2H, H, num_layers=2): W_ih as is, b = b_ih + b_hh; W_hh is dropped.

        Raises:
            ValueError: if the LSTM is not a plain 2-layer unidirectional 2H → H LSTM.
        """
        shape = (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional, lstm.proj_size)
        wanted = (2 * self.n_embd, self.n_embd, gguf_schema.LSTM_LAYERS, False, 0)
        if shape != wanted:
            raise ValueError(f"lstm (input_size, hidden_size, num_layers, bidirectional, proj_size) is {shape}, expected {wanted}")
        with torch.no_grad():
            for layer in range(gguf_schema.LSTM_LAYERS):
                getattr(self, f"weight_ih_l{layer}").copy_(getattr(lstm, f"weight_ih_l{layer}"))
                bias = getattr(self, f"bias_l{layer}")
                if lstm.bias:
                    bias.copy_(getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
                else:
                    bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x `[B, T, 2H]` → `[B, T, H]`, every position independently."""
        h = x
        for layer in range(gguf_schema.LSTM_LAYERS):
            gates = F.linear(h, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_l{layer}"))  # [B, T, 4H]
            i, _, g, o = gates.chunk(4, dim=-1)  # [B, T, H] each; the forget gate multiplies c = 0
            h = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))  # [B, T, H]
        return h


class DrafterCache:
    """Keys and values of the positions evaluated so far, per layer (after rope, before GQA expansion).

    A forward given a cache attends to its contents followed by the new positions and appends the new
    keys and values; crop() drops trailing positions so they can be re-evaluated.
    """

    def __init__(self, n_layer: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * n_layer  # each [B, n_head_kv, n, d]
        self.values: list[torch.Tensor | None] = [None] * n_layer  # each [B, n_head_kv, n, d]

    def __len__(self) -> int:
        """Cached positions."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v `[B, n_head_kv, T, d]` to a layer; returns the layer's full keys and values `[B, n_head_kv, n+T, d]`."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def crop(self, n: int) -> None:
        """Keep the first n positions.

        Raises:
            ValueError: if n is negative or more than the cached positions.
        """
        if not 0 <= n <= len(self):
            raise ValueError(f"cannot crop the drafter cache to {n} positions: it holds {len(self)}")
        for layer, k in enumerate(self.keys):
            if k is not None:
                self.keys[layer] = k[:, :, :n]
                self.values[layer] = self.values[layer][:, :, :n]


class _Attention(nn.Module):
    """GQA self-attention with rope; head h reads kv head h // (n_head / n_head_kv)."""

    def __init__(self, config: DrafterConfig) -> None:
        super().__init__()
        self.config = config
        h, d = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(h, config.n_head * d, bias=False)  # W [n_head*d, H]
        self.k_proj = nn.Linear(h, config.n_head_kv * d, bias=False)  # W [n_head_kv*d, H]
        self.v_proj = nn.Linear(h, config.n_head_kv * d, bias=False)  # W [n_head_kv*d, H]
        self.o_proj = nn.Linear(config.n_head * d, h, bias=False)  # W [H, n_head*d]

    def forward(self, x, positions, mask, cache: DrafterCache | None, layer: int) -> torch.Tensor:
        """x `[B, T, H]`, positions `[B, T]`, mask bool broadcastable to `[B, n_head, T, T_kv]` → `[B, T, H]`."""
        c = self.config
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, c.n_head, c.head_dim).transpose(1, 2)  # [B, n_head, T, d]
        k = self.k_proj(x).view(b, t, c.n_head_kv, c.head_dim).transpose(1, 2)  # [B, n_head_kv, T, d]
        v = self.v_proj(x).view(b, t, c.n_head_kv, c.head_dim).transpose(1, 2)  # [B, n_head_kv, T, d]
        q = rope(q, positions, c.rope_freq_base, c.rope_mode)
        k = rope(k, positions, c.rope_freq_base, c.rope_mode)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # [B, n_head_kv, T_kv, d]
        group = c.n_head // c.n_head_kv
        k = k.repeat_interleave(group, dim=1)  # [B, n_head, T_kv, d]
        v = v.repeat_interleave(group, dim=1)  # [B, n_head, T_kv, d]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, n_head, T, d], scale 1/sqrt(d)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, c.n_head * c.head_dim))  # [B, T, H]


class _MLP(nn.Module):
    """SwiGLU: W_down(silu(W_gate m) * W_up m)."""

    def __init__(self, config: DrafterConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.n_ff, bias=False)  # W [n_ff, H]
        self.up_proj = nn.Linear(config.n_embd, config.n_ff, bias=False)  # W [n_ff, H]
        self.down_proj = nn.Linear(config.n_ff, config.n_embd, bias=False)  # W [H, n_ff]

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        """m `[B, T, H]` → `[B, T, H]`."""
        return self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


class _Norm(nn.RMSNorm):
    """RMSNorm computed in float32, as the runtime computes it, and returned in its input's dtype: under bfloat16
    autocast the input is bfloat16 and the weight float32, which torch's fused kernel refuses (a UserWarning)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x `[..., H]` → `[..., H]`."""
        return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).to(x.dtype)


class _DecoderLayer(nn.Module):
    """A LLaMA decoder layer; layer 0 has no input norm (its input is the fusion output)."""

    def __init__(self, config: DrafterConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.input_layernorm = _Norm(config.n_embd, eps=config.rms_eps) if index > 0 else None  # w [H]
        self.self_attn = _Attention(config)
        self.post_attention_layernorm = _Norm(config.n_embd, eps=config.rms_eps)  # w [H]
        self.mlp = _MLP(config)

    def forward(self, h, positions, mask, cache: DrafterCache | None) -> torch.Tensor:
        """h `[B, T, H]` → `[B, T, H]`."""
        a = h if self.input_layernorm is None else self.input_layernorm(h)  # [B, T, H]
        h = h + self.self_attn(a, positions, mask, cache, self.index)
        return h + self.mlp(self.post_attention_layernorm(h))


# ---- the drafter --------------------------------------------------------------------------------


def _as_float_tensor(x) -> torch.Tensor:
    """A numpy array, tensor or nested list as a float32 tensor (numpy arrays are shared, not copied)."""
    return torch.as_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x).float()


class FalconDrafter(nn.Module):
    """The falcon-sar drafter: fusion, n_layer decoder layers, frozen target embedding and LM head.

    The target's embedding `embed` `[V, H]` and LM head `lm_head` `[V', H]` (the d2t rows when the draft
    vocabulary is reduced) are non-persistent buffers: never trained and never in state_dict(). The
    d2t map, when present, is a persistent buffer `d2t` `[V']` (int64) and travels with the weights.

    Parameter names: `lstm.weight_ih_l{l}`, `lstm.bias_l{l}` (fusion "lstm") or `fc.weight`,
    `fc.bias` ("linear"); `layers.{i}.input_layernorm.weight` (i > 0), `layers.{i}.self_attn.{q,k,v,o}_proj.weight`,
    `layers.{i}.post_attention_layernorm.weight`, `layers.{i}.mlp.{gate,up,down}_proj.weight`.
    """

    def __init__(self, config: DrafterConfig, embed, lm_head=None, d2t=None) -> None:
        """Build the drafter around the target's frozen matrices, with freshly initialised weights.

        Args:
            config: the hyper-parameters.
            embed: the target token embedding `[V, H]` (torch tensor or numpy array).
            lm_head: the target LM head `[V, H]`; None when the target ties it to embed.
            d2t: `[V']` target ids of the draft vocabulary; required iff config.draft_vocab_size > 0.

        Raises:
            ValueError: if a matrix does not match the config or d2t is missing, mis-sized or out of range.
        """
        super().__init__()
        self.config = config
        embed = _as_float_tensor(embed)  # [V, H]
        lm_head = embed if lm_head is None else _as_float_tensor(lm_head)  # [V, H]
        n_vocab = config.target_n_vocab or embed.shape[0]
        for name, matrix in (("embed", embed), ("lm_head", lm_head)):
            if tuple(matrix.shape) != (n_vocab, config.n_embd):
                raise ValueError(f"{name} shape {tuple(matrix.shape)} does not match (target_n_vocab, n_embd) = {(n_vocab, config.n_embd)}")
        if config.draft_vocab_size:
            if d2t is None:
                raise ValueError(f"draft_vocab_size is {config.draft_vocab_size} but no d2t map was given")
            d2t = torch.as_tensor(np.asarray(d2t), dtype=torch.long)  # [V']
            if d2t.shape != (config.draft_vocab_size,):
                raise ValueError(f"d2t shape {tuple(d2t.shape)} does not match draft_vocab_size ({config.draft_vocab_size})")
            if d2t.min() < 0 or d2t.max() >= n_vocab:
                raise ValueError(f"d2t ids must lie in [0, {n_vocab}), got [{int(d2t.min())}, {int(d2t.max())}]")
            self.register_buffer("d2t", d2t)
            lm_head = lm_head[d2t]  # [V', H]
        elif d2t is not None:
            raise ValueError(f"a d2t map of {len(d2t)} ids was given but draft_vocab_size is 0")
        self.register_buffer("embed", embed, persistent=False)
        self.register_buffer("lm_head", lm_head, persistent=False)
        if config.fusion == gguf_schema.FUSION_LSTM:
            self.lstm = ZeroStateLSTM(config.n_embd)
        else:
            self.fc = nn.Linear(2 * config.n_embd, config.n_embd)  # W [H, 2H], b [H]
        self.layers = nn.ModuleList(_DecoderLayer(config, i) for i in range(config.n_layer))

    def load_torch_lstm(self, lstm: nn.LSTM) -> None:
        """Import a torch.nn.LSTM(2H, H, num_layers=2) as the fusion (b = b_ih + b_hh, W_hh dropped).

        Raises:
            ValueError: if the drafter's fusion is not "lstm" or the LSTM has other shapes.
        """
        if self.config.fusion != gguf_schema.FUSION_LSTM:
            raise ValueError(f"the drafter's fusion is {self.config.fusion!r}, not {gguf_schema.FUSION_LSTM!r}")
        self.lstm.load_torch_lstm(lstm)

    def fuse(self, feat: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The per-position input: fuse(concat(E[tokens], feat)), feat `[B, T, H]`, tokens `[B, T]` → `[B, T, H]`."""
        x = torch.cat([F.embedding(tokens, self.embed), feat], dim=-1)  # [B, T, 2H], embedding first
        return self.lstm(x) if self.config.fusion == gguf_schema.FUSION_LSTM else self.fc(x)

    def forward(
        self,
        feat: torch.Tensor,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        past_kv: DrafterCache | None = None,
    ) -> torch.Tensor:
        """Predicted features of a batch of pairs (f_i, t_{i+1}).

        Args:
            feat: `[B, T, H]` target features f_i (post final norm).
            tokens: `[B, T]` the tokens t_{i+1}.
            positions: `[B, T]` RoPE positions; default n_past + arange(T), n_past = len(past_kv).
            mask: bool broadcastable to `[B, n_head, T, n_past + T]`, True = may attend (a 2-D `[T, n_past + T]`
                works); default block_mask(T, k) without a cache, span_mask(n_past, T, k) with one.
            past_kv: a DrafterCache; the pairs attend to its contents, and their keys and values are
                appended to it.

        Returns:
            `[B, T, H]` the predicted features f̂_{i+k}; logits() turns them into the distribution of t_{i+k+1}.
        """
        b, t, _ = feat.shape
        k = self.config.block_size
        n_past = 0 if past_kv is None else len(past_kv)
        if positions is None:
            positions = (n_past + torch.arange(t, device=feat.device)).expand(b, t)  # [B, T]
        if mask is None:
            mask = block_mask(t, k, feat.device) if past_kv is None else span_mask(n_past, t, k, feat.device)
        h = self.fuse(feat, tokens)  # [B, T, H]
        for layer in self.layers:
            h = layer(h, positions, mask, past_kv)
        return h  # no final norm: f̂ goes straight into the frozen LM head

    def logits(self, feat: torch.Tensor) -> torch.Tensor:
        """The frozen LM head: `[..., H]` → `[..., V']` (V' = draft_vocab_size, or the target's V)."""
        return feat @ self.lm_head.T


# ---- reference outputs for parity tests ---------------------------------------------------------


def _evaluate_context(model: FalconDrafter, feats, tokens, spans) -> tuple[DrafterCache, torch.Tensor]:
    """Run the context spans through a fresh cache; returns the cache and the last span's outputs `[n_span, H]`."""
    feats = _as_float_tensor(feats)  # [n, H]
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)  # [n]
    n, k = feats.shape[0], model.config.block_size
    if tokens.shape != (n,):
        raise ValueError(f"tokens shape {tuple(tokens.shape)} does not match feats rows ({n})")
    spans = [(0, n)] if spans is None else list(spans)
    cache = DrafterCache(model.config.n_layer)
    out = feats[:0]
    for start, end in spans:
        if not 0 <= start <= len(cache) or not start < end <= n:
            raise ValueError(f"span ({start}, {end}) must start within the {len(cache)} cached pairs and end by {n}")
        cache.crop(start)
        positions = torch.arange(start, end)[None]  # [1, end-start]
        mask = span_mask(start, end - start, k)  # [end-start, end]
        out = model(feats[None, start:end], tokens[None, start:end], positions, mask, cache)[0]  # [end-start, H]
    last_start, last_end = spans[-1]
    if last_end != n or last_end - last_start < k:
        raise ValueError(f"the last span ({last_start}, {last_end}) must end at {n} and hold at least k = {k} pairs")
    return cache, out


@torch.no_grad()
def reference_context_outputs(model: FalconDrafter, feats, tokens, spans=None) -> torch.Tensor:
    """The drafter outputs that start a drafting phase: the last k outputs of the committed context.

    Pair i = (feats[i], tokens[i]) sits at position i. The context is evaluated span by span through a
    cache, each span with span_mask (blocks aligned to the span's end, all earlier pairs cached), as the
    runtime does.

    Args:
        model: the drafter.
        feats: `[n, H]` target features f_0 … f_{n-1}.
        tokens: `[n]` tokens t_1 … t_n (t_n is the token the target just produced).
        spans: successive (start, end) pair ranges; each first crops the cache to `start` (re-evaluation);
            the last must end at n and hold at least k pairs. Default: one span (0, n).

    Returns:
        `[k, H]`: row j is f̂ for position n-k+j and predicts token t_{n+1+j}.

    Raises:
        ValueError: if the shapes disagree or the spans are not a valid evaluation order.
    """
    _, out = _evaluate_context(model, feats, tokens, spans)
    return out[-model.config.block_size :]


@torch.no_grad()
def reference_block_outputs(model: FalconDrafter, feats, tokens, blocks, spans=None) -> torch.Tensor:
    """The outputs of one tree-expansion pass over a cached context.

    The context is evaluated as in reference_context_outputs; then all blocks are evaluated in one
    forward with tree_mask and tree_positions: block b at level L holds pairs (block_feats[j],
    block_tokens[j]) at positions n + (L-1)*k + j and sees the context, its ancestors' blocks and itself.
    In a real drafting phase block_feats are the parent block's output rows (the context's last k
    outputs for parent -1) and block_tokens are the drafted tokens d_{(L-1)k+1+j}.

    Args:
        model: the drafter.
        feats: `[n, H]` context features.
        tokens: `[n]` context tokens.
        blocks: sequence of (parent, block_feats `[k, H]`, block_tokens `[k]`); parent is -1 or the index of
            an earlier block.
        spans: as for reference_context_outputs.

    Returns:
        `[len(blocks), k, H]`: [b, j] predicts the token at depth L*k + 1 + j below the root on b's path.

    Raises:
        ValueError: if shapes disagree, a parent is not earlier, or the spans are invalid.
    """
    k = model.config.block_size
    cache, _ = _evaluate_context(model, feats, tokens, spans)
    n = len(cache)
    parents = [parent for parent, _, _ in blocks]
    block_feats = [_as_float_tensor(f) for _, f, _ in blocks]  # each [k, H]
    block_tokens = [torch.as_tensor(np.asarray(t), dtype=torch.long) for _, _, t in blocks]  # each [k]
    for b, (f, t) in enumerate(zip(block_feats, block_tokens)):
        if f.shape != (k, model.config.n_embd) or t.shape != (k,):
            raise ValueError(f"block {b} has feats {tuple(f.shape)} and tokens {tuple(t.shape)}, expected ({k}, {model.config.n_embd}) and ({k},)")
    positions = tree_positions(n, parents, k)[None]  # [1, m*k]
    mask = tree_mask(n, parents, k)  # [m*k, n + m*k]
    out = model(torch.cat(block_feats)[None], torch.cat(block_tokens)[None], positions, mask, cache)[0]  # [m*k, H]
    return out.reshape(len(blocks), k, -1)
