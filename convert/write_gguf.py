"""Convert a trained drafter checkpoint into a falcon-sar GGUF for a given target.

Loads the checkpoint (FalconDrafter's own format, or a bare published Falcon / EAGLE-1 state dict),
maps names with tensor_map, checks every shape against the target, quantizes the weight matrices
and writes the file with gguf.GGUFWriter. The target's embedding and LM head are not copied: the
runtime reads them from the target GGUF, identified by the `target.*` keys written here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import gguf
import numpy as np
import torch
from tqdm import tqdm

from falcon_edge import gguf_schema as gs
from falcon_edge.train.model import ROPE_MODE_NEOX, DrafterConfig
from falcon_edge.train.target_weights import read_target_meta

from .tensor_map import check_shapes, expected_shapes, to_gguf_tensors

logger = logging.getLogger(__name__)

Q = gguf.GGMLQuantizationType
OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}
_FILE_TYPES = {
    Q.F32: gguf.LlamaFileType.ALL_F32,
    Q.F16: gguf.LlamaFileType.MOSTLY_F16,
    Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    Q.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
}
DEFAULT_BLOCK_SIZE = 2


class ConversionError(ValueError):
    """A checkpoint that cannot become a drafter for the given target."""


# ---- loading ------------------------------------------------------------------------------------


def _to_numpy(value) -> np.ndarray:
    """A state-dict entry as numpy: floating tensors (bf16 included) to float32, integer ones unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _load(checkpoint) -> Mapping:
    if isinstance(checkpoint, Mapping):
        return checkpoint
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_identity(config: DrafterConfig, meta: Mapping) -> None:
    """Refuse a drafter trained for another target: width, architecture, vocabulary size and hash."""
    for field, target_value in (
        ("n_embd", meta["n_embd"]),
        ("target_arch", meta["architecture"]),
        ("target_n_vocab", meta["n_vocab"]),
        ("target_vocab_hash", meta["vocab_hash"]),
    ):
        drafter_value = getattr(config, field)
        # an empty identity field means the checkpoint did not record it
        if drafter_value not in ("", 0) and drafter_value != target_value:
            raise ConversionError(f"drafter {field} ({drafter_value}) does not match the target's ({target_value})")


def _infer_config(tensors: Mapping[str, np.ndarray], meta: Mapping, fusion: str | None) -> DrafterConfig:
    """Hyper-parameters of a bare published state dict: shapes give widths, the target gives the rest.

    Head dim, norm eps and rope base are the target's (Falcon and EAGLE drafters copy the target's
    config); rope mode is neox because those checkpoints were trained with HF LLaMA's rotate_half.
    """
    lstm_w = gs.TENSOR_LSTM_WEIGHT.format(layer=0)
    has = {gs.FUSION_LSTM: lstm_w in tensors, gs.FUSION_LINEAR: gs.TENSOR_FC_WEIGHT in tensors}
    found = [name for name, present in has.items() if present]
    if len(found) != 1:
        raise ConversionError(f"a state dict must hold exactly one fusion (lstm or fc), found {found or 'none'}")
    inferred = found[0]
    if fusion not in (None, inferred):
        raise ConversionError(f"fusion {fusion!r} was asked for but the state dict holds {inferred!r} weights")
    n_embd = tensors[lstm_w].shape[1] // 2 if inferred == gs.FUSION_LSTM else tensors[gs.TENSOR_FC_WEIGHT].shape[0]
    if n_embd != meta["n_embd"]:
        raise ConversionError(f"drafter n_embd ({n_embd}) does not match the target's ({meta['n_embd']})")
    n_layer = 0
    while gs.TENSOR_ATTN_Q.format(layer=n_layer) in tensors:
        n_layer += 1
    first = {t: t.format(layer=0) for t in (gs.TENSOR_ATTN_Q, gs.TENSOR_ATTN_K, gs.TENSOR_FFN_GATE)}
    missing = [name for name in first.values() if name not in tensors]
    if missing:
        raise ConversionError(f"state dict has no {', '.join(missing)}")
    head_dim = meta["head_dim"]
    q_rows, k_rows = tensors[first[gs.TENSOR_ATTN_Q]].shape[0], tensors[first[gs.TENSOR_ATTN_K]].shape[0]
    if q_rows % head_dim or k_rows % head_dim:
        raise ConversionError(f"q_proj rows ({q_rows}) and k_proj rows ({k_rows}) must be multiples of the target head dim ({head_dim})")
    d2t = tensors.get(gs.TENSOR_D2T)
    return DrafterConfig(
        n_embd=n_embd,
        n_head=q_rows // head_dim,
        n_head_kv=k_rows // head_dim,
        head_dim=head_dim,
        n_ff=tensors[first[gs.TENSOR_FFN_GATE]].shape[0],
        n_layer=n_layer,
        block_size=DEFAULT_BLOCK_SIZE,
        rms_eps=meta["rms_eps"],
        rope_freq_base=meta["rope_freq_base"],
        rope_mode=ROPE_MODE_NEOX,
        fusion=inferred,
        draft_vocab_size=0 if d2t is None else len(d2t),
    )


def load_checkpoint(checkpoint, target_meta: Mapping, *, fusion: str | None = None) -> tuple[DrafterConfig, dict[str, np.ndarray]]:
    """A checkpoint as a config and falcon-sar tensors, with the target's identity filled in.

    Args:
        checkpoint: a path to a torch.save file, or the loaded object. Either FalconDrafter's format
            `{"config": DrafterConfig.to_dict(), "state_dict": model.state_dict(), "d2t": optional [V']}`,
            or a bare Falcon (`lstm.*`) / EAGLE-1 (`fc.*`) state dict, whose hyper-parameters are inferred.
        target_meta: read_target_meta() of the target.
        fusion: the expected fusion; must agree with the weights.

    Returns:
        `(config, tensors)`: tensors map falcon-sar names to float32 arrays (int32 `d2t`).

    Raises:
        FileNotFoundError: if the checkpoint path does not exist.
        ConversionError: if the weights, config and target disagree.
    """
    obj = _load(checkpoint)
    own_format = "config" in obj and "state_dict" in obj
    state = dict(obj["state_dict"] if own_format else obj)
    if own_format and "d2t" in obj:
        if "d2t" in state:
            raise ConversionError("the checkpoint holds d2t both at the top level and in its state dict")
        state["d2t"] = obj["d2t"]
    try:
        tensors = to_gguf_tensors({name: _to_numpy(value) for name, value in state.items()})
    except ValueError as e:
        raise ConversionError(str(e)) from e
    if not own_format:
        config = _infer_config(tensors, target_meta, fusion)
    else:
        config = DrafterConfig.from_dict(obj["config"])
        if fusion not in (None, config.fusion):
            raise ConversionError(f"fusion {fusion!r} was asked for but the checkpoint was trained with {config.fusion!r}")
        _check_identity(config, target_meta)
    config = dataclasses.replace(
        config,
        target_arch=target_meta["architecture"],
        target_n_vocab=target_meta["n_vocab"],
        target_vocab_hash=target_meta["vocab_hash"],
    )
    return config, tensors


def _with_draft_vocab(config: DrafterConfig, tensors: dict, draft_vocab) -> tuple[DrafterConfig, dict]:
    """Replace the checkpoint's d2t by draft_vocab (target ids), checking range and uniqueness."""
    d2t = np.asarray(draft_vocab)
    if d2t.ndim != 1 or d2t.size == 0 or not np.issubdtype(d2t.dtype, np.integer):
        raise ConversionError(f"draft_vocab must be a non-empty 1-D list of token ids, got shape {d2t.shape} dtype {d2t.dtype}")
    if d2t.min() < 0 or d2t.max() >= config.target_n_vocab:
        raise ConversionError(f"draft_vocab ids must lie in [0, {config.target_n_vocab}), got [{d2t.min()}, {d2t.max()}]")
    if len(np.unique(d2t)) != len(d2t):
        raise ConversionError(f"draft_vocab repeats ids: {len(d2t) - len(np.unique(d2t))} duplicates")
    tensors = {**tensors, gs.TENSOR_D2T: d2t.astype(np.int32)}
    return dataclasses.replace(config, draft_vocab_size=len(d2t)), tensors


def _check_tree_parents(tree_parents: Sequence[int]) -> list[int]:
    parents = [int(p) for p in tree_parents]
    for i, parent in enumerate(parents):
        if not -1 <= parent < i:
            raise ConversionError(f"tree node {i} has parent {parent}: must be -1 (root) or an earlier node")
    return parents


# ---- writing ------------------------------------------------------------------------------------


def _encode(name: str, array: np.ndarray, qtype: Q) -> tuple[np.ndarray, Q]:
    """The bytes to store for one tensor and their type: matrices in qtype, vectors F32, d2t I32."""
    if array.dtype == np.int32:
        return array, Q.I32
    if array.ndim == 1 or qtype == Q.F32:
        return array.astype(np.float32), Q.F32
    if qtype == Q.F16:
        return array.astype(np.float16), Q.F16
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        logger.warning("%s: row length %d is not a multiple of %d, stored as F16 instead of %s", name, array.shape[-1], block, qtype.name)
        return array.astype(np.float16), Q.F16
    return gguf.quants.quantize(array.astype(np.float32), qtype), qtype


def _check_accept_rates(accept_rates: Sequence[float]) -> list[float]:
    rates = [float(r) for r in accept_rates]
    if len(rates) != gs.N_ACCEPT_KEYS:
        raise ConversionError(f"accept_rates must hold {gs.N_ACCEPT_KEYS} rates (one per acceptance key), got {len(rates)}")
    for i, r in enumerate(rates):
        if not 0.0 <= r <= 1.0:
            raise ConversionError(f"accept_rates[{i}] = {r} is not a rate in [0, 1]")
    return rates


def _write(out_path: Path, config: DrafterConfig, tensors: Mapping[str, np.ndarray], qtype: Q, tree_parents,
           accept_rates, progress: bool) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)  # after a long training run, a missing folder is no reason to fail
    writer = gguf.GGUFWriter(os.fspath(out_path), arch=gs.ARCH)
    writer.add_uint32(gs.KEY_BLOCK_SIZE, config.block_size)
    writer.add_uint32(gs.KEY_BLOCK_COUNT, config.n_layer)
    writer.add_uint32(gs.KEY_EMBEDDING_LENGTH, config.n_embd)
    writer.add_uint32(gs.KEY_FEED_FORWARD_LENGTH, config.n_ff)
    writer.add_uint32(gs.KEY_HEAD_COUNT, config.n_head)
    writer.add_uint32(gs.KEY_HEAD_COUNT_KV, config.n_head_kv)
    writer.add_uint32(gs.KEY_KEY_LENGTH, config.head_dim)
    writer.add_float32(gs.KEY_RMS_EPS, config.rms_eps)
    writer.add_float32(gs.KEY_ROPE_FREQ_BASE, config.rope_freq_base)
    writer.add_uint32(gs.KEY_ROPE_MODE, config.rope_mode)
    writer.add_string(gs.KEY_FUSION, config.fusion)
    writer.add_uint32(gs.KEY_DRAFT_VOCAB_SIZE, config.draft_vocab_size)
    writer.add_string(gs.KEY_TARGET_ARCH, config.target_arch)
    writer.add_uint32(gs.KEY_TARGET_N_EMBD, config.n_embd)
    writer.add_uint32(gs.KEY_TARGET_N_VOCAB, config.target_n_vocab)
    writer.add_string(gs.KEY_TARGET_VOCAB_HASH, config.target_vocab_hash)
    if tree_parents:
        writer.add_key_value(gs.KEY_TREE_PARENTS, tree_parents, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT32)
    if accept_rates:
        writer.add_key_value(gs.KEY_ACCEPT_RATES, accept_rates, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
    writer.add_file_type(_FILE_TYPES[qtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, array in tqdm(tensors.items(), desc="quantizing", unit="tensor", disable=not progress):
        data, stored = _encode(name, array, qtype)
        writer.add_tensor(name, data, raw_dtype=stored if data.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=progress)
    writer.close()


def run(
    checkpoint,
    target_gguf: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    outtype: str = "f16",
    block_size: int | None = None,
    fusion: str | None = None,
    draft_vocab: Sequence[int] | np.ndarray | None = None,
    tree_parents: Sequence[int] | None = None,
    accept_rates: Sequence[float] | None = None,
    progress: bool = True,
) -> Path:
    """Convert a drafter checkpoint into a falcon-sar GGUF for one target.

    Args:
        checkpoint: path or loaded object; see load_checkpoint for the accepted formats.
        target_gguf: the target model GGUF the drafter runs with (its identity and shapes are checked).
        out_path: the GGUF to write.
        outtype: "f32", "f16", "q8_0" or "q4_0" for the weight matrices; norms and biases stay F32, d2t
            I32, and a matrix whose rows are not a multiple of 32 falls back to F16 (logged).
        block_size: k; default the checkpoint's (2 for a bare state dict).
        fusion: "lstm" or "linear"; only checked against the weights.
        draft_vocab: target ids of a reduced draft vocabulary (d2t), replacing the checkpoint's.
        tree_parents: the tuned decoding tree, a parent index per node (-1 = root), written as
            `falcon-sar.tree.parents`.
        accept_rates: held-out P(accepted | parent accepted) per acceptance key (train/calibration.py), written as
            `falcon-sar.acceptance.rates`; default the checkpoint's own ``accept_rates`` (FalconDrafter's format),
            else none.
        progress: show a tqdm progress bar.

    Returns:
        the path written.

    Raises:
        FileNotFoundError: if the checkpoint or target does not exist.
        ConversionError: if the checkpoint does not fit the target or an argument is invalid.
    """
    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    if not Path(target_gguf).is_file():
        raise FileNotFoundError(f"target {target_gguf} does not exist")
    meta = read_target_meta(target_gguf)
    obj = _load(checkpoint)
    config, tensors = load_checkpoint(obj, meta, fusion=fusion)
    if accept_rates is None and "config" in obj:
        accept_rates = obj.get("accept_rates")
    rates = _check_accept_rates(accept_rates) if accept_rates is not None else None
    if block_size is not None:
        config = dataclasses.replace(config, block_size=block_size)
    if draft_vocab is not None:
        config, tensors = _with_draft_vocab(config, tensors, draft_vocab)
    parents = _check_tree_parents(tree_parents) if tree_parents is not None else None
    try:
        check_shapes(config, tensors)
    except ValueError as e:
        raise ConversionError(str(e)) from e
    ordered = {name: tensors[name] for name in expected_shapes(config)}
    out_path = Path(out_path)
    _write(out_path, config, ordered, OUTTYPES[outtype], parents, rates, progress)
    return out_path

