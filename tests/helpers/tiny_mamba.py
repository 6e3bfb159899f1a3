"""A tiny, seeded, random Mamba (v1) GGUF that libllama loads: a recurrent target, whose state cannot be rolled back.

Same vocabulary as the tiny Llama target (tiny_target.py); F32 weights that depend only on the arguments.
"""

from __future__ import annotations

import os

import gguf
import numpy as np

from .tiny_target import BOS_ID, EOS_ID, UNK_ID, _vocab


def write_tiny_mamba_gguf(path: str | os.PathLike, *, n_vocab: int = 320, n_embd: int = 32, n_layer: int = 2,
                          d_state: int = 8, d_conv: int = 4, dt_rank: int = 4, seed: int = 0) -> str:
    """Write a random Mamba model (inner size 2 * n_embd) and return its path."""
    d_inner = 2 * n_embd
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    tokens, scores, types = _vocab(n_vocab)
    w = gguf.GGUFWriter(os.fspath(path), arch="mamba")
    w.add_name("falcon-edge tiny random mamba")
    w.add_context_length(2048)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_tensor("token_embd.weight", weight(n_vocab, n_embd))  # [V, H]
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))  # [H]
    w.add_tensor("output.weight", weight(n_vocab, n_embd))  # [V, H]
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(n_embd, np.float32))  # [H]
        w.add_tensor(p + "ssm_in.weight", weight(2 * d_inner, n_embd))  # [2*D, H]
        w.add_tensor(p + "ssm_conv1d.weight", weight(d_inner, d_conv))  # [D, d_conv]
        w.add_tensor(p + "ssm_conv1d.bias", weight(d_inner))  # [D]
        w.add_tensor(p + "ssm_x.weight", weight(dt_rank + 2 * d_state, d_inner))  # [dt_rank + 2*N, D]
        w.add_tensor(p + "ssm_dt.weight", weight(d_inner, dt_rank))  # [D, dt_rank]
        w.add_tensor(p + "ssm_dt.bias", weight(d_inner))  # [D]
        w.add_tensor(p + "ssm_a", -np.abs(weight(d_inner, d_state)))  # [D, N], negative: a decaying state
        w.add_tensor(p + "ssm_d", weight(d_inner))  # [D]
        w.add_tensor(p + "ssm_out.weight", weight(n_embd, d_inner))  # [H, D]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return os.fspath(path)
