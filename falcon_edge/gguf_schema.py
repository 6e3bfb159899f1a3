"""The falcon-sar GGUF format: every metadata key and tensor name of a Falcon drafter file.

This module is the single Python spelling of the format; the C++ loader spells the same strings in
native/include/falcon-edge/gguf-schema.h and tests/unit/test_gguf_schema.py checks that both agree
(``_native.gguf_schema()``). It has no dependencies so the converter and the runtime can both use it.

A drafter file holds only the drafter's own weights. The frozen token embedding and LM head are the
target's: the runtime reads them from the target GGUF at load time, and the ``target.*`` keys below
identify the target so that a drafter is never used with a model it was not trained for.
"""

ARCH = "falcon-sar"  # never "falcon": llama.cpp already uses that for TII's Falcon LLMs

# ---- hyper-parameters -------------------------------------------------------------------------
KEY_BLOCK_SIZE = f"{ARCH}.block_size"  # u32, k: tokens emitted per drafter pass
KEY_BLOCK_COUNT = f"{ARCH}.block_count"  # u32, decoder layers after the fusion
KEY_EMBEDDING_LENGTH = f"{ARCH}.embedding_length"  # u32, H (equals the target's n_embd)
KEY_FEED_FORWARD_LENGTH = f"{ARCH}.feed_forward_length"  # u32, SwiGLU width
KEY_HEAD_COUNT = f"{ARCH}.attention.head_count"  # u32
KEY_HEAD_COUNT_KV = f"{ARCH}.attention.head_count_kv"  # u32 (GQA)
KEY_KEY_LENGTH = f"{ARCH}.attention.key_length"  # u32, head dim
KEY_RMS_EPS = f"{ARCH}.attention.layer_norm_rms_epsilon"  # f32
KEY_ROPE_FREQ_BASE = f"{ARCH}.rope.freq_base"  # f32
KEY_ROPE_MODE = f"{ARCH}.rope.mode"  # u32, ggml rope mode: 0 = normal (llama), 2 = neox (qwen2, gemma3)
KEY_FUSION = f"{ARCH}.fusion"  # string, one of FUSIONS
KEY_DRAFT_VOCAB_SIZE = f"{ARCH}.draft_vocab_size"  # u32, 0 = the target's full vocabulary

# ---- identity of the target the drafter was trained for -----------------------------------------
KEY_TARGET_ARCH = f"{ARCH}.target.architecture"  # string, e.g. "qwen2"
KEY_TARGET_N_EMBD = f"{ARCH}.target.n_embd"  # u32
KEY_TARGET_N_VOCAB = f"{ARCH}.target.n_vocab"  # u32
KEY_TARGET_VOCAB_HASH = f"{ARCH}.target.vocab_hash"  # string, vocab_hash() of the target's token list

# ---- optional: the decoding tree the drafter was tuned with (parent index per node, -1 = root) ---
KEY_TREE_PARENTS = f"{ARCH}.tree.parents"  # i32 array

# ---- optional: the drafter's calibration, measured on held-out data when it was trained ------------
# A drafted node's acceptance key is its drafter probability bin x its depth (1, or 2 and deeper); the engine
# learns P(accepted | parent accepted) per key online and starts from these rates where the file has them
# (falcon_edge/train/calibration.py measures them; float32 comparisons, as the engine bins).
ACCEPT_PROB_EDGES = (0.1, 0.2, 0.35, 0.5, 0.7)  # upper edges of every probability bin but the last
ACCEPT_DEPTH_KEYS = 2
N_ACCEPT_KEYS = ACCEPT_DEPTH_KEYS * (len(ACCEPT_PROB_EDGES) + 1)
KEY_ACCEPT_RATES = f"{ARCH}.acceptance.rates"  # f32 [N_ACCEPT_KEYS], depth-major, each in [0, 1]

FUSION_LSTM = "lstm"  # Falcon: 2-layer LSTM 2H -> H run per position from a zero state
FUSION_LINEAR = "linear"  # EAGLE-1: Linear(2H -> H)
FUSIONS = (FUSION_LSTM, FUSION_LINEAR)
LSTM_LAYERS = 2

# ---- tensors (numpy shapes (out, in); ggml sees them reversed) ------------------------------------
# LSTM layer l: W_ih [4H, in_l] with in_0 = 2H, in_1 = H; gate order (i, f, g, o) as torch.nn.LSTM;
# bias = b_ih + b_hh [4H]. W_hh is not stored: the state is zero at every position.
TENSOR_LSTM_WEIGHT = "fuse.lstm.{layer}.weight"
TENSOR_LSTM_BIAS = "fuse.lstm.{layer}.bias"
TENSOR_FC_WEIGHT = "fuse.fc.weight"  # [H, 2H]
TENSOR_FC_BIAS = "fuse.fc.bias"  # [H]
# decoder layer i; layer 0 has no attn_norm (as EAGLE / Falcon)
TENSOR_ATTN_NORM = "blk.{layer}.attn_norm.weight"  # [H]
TENSOR_ATTN_Q = "blk.{layer}.attn_q.weight"  # [n_head * head_dim, H]
TENSOR_ATTN_K = "blk.{layer}.attn_k.weight"  # [n_head_kv * head_dim, H]
TENSOR_ATTN_V = "blk.{layer}.attn_v.weight"  # [n_head_kv * head_dim, H]
TENSOR_ATTN_OUT = "blk.{layer}.attn_output.weight"  # [H, n_head * head_dim]
TENSOR_FFN_NORM = "blk.{layer}.ffn_norm.weight"  # [H]
TENSOR_FFN_GATE = "blk.{layer}.ffn_gate.weight"  # [n_ff, H]
TENSOR_FFN_UP = "blk.{layer}.ffn_up.weight"  # [n_ff, H]
TENSOR_FFN_DOWN = "blk.{layer}.ffn_down.weight"  # [H, n_ff]
TENSOR_D2T = "d2t"  # i32 [draft_vocab_size]: draft id -> target token id (only when draft_vocab_size > 0)

# target tensors the runtime reads from the *target* GGUF
TARGET_TENSOR_TOKEN_EMBD = "token_embd.weight"
TARGET_TENSOR_OUTPUT = "output.weight"  # absent when the target ties embeddings: token_embd is the LM head


def vocab_hash(tokens) -> str:
    """Identity of a token list: 64-bit FNV-1a over each token's UTF-8 bytes followed by a NUL byte.

    The C++ loader computes the same value from the target's llama_vocab (``fe::vocab_hash``).

    Args:
        tokens: iterable of token texts (str) or raw bytes, in id order.

    Returns:
        ``"fnv1a64:"`` followed by 16 lowercase hex digits.
    """
    h = 0xCBF29CE484222325
    prime = 0x100000001B3
    mask = 0xFFFFFFFFFFFFFFFF
    for tok in tokens:
        data = tok.encode("utf-8") if isinstance(tok, str) else bytes(tok)
        for b in data + b"\0":
            h = ((h ^ b) * prime) & mask
    return f"fnv1a64:{h:016x}"


def schema() -> dict:
    """All key and tensor-name strings of the format, keyed by their constant name."""
    return {
        name: value
        for name, value in globals().items()
        if name.isupper() and isinstance(value, str) and (name.startswith(("KEY_", "TENSOR_", "TARGET_", "FUSION_")) or name == "ARCH")
    }
