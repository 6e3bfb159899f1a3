"""Read a falcon-sar GGUF back: its config, its dequantized tensors, or a ready reference FalconDrafter.

Used by the round-trip tests and by parity tests that compare the ggml runtime with the PyTorch
reference on exactly the weights the file holds (after quantization).
"""

from __future__ import annotations

import os

import gguf
import numpy as np
import torch

from falcon_edge import gguf_schema as gs
from falcon_edge.train.model import DrafterConfig, FalconDrafter
from falcon_edge.train.target_weights import load_target_embeddings, read_target_meta, shortest_float32

from .tensor_map import check_shapes, to_torch_state_dict


def _value(reader: gguf.GGUFReader, path, key: str):
    field = reader.get_field(key)
    if field is None:
        raise ValueError(f"drafter {os.fspath(path)} has no key {key}")
    return field.contents()


def read_drafter_gguf(path: str | os.PathLike) -> tuple[DrafterConfig, dict[str, np.ndarray]]:
    """The config and tensors of a falcon-sar GGUF.

    Args:
        path: a file written by convert.write_gguf.run.

    Returns:
        `(config, tensors)`: tensors map falcon-sar names to numpy arrays in (out, in) order, float32
        (dequantized from F16 / Q8_0 / Q4_0) or int32 for `d2t`.

    Raises:
        ValueError: if the file is not a falcon-sar drafter, a key is missing or a tensor has the wrong shape.
    """
    reader = gguf.GGUFReader(path)
    arch = _value(reader, path, "general.architecture")
    if arch != gs.ARCH:
        raise ValueError(f"{os.fspath(path)} has architecture {arch!r}, expected {gs.ARCH!r}")
    u32 = {
        "block_size": gs.KEY_BLOCK_SIZE,
        "n_layer": gs.KEY_BLOCK_COUNT,
        "n_embd": gs.KEY_EMBEDDING_LENGTH,
        "n_ff": gs.KEY_FEED_FORWARD_LENGTH,
        "n_head": gs.KEY_HEAD_COUNT,
        "n_head_kv": gs.KEY_HEAD_COUNT_KV,
        "head_dim": gs.KEY_KEY_LENGTH,
        "rope_mode": gs.KEY_ROPE_MODE,
        "draft_vocab_size": gs.KEY_DRAFT_VOCAB_SIZE,
        "target_n_vocab": gs.KEY_TARGET_N_VOCAB,
    }
    values = {name: int(_value(reader, path, key)) for name, key in u32.items()}
    config = DrafterConfig(
        **values,
        rms_eps=shortest_float32(_value(reader, path, gs.KEY_RMS_EPS)),
        rope_freq_base=shortest_float32(_value(reader, path, gs.KEY_ROPE_FREQ_BASE)),
        fusion=_value(reader, path, gs.KEY_FUSION),
        target_arch=_value(reader, path, gs.KEY_TARGET_ARCH),
        target_vocab_hash=_value(reader, path, gs.KEY_TARGET_VOCAB_HASH),
    )
    tensors = {}
    for t in reader.tensors:
        if t.tensor_type == gguf.GGMLQuantizationType.I32:
            tensors[t.name] = np.array(t.data, dtype=np.int32)
        else:
            tensors[t.name] = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)  # [out, in] or [n]
    check_shapes(config, tensors)
    return config, tensors


def read_drafter_state(path: str | os.PathLike) -> tuple[DrafterConfig, dict[str, torch.Tensor]]:
    """The config and FalconDrafter state dict of a falcon-sar GGUF (dequantized weights, `d2t` as stored).

    Raises:
        ValueError: as read_drafter_gguf.
    """
    config, tensors = read_drafter_gguf(path)
    return config, {name: torch.from_numpy(array) for name, array in to_torch_state_dict(tensors).items()}


def load_drafter(path: str | os.PathLike, target_gguf: str | os.PathLike) -> FalconDrafter:
    """A reference FalconDrafter holding exactly the (dequantized) weights of a drafter GGUF.

    Args:
        path: the drafter GGUF.
        target_gguf: the target it was converted for; its embedding and LM head are loaded.

    Returns:
        the drafter in eval mode, float32, on the CPU.

    Raises:
        ValueError: if the drafter was converted for another target (vocabulary hash differs).
    """
    config, state = read_drafter_state(path)
    meta = read_target_meta(target_gguf)
    if config.target_vocab_hash != meta["vocab_hash"]:
        raise ValueError(f"drafter target vocab hash ({config.target_vocab_hash}) does not match target vocab hash ({meta['vocab_hash']})")
    embed, lm_head = load_target_embeddings(target_gguf)  # [V, H] each
    model = FalconDrafter(config, embed, lm_head, d2t=state.get("d2t"))
    model.load_state_dict(state)
    return model.eval()
