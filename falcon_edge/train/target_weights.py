"""What a drafter takes from its target GGUF: hyper-parameters, vocabulary identity, embedding and LM head.

Reads any llama.cpp GGUF with gguf-py and dequantizes with `gguf.quants` (F32, F16, BF16, Q4_0 … Q8_0,
K-quants, IQ-quants), so the drafter is trained, converted and checked against exactly the matrices
the runtime reads from the same file.
"""

from __future__ import annotations

import os

import gguf
import numpy as np

from falcon_edge import gguf_schema

# ggml rope mode per target architecture, as llama.cpp's llama_model_rope_type() assigns it:
# 0 = normal (rotate pairs (2j, 2j+1)), 2 = neox (rotate pairs (j, j + d/2))
ROPE_MODE_BY_ARCH = {
    "llama": 0,
    "llama4": 0,
    "deci": 0,
    "baichuan": 0,
    "granite": 0,
    "mistral3": 0,
    "qwen2": 2,
    "qwen2moe": 2,
    "qwen3": 2,
    "qwen3moe": 2,
    "gemma": 2,
    "gemma2": 2,
    "gemma3": 2,
    "phi3": 2,
    "stablelm": 2,
    "starcoder2": 2,
    "olmo2": 2,
    "exaone": 2,
}
DEFAULT_ROPE_FREQ_BASE = 10000.0
DEFAULT_RMS_EPS = 1e-6


def _field(reader: gguf.GGUFReader, key: str, default=None):
    """The value of a GGUF key (a scalar, a string or a list), or default when the key is absent."""
    field = reader.get_field(key)
    return default if field is None else field.contents()


def _required(reader: gguf.GGUFReader, path: str | os.PathLike, key: str):
    """The value of a key the target must have.

    Raises:
        ValueError: if the key is absent.
    """
    value = _field(reader, key)
    if value is None:
        raise ValueError(f"target {os.fspath(path)} has no key {key}")
    return value


def shortest_float32(value: float) -> float:
    """A GGUF float32 value as the shortest decimal that rounds to it (1e-06, not 9.999999974752427e-07).

    Makes configs read back from a GGUF compare equal to the decimal values they were written from.
    """
    return float(str(np.float32(value)))


def _widest(value) -> int:
    """A per-layer list (some architectures store head counts and FFN widths per layer) as its maximum."""
    return int(max(value)) if isinstance(value, list) else int(value)


def _token_bytes(reader: gguf.GGUFReader, path: str | os.PathLike) -> list[bytes]:
    """The raw bytes of every token text in id order (gguf-py's contents() would reject invalid UTF-8)."""
    field = reader.get_field("tokenizer.ggml.tokens")
    if field is None:
        raise ValueError(f"target {os.fspath(path)} has no key tokenizer.ggml.tokens")
    return [field.parts[i].tobytes() for i in field.data]


def read_target_meta(path: str | os.PathLike) -> dict:
    """Hyper-parameters and vocabulary identity of a target GGUF.

    Args:
        path: a llama.cpp model GGUF.

    Returns:
        a dict with `architecture` (str), `n_embd`, `n_vocab`, `n_layer`, `n_head`, `n_head_kv`,
        `head_dim` (`attention.key_length`, else n_embd // n_head), `n_ff` (widest layer), `n_ctx_train`
        (int), `rms_eps` (default 1e-6 when absent), `rope_freq_base` (default 10000), `rope_mode` (0 normal,
        2 neox; ROPE_MODE_BY_ARCH), `tokens` (list[str], invalid UTF-8 replaced), `vocab_hash`
        (gguf_schema.vocab_hash of the raw token bytes, as the C++ loader computes it) and
        `chat_template` (str or None).

    Raises:
        ValueError: if a required key is missing or the architecture's rope mode is unknown.
    """
    reader = gguf.GGUFReader(path)
    arch = _required(reader, path, "general.architecture")
    if arch not in ROPE_MODE_BY_ARCH:
        raise ValueError(f"target architecture {arch!r} has no known rope mode (known: {', '.join(sorted(ROPE_MODE_BY_ARCH))})")
    n_embd = int(_required(reader, path, f"{arch}.embedding_length"))
    n_head = _widest(_required(reader, path, f"{arch}.attention.head_count"))
    token_bytes = _token_bytes(reader, path)
    return {
        "architecture": arch,
        "n_embd": n_embd,
        "n_vocab": len(token_bytes),
        "n_layer": int(_required(reader, path, f"{arch}.block_count")),
        "n_head": n_head,
        "n_head_kv": _widest(_field(reader, f"{arch}.attention.head_count_kv", n_head)),
        "head_dim": int(_field(reader, f"{arch}.attention.key_length", n_embd // n_head)),
        "n_ff": _widest(_required(reader, path, f"{arch}.feed_forward_length")),
        "n_ctx_train": int(_field(reader, f"{arch}.context_length", 0)),
        "rms_eps": shortest_float32(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", DEFAULT_RMS_EPS)),
        "rope_freq_base": shortest_float32(_field(reader, f"{arch}.rope.freq_base", DEFAULT_ROPE_FREQ_BASE)),
        "rope_mode": ROPE_MODE_BY_ARCH[arch],
        "tokens": [t.decode("utf-8", errors="replace") for t in token_bytes],
        "vocab_hash": gguf_schema.vocab_hash(token_bytes),
        "chat_template": _field(reader, "tokenizer.chat_template"),
    }


def _dequantized(tensor) -> np.ndarray:
    """A GGUF matrix as float32 numpy `[rows, cols]` (ggml ne = [cols, rows]), copied out of the memory map."""
    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)  # [rows, cols]
    return np.array(data, dtype=np.float32, copy=True)


def load_target_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The frozen token embedding and LM head of a target, dequantized to float32.

    Args:
        path: a llama.cpp model GGUF.

    Returns:
        `(E, W)`, both `[n_vocab, n_embd]` float32: `token_embd.weight` and `output.weight`; when the
        target ties its embeddings (no `output.weight`), `W` is the same array object as `E`.

    Raises:
        ValueError: if the file has no token embedding, or the two matrices disagree in shape.
    """
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    if gguf_schema.TARGET_TENSOR_TOKEN_EMBD not in tensors:
        raise ValueError(f"target {os.fspath(path)} has no tensor {gguf_schema.TARGET_TENSOR_TOKEN_EMBD}")
    embed = _dequantized(tensors[gguf_schema.TARGET_TENSOR_TOKEN_EMBD])  # [V, H]
    if gguf_schema.TARGET_TENSOR_OUTPUT not in tensors:
        return embed, embed
    lm_head = _dequantized(tensors[gguf_schema.TARGET_TENSOR_OUTPUT])  # [V, H]
    if lm_head.shape != embed.shape:
        raise ValueError(f"target {os.fspath(path)}: output.weight shape {lm_head.shape} differs from token_embd.weight shape {embed.shape}")
    return embed, lm_head
