"""Checkpoint → falcon-sar GGUF → GGUFReader: keys, shapes, types and values round-trip; bad inputs fail clearly."""

from __future__ import annotations

import argparse
import logging

import gguf
import numpy as np
import pytest
import torch
from torch import nn

from falcon_edge.convert import ConversionError, add_cli, load_drafter, read_drafter_gguf, run
from falcon_edge.convert.convert_falcon_to_gguf import main
from falcon_edge.convert.tensor_map import expected_shapes, to_gguf_tensors
from falcon_edge import gguf_schema as gs
from falcon_edge.train.model import ROPE_MODE_NEOX, reference_block_outputs, reference_context_outputs
from helpers.tiny_drafter import checkpoint_of, make_tiny_drafter
from helpers.tiny_target import write_tiny_llama_gguf

torch.set_num_threads(1)
Q = gguf.GGMLQuantizationType


def fields_of(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}


def tensors_of(path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def outputs_agree(a, b, rel: float) -> None:
    """Two drafters give the same context outputs on a fixed random context: |out_a - out_b| <= rel * |out_b|."""
    generator = torch.Generator().manual_seed(5)
    feats, tokens = torch.randn(6, 64, generator=generator), torch.randint(0, 320, (6,), generator=generator)
    out_a, out_b = reference_context_outputs(a, feats, tokens), reference_context_outputs(b, feats, tokens)  # [6, 64]
    assert float(torch.linalg.norm(out_a - out_b)) <= rel * float(torch.linalg.norm(out_b))


@pytest.mark.parametrize(("outtype", "qtype"), [("f32", Q.F32), ("f16", Q.F16), ("q8_0", Q.Q8_0)])
def test_every_key_shape_and_value_round_trips(tmp_path, tiny_target, tiny_meta, outtype, qtype):
    model = make_tiny_drafter(tiny_target, tiny_meta)
    out = run(checkpoint_of(model), tiny_target.path, tmp_path / "d.gguf", outtype=outtype, tree_parents=[-1, 0, 0, 1], progress=False)
    c = model.config
    assert fields_of(out) == {
        "general.architecture": gs.ARCH,
        gs.KEY_BLOCK_SIZE: 2,
        gs.KEY_BLOCK_COUNT: 2,
        gs.KEY_EMBEDDING_LENGTH: 64,
        gs.KEY_FEED_FORWARD_LENGTH: 96,
        gs.KEY_HEAD_COUNT: 4,
        gs.KEY_HEAD_COUNT_KV: 2,
        gs.KEY_KEY_LENGTH: 16,
        gs.KEY_RMS_EPS: pytest.approx(1e-5, rel=1e-6),
        gs.KEY_ROPE_FREQ_BASE: 10000.0,
        gs.KEY_ROPE_MODE: 0,
        gs.KEY_FUSION: gs.FUSION_LSTM,
        gs.KEY_DRAFT_VOCAB_SIZE: 0,
        gs.KEY_TARGET_ARCH: "llama",
        gs.KEY_TARGET_N_EMBD: 64,
        gs.KEY_TARGET_N_VOCAB: 320,
        gs.KEY_TARGET_VOCAB_HASH: tiny_meta["vocab_hash"],
        gs.KEY_TREE_PARENTS: [-1, 0, 0, 1],
        "general.file_type": int({Q.F32: 0, Q.F16: 1, Q.Q8_0: 7}[qtype]),
        "general.quantization_version": 2,
    }
    reader = gguf.GGUFReader(out)
    assert reader.get_field(gs.KEY_TREE_PARENTS).types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]
    assert reader.get_field(gs.KEY_BLOCK_SIZE).types == [gguf.GGUFValueType.UINT32]
    source = to_gguf_tensors({name: p.numpy() for name, p in model.state_dict().items()})
    stored = tensors_of(out)
    assert list(stored) == list(expected_shapes(c))  # every tensor, in file order, nothing else
    for name, t in stored.items():
        want = source[name]
        assert tuple(int(n) for n in t.shape) == tuple(reversed(want.shape))  # ggml ne is numpy's shape reversed
        assert t.tensor_type == (qtype if want.ndim == 2 else Q.F32)
        got = gguf.quants.dequantize(t.data, t.tensor_type)
        if qtype == Q.F32 or want.ndim == 1:
            np.testing.assert_array_equal(got, want)
        elif qtype == Q.F16:
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
        else:
            # Q8_0: one F16 scale per 32 values, step = amax/127; the error is half a step plus the
            # scale's F16 rounding times up to 127 steps (2^-11 * 127 < 0.07 step)
            step = np.abs(want.reshape(-1, 32)).max(axis=1) / 127
            assert (np.abs(got - want).reshape(-1, 32) <= step[:, None] * 0.57).all()
    config, tensors = read_drafter_gguf(out)
    assert config == c
    # relative output error over 12 seeds of this drafter: F16 <= 1.0e-3, Q8_0 <= 2.5e-2 (weight rounding of
    # ~0.4% of each block's amax, grown through LSTM gates, attention and MLP); the bounds leave 2-3x margin
    outputs_agree(load_drafter(out, tiny_target.path), model, rel={Q.F32: 0.0, Q.F16: 3e-3, Q.Q8_0: 5e-2}[qtype])


def test_q4_0_falls_back_to_f16_for_rows_not_a_multiple_of_32(tmp_path, tiny_target, tiny_meta, caplog):
    model = make_tiny_drafter(tiny_target, tiny_meta, n_ff=48)  # ffn_down rows are 48 wide
    with caplog.at_level(logging.WARNING, logger="convert.write_gguf"):
        out = run(checkpoint_of(model), tiny_target.path, tmp_path / "d.gguf", outtype="q4_0", progress=False)
    stored = tensors_of(out)
    assert stored["blk.0.ffn_gate.weight"].tensor_type == Q.Q4_0
    assert stored["blk.0.ffn_down.weight"].tensor_type == Q.F16
    assert "blk.0.ffn_down.weight: row length 48 is not a multiple of 32, stored as F16 instead of Q4_0" in caplog.text
    # Q4_0 keeps 16 levels per block: relative output error up to 0.33 over 12 seeds of this drafter
    outputs_agree(load_drafter(out, tiny_target.path), model, rel=0.6)


def test_missing_output_folders_are_created(tmp_path, tiny_target, tiny_meta):
    # `train fit --out runs/new/d.gguf` converts at the end of a long run: a folder not made yet must not lose it
    model = make_tiny_drafter(tiny_target, tiny_meta)
    out = run(checkpoint_of(model), tiny_target.path, tmp_path / "new" / "sub" / "d.gguf", outtype="f32", progress=False)
    outputs_agree(load_drafter(out, tiny_target.path), model, rel=1e-5)


def test_wrong_target_width_is_refused(tmp_path, tiny_target, tiny_meta):
    wide = write_tiny_llama_gguf(tmp_path / "wide.gguf", n_embd=128, n_head=8, n_head_kv=2)
    model = make_tiny_drafter(tiny_target, tiny_meta)
    with pytest.raises(ConversionError, match=r"drafter n_embd \(64\) does not match the target's \(128\)"):
        run(checkpoint_of(model), wide.path, tmp_path / "d.gguf", progress=False)


def test_drafter_for_another_vocabulary_is_refused(tmp_path, tiny_target, tiny_meta):
    other = write_tiny_llama_gguf(tmp_path / "other.gguf", n_vocab=321)
    model = make_tiny_drafter(tiny_target, tiny_meta)
    with pytest.raises(ConversionError, match=r"drafter target_n_vocab \(320\) does not match the target's \(321\)"):
        run(checkpoint_of(model), other.path, tmp_path / "d.gguf", progress=False)


def falcon_state_dict(model, lstm: nn.LSTM) -> dict:
    """The published Falcon cnets.py layout: torch.nn.LSTM named `lstm`, HF layer names, frozen embed_tokens."""
    state = {f"lstm.{name}": value for name, value in lstm.state_dict().items()}
    state.update({name: value for name, value in model.state_dict().items() if name.startswith("layers.")})
    state["embed_tokens.weight"] = model.embed.clone()
    state["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    return state


def test_falcon_layout_state_dict_converts(tmp_path, tiny_target, tiny_meta):
    model = make_tiny_drafter(tiny_target, tiny_meta, rope_mode=ROPE_MODE_NEOX)  # HF rotate_half
    torch.manual_seed(4)
    lstm = nn.LSTM(128, 64, num_layers=2)
    model.load_torch_lstm(lstm)
    torch.save(falcon_state_dict(model, lstm), tmp_path / "falcon.pt")
    out = run(tmp_path / "falcon.pt", tiny_target.path, tmp_path / "d.gguf", outtype="f32", progress=False)
    config, _ = read_drafter_gguf(out)
    assert config == model.config
    outputs_agree(load_drafter(out, tiny_target.path), model, rel=1e-5)


def test_eagle1_layout_state_dict_converts(tmp_path, tiny_target, tiny_meta):
    model = make_tiny_drafter(tiny_target, tiny_meta, fusion=gs.FUSION_LINEAR, rope_mode=ROPE_MODE_NEOX, n_layer=1, block_size=3)
    bare = {name: value for name, value in model.state_dict().items()}
    assert {"fc.weight", "fc.bias"} <= set(bare)
    out = run(bare, tiny_target.path, tmp_path / "d.gguf", outtype="f32", block_size=3, fusion="linear", progress=False)
    config, _ = read_drafter_gguf(out)
    assert config == model.config
    outputs_agree(load_drafter(out, tiny_target.path), model, rel=1e-5)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update({"layers.0.self_attn.q_proj.bias": torch.zeros(64)}), "unsupported state-dict entries: layers.0.self_attn.q_proj.bias"),
        (lambda s: s.pop("lstm.bias_hh_l1"), r"fuse.lstm.1.bias needs lstm.bias_ih_l1 \+ lstm.bias_hh_l1, missing lstm.bias_hh_l1"),
        (lambda s: s.pop("layers.1.mlp.up_proj.weight"), "missing drafter tensors: blk.1.ffn_up.weight"),
        (lambda s: s.update({"layers.0.input_layernorm.weight": torch.ones(64)}), "tensors not expected .*: blk.0.attn_norm.weight"),
        (lambda s: s.update({"fc.weight": torch.zeros(64, 128)}), r"exactly one fusion \(lstm or fc\), found \['lstm', 'linear'\]"),
    ],
)
def test_malformed_state_dicts_are_refused(tmp_path, tiny_target, tiny_meta, edit, message):
    model = make_tiny_drafter(tiny_target, tiny_meta)
    state = falcon_state_dict(model, nn.LSTM(128, 64, num_layers=2))
    edit(state)
    with pytest.raises(ConversionError, match=message):
        run(state, tiny_target.path, tmp_path / "d.gguf", progress=False)


def test_fusion_argument_must_agree_with_the_weights(tmp_path, tiny_target, tiny_meta):
    model = make_tiny_drafter(tiny_target, tiny_meta)
    with pytest.raises(ConversionError, match="fusion 'linear' was asked for but the checkpoint was trained with 'lstm'"):
        run(checkpoint_of(model), tiny_target.path, tmp_path / "d.gguf", fusion="linear", progress=False)


def test_draft_vocabulary_round_trips(tmp_path, tiny_target, tiny_meta):
    d2t = [2, 300, 5, 77, 319, 40]
    model = make_tiny_drafter(tiny_target, tiny_meta, draft_vocab_size=len(d2t), d2t=d2t)
    out = run(checkpoint_of(model), tiny_target.path, tmp_path / "d.gguf", progress=False)
    stored = tensors_of(out)[gs.TENSOR_D2T]
    assert stored.tensor_type == Q.I32 and stored.data.tolist() == d2t
    assert fields_of(out)[gs.KEY_DRAFT_VOCAB_SIZE] == len(d2t)
    loaded = load_drafter(out, tiny_target.path)
    assert loaded.d2t.tolist() == d2t
    torch.testing.assert_close(loaded.lm_head, torch.from_numpy(tiny_target.lm_head[d2t]))


def test_draft_vocab_argument_replaces_the_map(tmp_path, tiny_target, tiny_meta):
    model = make_tiny_drafter(tiny_target, tiny_meta)
    out = run(checkpoint_of(model), tiny_target.path, tmp_path / "d.gguf", draft_vocab=np.array([9, 8, 7]), progress=False)
    config, tensors = read_drafter_gguf(out)
    assert config.draft_vocab_size == 3 and tensors[gs.TENSOR_D2T].tolist() == [9, 8, 7]
    for bad, message in (([1, 1, 2], "repeats ids: 1 duplicates"), ([0, 320], r"must lie in \[0, 320\), got \[0, 320\]")):
        with pytest.raises(ConversionError, match=message):
            run(checkpoint_of(model), tiny_target.path, tmp_path / "bad.gguf", draft_vocab=bad, progress=False)


def test_accept_rates_come_from_the_argument_or_the_checkpoint(tmp_path, tiny_target, tiny_meta):
    model = make_tiny_drafter(tiny_target, tiny_meta)
    rates = [i / (gs.N_ACCEPT_KEYS - 1) for i in range(gs.N_ACCEPT_KEYS)]
    plain = run(checkpoint_of(model), tiny_target.path, tmp_path / "plain.gguf", progress=False)
    assert gs.KEY_ACCEPT_RATES not in fields_of(plain)  # optional: a drafter without calibration has no key
    given = run(checkpoint_of(model), tiny_target.path, tmp_path / "given.gguf", accept_rates=rates, progress=False)
    assert fields_of(given)[gs.KEY_ACCEPT_RATES] == pytest.approx(rates)
    reader = gguf.GGUFReader(given)
    assert reader.get_field(gs.KEY_ACCEPT_RATES).types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32]
    own = run({**checkpoint_of(model), "accept_rates": rates[::-1]}, tiny_target.path, tmp_path / "own.gguf", progress=False)
    assert fields_of(own)[gs.KEY_ACCEPT_RATES] == pytest.approx(rates[::-1])


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"tree_parents": [-1, 1]}, ConversionError, "tree node 1 has parent 1: must be -1 .* or an earlier node"),
    ({"accept_rates": [0.5] * 3}, ConversionError, r"accept_rates must hold 12 rates \(one per acceptance key\), got 3"),
    ({"accept_rates": [0.5] * 11 + [1.5]}, ConversionError, r"accept_rates\[11\] = 1.5 is not a rate in \[0, 1\]"),
    ({"outtype": "q4_k"}, ConversionError, "outtype must be one of f32, f16, q8_0, q4_0, got 'q4_k'"),
])
def test_invalid_arguments_are_refused(tmp_path, tiny_target, tiny_meta, kwargs, error, message):
    model = make_tiny_drafter(tiny_target, tiny_meta)
    with pytest.raises(error, match=message):
        run(checkpoint_of(model), tiny_target.path, tmp_path / "d.gguf", progress=False, **kwargs)


def test_missing_files_raise_file_not_found(tmp_path, tiny_target):
    with pytest.raises(FileNotFoundError, match="checkpoint .*nope.pt does not exist"):
        run(tmp_path / "nope.pt", tiny_target.path, tmp_path / "d.gguf", progress=False)
    with pytest.raises(FileNotFoundError, match="target .*nope.gguf does not exist"):
        run({}, tmp_path / "nope.gguf", tmp_path / "d.gguf", progress=False)


def test_block_tree_reference_runs_on_a_converted_drafter(tmp_path, tiny_target, tiny_meta):
    model = make_tiny_drafter(tiny_target, tiny_meta, block_size=3)
    out = run(checkpoint_of(model), tiny_target.path, tmp_path / "d.gguf", outtype="f32", progress=False)
    loaded = load_drafter(out, tiny_target.path)
    feats, tokens = torch.randn(5, 64), torch.randint(0, 320, (5,))
    ctx = reference_context_outputs(loaded, feats, tokens)  # [k, H], feeds the level-1 blocks
    blocks = [(-1, ctx, torch.tensor([4, 5, 6])), (-1, ctx, torch.tensor([7, 8, 9])), (0, torch.randn(3, 64), torch.tensor([1, 2, 3]))]
    assert reference_block_outputs(loaded, feats, tokens, blocks).shape == (3, 3, 64)


def test_cli_converts_a_saved_checkpoint(tmp_path, tiny_target, tiny_meta, capsys):
    model = make_tiny_drafter(tiny_target, tiny_meta)
    torch.save(checkpoint_of(model), tmp_path / "ckpt.pt")
    np.save(tmp_path / "d2t.npy", np.arange(10, 20))
    argv = [str(tmp_path / "ckpt.pt"), "--target", tiny_target.path, "-o", str(tmp_path / "d.gguf"), "--outtype", "q8_0",
            "--block-size", "3", "--draft-vocab", str(tmp_path / "d2t.npy"), "--tree-parents=-1,0,1", "--no-progress"]
    assert main(argv) == 0
    assert f"wrote {tmp_path / 'd.gguf'}" in capsys.readouterr().out
    fields = fields_of(tmp_path / "d.gguf")
    assert (fields[gs.KEY_BLOCK_SIZE], fields[gs.KEY_DRAFT_VOCAB_SIZE], fields[gs.KEY_TREE_PARENTS]) == (3, 10, [-1, 0, 1])
    parser = argparse.ArgumentParser(prog="falcon-edge")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert"] + argv[:5] + ["--no-progress"])
    assert args.func(args) == 0 and fields_of(tmp_path / "d.gguf")[gs.KEY_DRAFT_VOCAB_SIZE] == 0
