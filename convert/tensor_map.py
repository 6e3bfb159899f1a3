"""PyTorch state-dict names → falcon-sar GGUF tensor names: the one table of the converter.

Each falcon-sar tensor accepts one or more source layouts; a layout is a tuple of state-dict names
whose arrays are summed (the LSTM bias is b_ih + b_hh in torch.nn.LSTM checkpoints). The first
layout of every row is FalconDrafter's own naming (falcon_edge/train/model.py), so the table also maps
a GGUF back to a loadable state dict. The published layouts are Falcon's `cnets.py` (torch.nn.LSTM
named `lstm`, HF LLaMA layer names) and EAGLE-1 (`fc` + the same layer names).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping

import numpy as np

from falcon_edge import gguf_schema as gs

if TYPE_CHECKING:
    from falcon_edge.train.model import DrafterConfig

# (falcon-sar tensor, accepted source layouts); "{layer}" is the LSTM or decoder layer index
TENSOR_SOURCES: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    (gs.TENSOR_LSTM_WEIGHT, (("lstm.weight_ih_l{layer}",),)),
    (gs.TENSOR_LSTM_BIAS, (("lstm.bias_l{layer}",), ("lstm.bias_ih_l{layer}", "lstm.bias_hh_l{layer}"))),
    (gs.TENSOR_FC_WEIGHT, (("fc.weight",),)),
    (gs.TENSOR_FC_BIAS, (("fc.bias",),)),
    (gs.TENSOR_ATTN_NORM, (("layers.{layer}.input_layernorm.weight",),)),
    (gs.TENSOR_ATTN_Q, (("layers.{layer}.self_attn.q_proj.weight",),)),
    (gs.TENSOR_ATTN_K, (("layers.{layer}.self_attn.k_proj.weight",),)),
    (gs.TENSOR_ATTN_V, (("layers.{layer}.self_attn.v_proj.weight",),)),
    (gs.TENSOR_ATTN_OUT, (("layers.{layer}.self_attn.o_proj.weight",),)),
    (gs.TENSOR_FFN_NORM, (("layers.{layer}.post_attention_layernorm.weight",),)),
    (gs.TENSOR_FFN_GATE, (("layers.{layer}.mlp.gate_proj.weight",),)),
    (gs.TENSOR_FFN_UP, (("layers.{layer}.mlp.up_proj.weight",),)),
    (gs.TENSOR_FFN_DOWN, (("layers.{layer}.mlp.down_proj.weight",),)),
    (gs.TENSOR_D2T, (("d2t",),)),
)

# state-dict entries that are not drafter weights: the frozen target embedding, the LSTM's W_hh (the
# state is zero at every position) and rotary caches that old HF checkpoints saved
IGNORED = (
    "embed_tokens.weight",
    "lstm.weight_hh_l{layer}",
    "layers.{layer}.self_attn.rotary_emb.inv_freq",
)


def _pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{layer}"), r"(?P<layer>\d+)") + "$")


# compiled once: (pattern, falcon-sar template, layout index, position of the name in its layout)
_SOURCE_PATTERNS = [
    (_pattern(source), target, i_layout, i_name)
    for target, layouts in TENSOR_SOURCES
    for i_layout, layout in enumerate(layouts)
    for i_name, source in enumerate(layout)
]
_TARGET_PATTERNS = [(_pattern(target), layouts) for target, layouts in TENSOR_SOURCES]
_IGNORED_PATTERNS = [_pattern(source) for source in IGNORED]
_LAYOUTS = dict(TENSOR_SOURCES)


def to_gguf_tensors(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map a drafter state dict (FalconDrafter, Falcon or EAGLE-1 layout) to falcon-sar tensors.

    Args:
        state_dict: name → numpy array (any float dtype; d2t integer).

    Returns:
        falcon-sar tensor name → array: float32 weights, int32 `d2t`.

    Raises:
        ValueError: on a name the table does not know, a layout with a missing part (e.g. bias_ih
            without bias_hh), or two layouts for the same tensor.
    """
    templates: dict[str, tuple[str, dict]] = {}  # falcon-sar name -> its template and {"layer": index}
    parts: dict[str, dict[int, dict[int, np.ndarray]]] = {}  # falcon-sar name -> layout -> part -> array
    unknown = []
    for name, array in state_dict.items():
        if any(p.match(name) for p in _IGNORED_PATTERNS):
            continue
        for pattern, target, i_layout, i_name in _SOURCE_PATTERNS:
            found = pattern.match(name)
            if found:
                gguf_name = target.format(**found.groupdict())
                templates[gguf_name] = (target, found.groupdict())
                parts.setdefault(gguf_name, {}).setdefault(i_layout, {})[i_name] = np.asarray(array)
                break
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unsupported state-dict entries: {', '.join(sorted(unknown))}")
    tensors = {}
    for gguf_name, layouts in parts.items():
        if len(layouts) > 1:
            raise ValueError(f"{gguf_name} is given by {len(layouts)} different source layouts")
        ((i_layout, arrays),) = layouts.items()
        template, index = templates[gguf_name]
        layout = [source.format(**index) for source in _LAYOUTS[template][i_layout]]
        if len(arrays) != len(layout):
            missing = [source for i, source in enumerate(layout) if i not in arrays]
            raise ValueError(f"{gguf_name} needs {' + '.join(layout)}, missing {', '.join(missing)}")
        if gguf_name == gs.TENSOR_D2T:
            tensors[gguf_name] = arrays[0].astype(np.int32)
        else:
            tensors[gguf_name] = sum(arrays[i].astype(np.float32) for i in range(len(layout)))
    return tensors


def to_torch_state_dict(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of to_gguf_tensors for FalconDrafter's own names (the first layout of each row).

    Args:
        tensors: falcon-sar tensor name → array.

    Returns:
        FalconDrafter state-dict name → array.

    Raises:
        ValueError: on a name that is not a falcon-sar tensor.
    """
    state = {}
    for gguf_name, array in tensors.items():
        for pattern, layouts in _TARGET_PATTERNS:
            found = pattern.match(gguf_name)
            if found:
                state[layouts[0][0].format(**found.groupdict())] = array
                break
        else:
            raise ValueError(f"{gguf_name} is not a falcon-sar tensor")
    return state


def expected_shapes(config: DrafterConfig) -> dict[str, tuple[int, ...]]:
    """Every falcon-sar tensor a config implies, in file order, with its numpy shape (out, in).

    Args:
        config: the drafter's hyper-parameters.

    Returns:
        falcon-sar tensor name → shape; `d2t` only when config.draft_vocab_size > 0.
    """
    h, d, n_ff = config.n_embd, config.head_dim, config.n_ff
    shapes: dict[str, tuple[int, ...]] = {}
    if config.fusion == gs.FUSION_LSTM:
        for layer in range(gs.LSTM_LAYERS):
            shapes[gs.TENSOR_LSTM_WEIGHT.format(layer=layer)] = (4 * h, 2 * h if layer == 0 else h)
            shapes[gs.TENSOR_LSTM_BIAS.format(layer=layer)] = (4 * h,)
    else:
        shapes[gs.TENSOR_FC_WEIGHT] = (h, 2 * h)
        shapes[gs.TENSOR_FC_BIAS] = (h,)
    for i in range(config.n_layer):
        if i > 0:
            shapes[gs.TENSOR_ATTN_NORM.format(layer=i)] = (h,)
        shapes[gs.TENSOR_ATTN_Q.format(layer=i)] = (config.n_head * d, h)
        shapes[gs.TENSOR_ATTN_K.format(layer=i)] = (config.n_head_kv * d, h)
        shapes[gs.TENSOR_ATTN_V.format(layer=i)] = (config.n_head_kv * d, h)
        shapes[gs.TENSOR_ATTN_OUT.format(layer=i)] = (h, config.n_head * d)
        shapes[gs.TENSOR_FFN_NORM.format(layer=i)] = (h,)
        shapes[gs.TENSOR_FFN_GATE.format(layer=i)] = (n_ff, h)
        shapes[gs.TENSOR_FFN_UP.format(layer=i)] = (n_ff, h)
        shapes[gs.TENSOR_FFN_DOWN.format(layer=i)] = (h, n_ff)
    if config.draft_vocab_size:
        shapes[gs.TENSOR_D2T] = (config.draft_vocab_size,)
    return shapes


def check_shapes(config: DrafterConfig, tensors: Mapping[str, np.ndarray]) -> None:
    """Check that tensors are exactly the ones config implies, with the right shapes.

    Raises:
        ValueError: naming the missing, unexpected or mis-shaped tensors.
    """
    shapes = expected_shapes(config)
    missing = [name for name in shapes if name not in tensors]
    if missing:
        raise ValueError(f"missing drafter tensors: {', '.join(missing)}")
    unexpected = sorted(set(tensors) - set(shapes))
    if unexpected:
        raise ValueError(f"tensors not expected for fusion {config.fusion!r} and {config.n_layer} layers: {', '.join(unexpected)}")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)}, expected {shape}")
