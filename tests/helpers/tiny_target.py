"""A tiny, seeded, random Llama target GGUF that libllama loads and evaluates.

The file has the full `llama` architecture (metadata, every tensor of every layer, an untied or tied
LM head), or `granite`, the same graph with its logits scaled after the LM head, and a SentencePiece-style (`tokenizer.ggml.model = "llama"`) vocabulary holding the three
special tokens, all 256 byte tokens and word pieces, so that any text tokenizes without falling
off the vocabulary. Weights are F32 or F16 and depend only on the arguments.
"""

from __future__ import annotations

import itertools
import os
import string
from dataclasses import dataclass

import gguf
import numpy as np

ARCH = "llama"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
N_SPECIAL = 3
N_BYTE = 256
MIN_VOCAB = N_SPECIAL + N_BYTE + 1  # specials, bytes and the bare word boundary "▁"
SPIECE_SPACE = "\u2581"


@dataclass(frozen=True)
class TinyTarget:
    """What `write_tiny_llama_gguf` wrote, for tests that check a reader against the source.

    Attributes:
        path: the GGUF file.
        tokens: token texts in id order, `[n_vocab]`.
        embed: `token_embd.weight` as written (after the F16 round trip when weights are F16), `[n_vocab, n_embd]`.
        lm_head: `output.weight` as written, `[n_vocab, n_embd]`; the same array as `embed` when tied.
    """

    path: str
    tokens: list[str]
    embed: np.ndarray
    lm_head: np.ndarray


def _vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """Token texts, scores and types of a SentencePiece-like vocabulary of exactly n_vocab entries."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(N_BYTE)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * N_BYTE
    letters = string.ascii_lowercase
    pieces = itertools.chain(
        [SPIECE_SPACE],
        letters,
        (SPIECE_SPACE + c for c in letters),
        (SPIECE_SPACE + a + b for a in letters for b in letters),
        (SPIECE_SPACE + a + b + c for a in letters for b in letters for c in letters),
    )
    n_pieces = n_vocab - len(tokens)
    tokens += list(itertools.islice(pieces, n_pieces))
    types += [gguf.TokenType.NORMAL] * n_pieces
    # sentencepiece merges the highest-scoring piece first; shorter pieces rank higher here
    scores = [0.0] * (N_SPECIAL + N_BYTE) + [-float(i) for i in range(n_pieces)]
    return tokens, scores, [int(t) for t in types]


def write_tiny_llama_gguf(
    path: str | os.PathLike,
    *,
    n_vocab: int = 320,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    n_ctx_train: int = 2048,
    rope_freq_base: float = 10000.0,
    rms_eps: float = 1e-5,
    tied: bool = False,
    f16: bool = False,
    chat_template: str | None = None,
    logit_scale: float | None = None,
    seed: int = 0,
) -> TinyTarget:
    """Write a random Llama model that libllama can load, deterministic in its arguments.

    Weights are Gaussian with std 1/sqrt(fan_in) (embeddings std 1, norms 1 plus small noise) so the
    logits are peaked enough for greedy decoding to be stable; the LM head is `output.weight`, or the
    token embedding when `tied`.

    Args:
        path: where to write the file.
        n_vocab: vocabulary size, at least MIN_VOCAB (3 specials, 256 byte tokens, word pieces).
        n_embd: hidden size H.
        n_layer: decoder layers.
        n_head: attention heads; the head dim is n_embd // n_head.
        n_head_kv: key/value heads (GQA); must divide n_head.
        n_ff: SwiGLU width.
        n_ctx_train: `llama.context_length`.
        rope_freq_base: `llama.rope.freq_base`.
        rms_eps: `llama.attention.layer_norm_rms_epsilon`.
        tied: omit `output.weight` so that the token embedding is the LM head.
        f16: store 2-D weights as F16 (norms stay F32) instead of F32.
        chat_template: written as `tokenizer.chat_template` when given.
        logit_scale: write architecture `granite` instead, whose graph divides the logits by this after the LM
            head (a target whose logits are not the LM head's product alone).
        seed: numpy seed of every weight.

    Returns:
        a TinyTarget with the path, the token texts and the embedding and LM head exactly as stored.

    Raises:
        ValueError: if n_vocab is below MIN_VOCAB or the head counts do not divide.
    """
    if n_vocab < MIN_VOCAB:
        raise ValueError(f"n_vocab must be at least {MIN_VOCAB} (specials, byte tokens and '▁'), got {n_vocab}")
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head}) and n_head of n_head_kv ({n_head_kv})")
    head_dim = n_embd // n_head
    rng = np.random.default_rng(seed)
    wtype = np.float16 if f16 else np.float32

    def matrix(n_out: int, n_in: int, std: float) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) * std).astype(wtype)  # [n_out, n_in]

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32)  # [H]

    tokens, scores, types = _vocab(n_vocab)
    writer = gguf.GGUFWriter(os.fspath(path), arch=ARCH if logit_scale is None else "granite")
    if logit_scale is not None:
        writer.add_logit_scale(logit_scale)
    writer.add_name("falcon-edge tiny random llama")
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_freq_base)
    writer.add_layer_norm_rms_eps(rms_eps)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    embed = matrix(n_vocab, n_embd, 1.0)  # [V, H]
    writer.add_tensor("token_embd.weight", embed)
    writer.add_tensor("output_norm.weight", norm())
    lm_head = embed
    if not tied:
        lm_head = matrix(n_vocab, n_embd, 2.0 / np.sqrt(n_embd))  # [V, H]
        writer.add_tensor("output.weight", lm_head)
    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(q_dim, n_embd, n_embd**-0.5))  # [n_head*d, H]
        writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(kv_dim, n_embd, n_embd**-0.5))  # [n_head_kv*d, H]
        writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(kv_dim, n_embd, n_embd**-0.5))  # [n_head_kv*d, H]
        writer.add_tensor(f"blk.{i}.attn_output.weight", matrix(n_embd, q_dim, q_dim**-0.5))  # [H, n_head*d]
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(n_ff, n_embd, n_embd**-0.5))  # [n_ff, H]
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(n_ff, n_embd, n_embd**-0.5))  # [n_ff, H]
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(n_embd, n_ff, n_ff**-0.5))  # [H, n_ff]
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    embed32 = embed.astype(np.float32)
    return TinyTarget(
        path=os.fspath(path),
        tokens=tokens,
        embed=embed32,
        lm_head=embed32 if tied else lm_head.astype(np.float32),
    )
