"""The ggml drafter runtime (fe::drafter) against the PyTorch reference, and its refusal of bad files.

Parity: a random-weight drafter is converted with convert.write_gguf.run, then read back as a reference
FalconDrafter holding exactly the file's (dequantized) weights (convert.read_gguf.load_drafter). Both run
one drafting phase over the same inputs: the context forward, again after one more pair (the last block
is re-evaluated as one span aligned to its end), again after many pairs, then a tree expansion in two
eval_blocks calls whose second-level blocks hang off blocks of the first call (docs/drafter-format.md).
Features and logits must agree within TOLERANCE[dtype] · max(1, max |reference|); worst relative
differences measured on x86-64 (AVX2, 2 threads) in brackets:

* f32: 1e-5 [feat 4.5e-7, logits 6.2e-7], float rounding only;
* f16: 5e-3 [3.5e-4, 4.7e-4], ggml rounds the activations to F16 inside mul_mat with F16 weights;
* q8_0: 5e-2 [1.3e-2, 2.0e-2], ggml quantizes the activations to Q8_0 (the reference multiplies
  by the dequantized weights);
* logits through a quantized target LM head (SmolLM2 Q4_1 [6.7e-3], Qwen Q6_K, whose gathered d2t rows
  the loader re-quantizes to Q8_0) get the q8_0 tolerance.

Bad files (another target, unknown fusion, missing tensor, truncated, absurd block size) must raise the
documented exception with a message naming the problem, never crash the process.
"""

from __future__ import annotations

import importlib
import struct
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch

from falcon_edge.convert.read_gguf import load_drafter
from falcon_edge.convert.write_gguf import run as write_drafter
from falcon_edge import gguf_schema as gs
from falcon_edge.train.model import DrafterConfig, FalconDrafter, reference_block_outputs, reference_context_outputs
from falcon_edge.train.target_weights import read_target_meta
from helpers.tiny_target import write_tiny_llama_gguf

TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "q8_0": 5e-2}
GGUF_TYPE_UINT32, GGUF_TYPE_STRING = 4, 8


@pytest.fixture(scope="module")
def native():
    """The extension module holding Drafter."""
    return importlib.import_module("falcon_edge._native")


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory) -> Path:
    return Path(write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", n_vocab=320, n_embd=64, seed=1).path)


# ---- building drafters ----------------------------------------------------------------------------


def make_drafter(target: Path, out: Path, *, outtype: str = "f32", seed: int = 0, draft_vocab=None, **overrides) -> Path:
    """A random drafter for target, converted to out: torch init, norms drawn from U(0.5, 1.5).

    The embedding and LM head given to FalconDrafter are stand-ins: only the drafter's own weights are saved.
    """
    config = DrafterConfig.for_target(read_target_meta(target), **overrides)
    stand_in = torch.zeros(1, config.n_embd).expand(config.target_n_vocab, config.n_embd)  # [V, H], no memory
    torch.manual_seed(seed)
    model = FalconDrafter(config, stand_in)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name:
                param.uniform_(0.5, 1.5)
    checkpoint = {"config": config.to_dict(), "state_dict": model.state_dict()}
    return write_drafter(checkpoint, target, out, outtype=outtype, draft_vocab=draft_vocab, progress=False)


def patched(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    """A copy of src with the single occurrence of old replaced by new (same length: offsets stay valid)."""
    data = src.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1, old
    dst.write_bytes(data.replace(old, new))
    return dst


def gguf_kv(key: str, gguf_type: int, payload: bytes) -> bytes:
    """The bytes of one GGUF key-value pair."""
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", gguf_type) + payload


def gguf_str(key: str, value: str) -> bytes:
    return gguf_kv(key, GGUF_TYPE_STRING, struct.pack("<Q", len(value)) + value.encode())


def gguf_u32(key: str, value: int) -> bytes:
    return gguf_kv(key, GGUF_TYPE_UINT32, struct.pack("<I", value))


# ---- one drafting phase, runtime and reference ------------------------------------------------------


def run_drafting_phase(dft, ref: FalconDrafter, sizes=(11, 12, 19), seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Runtime and reference features of each step; the committed context grows through `sizes`.

    Returns:
        step name -> (runtime features [rows, H], reference features [rows, H]); the logits are checked
        by the caller from the same rows (see check_phase).
    """
    k, n_embd, n_vocab = ref.config.block_size, ref.config.n_embd, ref.config.target_n_vocab
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((sizes[-1], n_embd)).astype(np.float32)  # [n, H]
    toks = rng.integers(0, n_vocab, sizes[-1]).astype(np.int32)  # [n]
    steps, spans, n_past = {}, [], 0
    for n in sizes:
        dft.push_pairs(feats[n_past:n], toks[n_past:n])
        spans.append((min(n_past, n - k), n) if spans else (0, n))
        steps[f"context {n}"] = (dft.eval_context(), reference_context_outputs(ref, feats[:n], toks[:n], spans).numpy())
        n_past = n
    ctx = steps[f"context {n_past}"][1]  # [k, H]

    # level 1: two children of the context's last block; level 2: three blocks below them
    tok1 = rng.integers(0, n_vocab, (2, k)).astype(np.int32)
    feat1 = np.stack([ctx, ctx])  # [2, k, H]
    blocks1 = [(-1, feat1[b], tok1[b]) for b in range(2)]
    want1 = reference_block_outputs(ref, feats, toks, blocks1, spans).numpy()  # [2, k, H]
    steps["tree level 1"] = (dft.eval_blocks([-1, -1], feat1, tok1), want1.reshape(-1, n_embd))
    parents2 = [0, 1, 0]
    tok2 = rng.integers(0, n_vocab, (3, k)).astype(np.int32)
    feat2 = np.ascontiguousarray(want1[[0, 1, 0]])  # [3, k, H]: each parent block's outputs
    blocks2 = blocks1 + [(parents2[b], feat2[b], tok2[b]) for b in range(3)]
    want2 = reference_block_outputs(ref, feats, toks, blocks2, spans).numpy()[2:]  # [3, k, H]
    steps["tree level 2"] = (dft.eval_blocks(parents2, feat2, tok2), want2.reshape(-1, n_embd))
    return steps


def max_diff(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """(max |got - want|, max(1, max |want|))."""
    assert got.shape == want.shape
    return float(np.abs(got.astype(np.float64) - want).max()), max(1.0, float(np.abs(want).max()))


def check_phase(steps, ref: FalconDrafter, tol_feat: float, tol_logits: float) -> dict[str, float]:
    """Asserts every step's features and logits within tolerance; returns the worst relative differences."""
    worst = {"feat": 0.0, "logits": 0.0}
    for name, ((got_feat, got_logits), want_feat) in steps.items():
        want_logits = ref.logits(torch.from_numpy(want_feat)).numpy()  # [rows, V']
        for what, got, want, tol in (("feat", got_feat, want_feat, tol_feat), ("logits", got_logits, want_logits, tol_logits)):
            diff, scale = max_diff(got, want)
            assert diff <= tol * scale, f"{name}: {what} differ by {diff:.3g} (scale {scale:.3g}, tolerance {tol})"
            worst[what] = max(worst[what], diff / scale)
    print(f"max |diff| / scale: feat {worst['feat']:.3g}, logits {worst['logits']:.3g}")
    return worst


# ---- parity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outtype", "fusion", "rope_mode", "block_size", "tied", "target_f16"),
    [
        ("f32", "lstm", 0, 3, False, False),
        ("f32", "linear", 2, 2, True, False),
        ("f16", "lstm", 2, 3, False, True),
        ("q8_0", "lstm", 0, 2, True, False),
        ("q8_0", "linear", 0, 3, False, True),
    ],
)
def test_tiny_target_parity(native, tmp_path, outtype, fusion, rope_mode, block_size, tied, target_f16):
    target = Path(write_tiny_llama_gguf(tmp_path / "t.gguf", n_vocab=320, n_embd=64, tied=tied, f16=target_f16, seed=2).path)
    path = make_drafter(target, tmp_path / "d.gguf", outtype=outtype, fusion=fusion, rope_mode=rope_mode,
                        block_size=block_size, n_layer=2, n_ff=96)
    ref = load_drafter(path, target)
    model = llama_cpp.Llama(str(target), vocab_only=True, verbose=False)
    dft = native.Drafter(str(path), str(target), model.model, n_threads=2)
    assert dft.hparams["fusion"] == fusion and dft.hparams["block_size"] == block_size
    tol = TOLERANCE[outtype]
    check_phase(run_drafting_phase(dft, ref), ref, tol, tol)


def test_span_reevaluation_is_exercised(native, tiny_target, tmp_path):
    """The re-evaluated span changes the outputs: the parity test would see a wrong span or mask."""
    path = make_drafter(tiny_target, tmp_path / "d.gguf", block_size=3, n_layer=2)  # layer 0's keys see no other position
    ref = load_drafter(path, tiny_target)
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((12, 64)).astype(np.float32)
    toks = rng.integers(0, 320, 12).astype(np.int32)
    incremental = reference_context_outputs(ref, feats, toks, [(0, 11), (9, 12)]).numpy()
    one_span = reference_context_outputs(ref, feats, toks).numpy()
    assert max_diff(one_span, incremental)[0] > 1e3 * TOLERANCE["f32"]

    dft = native.Drafter(str(path), str(tiny_target), n_threads=2)
    dft.push_pairs(feats[:11], toks[:11])
    dft.eval_context()
    dft.push_pairs(feats[11:], toks[11:])
    assert max_diff(dft.eval_context()[0], incremental)[0] <= TOLERANCE["f32"]


def test_chunked_context_and_truncate(native, tiny_target, tmp_path):
    """Long spans are cut into graphs of n_batch positions at block ends; truncate rewinds the cache."""
    path = make_drafter(tiny_target, tmp_path / "d.gguf", block_size=3, n_layer=2)
    ref = load_drafter(path, tiny_target)
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((40, 64)).astype(np.float32)
    toks = rng.integers(0, 320, 40).astype(np.int32)
    dft = native.Drafter(str(path), str(tiny_target), n_batch=7, n_threads=2)
    dft.push_pairs(feats[:12], toks[:12])
    dft.eval_context()
    dft.truncate(10)  # keep pairs 0 … 9, re-push 10, 11 and more: the span starts at 10
    assert dft.n_pairs == 10
    dft.push_pairs(feats[10:14], toks[10:14])
    want = reference_context_outputs(ref, feats[:14], toks[:14], [(0, 12), (10, 14)]).numpy()
    assert max_diff(dft.eval_context()[0], want)[0] <= TOLERANCE["f32"]

    dft.truncate(0)
    dft.push_pairs(feats, toks)
    want = reference_context_outputs(ref, feats, toks).numpy()
    feat, logits = dft.eval_context()
    assert max_diff(feat, want)[0] <= TOLERANCE["f32"]
    assert logits.shape == (3, 320)


@pytest.mark.model
@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_smollm2_shape_parity(native, smollm_path, tmp_path, outtype):
    """SmolLM2-135M's shape (H 576, 9/3 heads, tied Q4_1 embedding), LSTM fusion."""
    path = make_drafter(smollm_path, tmp_path / "d.gguf", outtype=outtype, n_layer=1)
    ref = load_drafter(path, smollm_path)
    model = llama_cpp.Llama(str(smollm_path), vocab_only=True, verbose=False)
    dft = native.Drafter(str(path), str(smollm_path), model.model, n_threads=2)
    check_phase(run_drafting_phase(dft, ref), ref, TOLERANCE[outtype], TOLERANCE["q8_0"])


@pytest.mark.parametrize("n_embd", [64, 48])
def test_reduced_vocab_of_an_f16_head_parity(native, tmp_path, n_embd):
    """An F16 head's draft rows are gathered as Q8_0 where a row fills its blocks of 32 (64) and stay F16 where it
    does not (48: writing Q8_0 rows there overran the tensor)."""
    target = Path(write_tiny_llama_gguf(tmp_path / "t.gguf", n_vocab=320, n_embd=n_embd, n_head=4, n_head_kv=2, f16=True,
                                        tied=False, seed=2).path)
    draft_vocab = np.random.default_rng(5).choice(320, 101, replace=False).astype(np.int32)
    path = make_drafter(target, tmp_path / "d.gguf", outtype="f32", n_layer=1, n_ff=96, draft_vocab=draft_vocab)
    ref = load_drafter(path, target)
    model = llama_cpp.Llama(str(target), vocab_only=True, verbose=False)
    dft = native.Drafter(str(path), str(target), model.model, n_threads=2)
    assert dft.hparams["n_vocab_draft"] == 101
    check_phase(run_drafting_phase(dft, ref), ref, TOLERANCE["q8_0"], TOLERANCE["q8_0"])


@pytest.mark.model
@pytest.mark.slow
def test_qwen15_shape_reduced_vocab_parity(native, qwen15_path, tmp_path):
    """Qwen2.5-1.5B's shape (H 1536, 12/2 heads, neox rope, Q6_K LM head), Q8_0 weights, 4096-token draft vocab."""
    draft_vocab = np.random.default_rng(5).choice(151_936, 4096, replace=False).astype(np.int32)
    path = make_drafter(qwen15_path, tmp_path / "d.gguf", outtype="q8_0", n_layer=1, n_ff=1024, draft_vocab=draft_vocab)
    ref = load_drafter(path, qwen15_path)
    dft = native.Drafter(str(path), str(qwen15_path), n_threads=2)
    assert dft.hparams["n_vocab_draft"] == 4096 and dft.hparams["rope_mode"] == 2
    assert [dft.draft_to_target(j) for j in (0, 4095)] == [draft_vocab[0], draft_vocab[4095]]
    check_phase(run_drafting_phase(dft, ref, sizes=(9, 10, 16)), ref, TOLERANCE["q8_0"], TOLERANCE["q8_0"])


def test_vocab_hash_matches_gguf_schema(native, tiny_target):
    model = llama_cpp.Llama(str(tiny_target), vocab_only=True, verbose=False)
    assert f"fnv1a64:{native.vocab_hash(model.model):016x}" == read_target_meta(tiny_target)["vocab_hash"]


# ---- bad inputs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_drafter(tiny_target, tmp_path_factory) -> Path:
    return make_drafter(tiny_target, tmp_path_factory.mktemp("dft") / "d.gguf", block_size=2)


@pytest.mark.parametrize("identity_from", ["model", "gguf"])
@pytest.mark.parametrize(("other", "match"), [({"n_vocab": 330}, "vocab"), ({"n_embd": 32, "n_head": 2, "n_head_kv": 1}, "n_embd")])
def test_drafter_for_another_target(native, tiny_drafter, tmp_path, identity_from, other, match):
    target = write_tiny_llama_gguf(tmp_path / "other.gguf", **other).path
    model = llama_cpp.Llama(target, vocab_only=True, verbose=False) if identity_from == "model" else None
    with pytest.raises(native.IncompatibleDrafterError, match=match):
        native.Drafter(str(tiny_drafter), target, model.model if model else 0)


def test_vocab_hash_mismatch(native, tiny_drafter, tiny_target, tmp_path):
    good = read_target_meta(tiny_target)["vocab_hash"]
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    path = patched(tiny_drafter, tmp_path / "d.gguf", gguf_str(gs.KEY_TARGET_VOCAB_HASH, good), gguf_str(gs.KEY_TARGET_VOCAB_HASH, bad))
    with pytest.raises(native.IncompatibleDrafterError, match="vocab hash"):
        native.Drafter(str(path), str(tiny_target))


def test_unknown_fusion(native, tiny_drafter, tiny_target, tmp_path):
    path = patched(tiny_drafter, tmp_path / "d.gguf", gguf_str(gs.KEY_FUSION, "lstm"), gguf_str(gs.KEY_FUSION, "gru_"))
    with pytest.raises(native.IncompatibleDrafterError, match="unknown fusion 'gru_'"):
        native.Drafter(str(path), str(tiny_target))


def test_missing_tensor(native, tiny_drafter, tiny_target, tmp_path):
    path = patched(tiny_drafter, tmp_path / "d.gguf", b"blk.0.ffn_up.weight", b"blk.0.ffn_uq.weight")
    with pytest.raises(native.IncompatibleDrafterError, match="no tensor blk.0.ffn_up.weight"):
        native.Drafter(str(path), str(tiny_target))


@pytest.mark.parametrize("block_size", [0, 100_000])
def test_absurd_block_size(native, tiny_drafter, tiny_target, tmp_path, block_size):
    path = patched(tiny_drafter, tmp_path / "d.gguf", gguf_u32(gs.KEY_BLOCK_SIZE, 2), gguf_u32(gs.KEY_BLOCK_SIZE, block_size))
    with pytest.raises(native.IncompatibleDrafterError, match=f"block_size = {block_size} is out of range"):
        native.Drafter(str(path), str(tiny_target))


@pytest.mark.parametrize(("keep", "match"), [(0.5, "truncated"), (0.001, "not a readable GGUF")])
def test_truncated_file(native, tiny_drafter, tiny_target, tmp_path, keep, match):
    data = tiny_drafter.read_bytes()
    path = tmp_path / "d.gguf"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(native.ModelLoadError, match=match):
        native.Drafter(str(path), str(tiny_target))


def test_not_a_drafter(native, tiny_drafter, tiny_target, tmp_path):
    with pytest.raises(native.IncompatibleDrafterError, match="not a falcon-sar drafter"):
        native.Drafter(str(tiny_target), str(tiny_target))
    with pytest.raises(native.ModelLoadError, match="cannot open"):
        native.Drafter(str(tmp_path / "absent.gguf"), str(tiny_target))


def test_bad_calls(native, tiny_drafter, tiny_target):
    dft = native.Drafter(str(tiny_drafter), str(tiny_target), n_ctx=8, n_scratch=4)
    feats = np.zeros((4, 64), np.float32)
    with pytest.raises(ValueError, match="eval_context needs at least one"):
        dft.eval_context()
    with pytest.raises(ValueError, match="token id 320 is out of range"):
        dft.push_pairs(feats[:1], np.array([320], np.int32))
    dft.push_pairs(feats, np.arange(4, dtype=np.int32))
    with pytest.raises(ValueError, match="eval_blocks needs eval_context"):
        dft.eval_blocks([-1], np.zeros((1, 2, 64), np.float32), np.zeros((1, 2), np.int32))
    dft.eval_context()
    with pytest.raises(ValueError, match="parent 0"):
        dft.eval_blocks([0], np.zeros((1, 2, 64), np.float32), np.zeros((1, 2), np.int32))
    with pytest.raises(native.ContextFullError, match="n_scratch is 4"):
        dft.eval_blocks([-1, -1, -1], np.zeros((3, 2, 64), np.float32), np.zeros((3, 2), np.int32))
    with pytest.raises(native.ContextFullError, match="n_ctx 8"):
        dft.push_pairs(np.zeros((5, 64), np.float32), np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="n_scratch 1 is smaller than the drafter's block size 2"):
        native.Drafter(str(tiny_drafter), str(tiny_target), n_scratch=1)


def test_catch_up_leaves_the_kv_of_one_context_pass(native, tiny_target, tmp_path):
    """catch_up evaluates a backlog but for its last block (in chunks of n_batch); the context pass after it gives the
    outputs of one pass over everything, so moving the backlog out of the timed drafting changes no draft."""
    path = make_drafter(tiny_target, tmp_path / "d.gguf", block_size=3, n_layer=2)
    ref = load_drafter(path, tiny_target)
    rng = np.random.default_rng(5)
    feats = rng.standard_normal((40, 64)).astype(np.float32)
    toks = rng.integers(0, 320, 40).astype(np.int32)
    outs = []
    for catch_up in (False, True):
        dft = native.Drafter(str(path), str(tiny_target), n_batch=7, n_threads=2)
        dft.push_pairs(feats[:2], toks[:2])
        if catch_up:
            dft.catch_up()  # fewer pairs than a block: nothing to do
        dft.push_pairs(feats[2:12], toks[2:12])
        dft.eval_context()
        dft.push_pairs(feats[12:], toks[12:])
        if catch_up:
            dft.catch_up()
            with pytest.raises(ValueError, match="eval_context"):  # the phase ended: no tree blocks before a context pass
                dft.eval_blocks([-1], np.zeros((1, 3, 64), np.float32), np.zeros((1, 3), np.int32))
        outs.append(dft.eval_context())
    want = reference_context_outputs(ref, feats, toks, [(0, 12), (12, 40)]).numpy()
    for feat, _ in outs:
        assert max_diff(feat, want)[0] <= TOLERANCE["f32"]
    assert max_diff(outs[1][1], outs[0][1])[0] <= TOLERANCE["f32"]


def _window_case(native, tiny_target, tmp_path, seed: int, n: int):
    """A k = 3 drafter, its generator, n random pairs (feats [n, 64], toks [n]) and alone(lo, hi): a drafter without a
    window given the pairs [lo, hi) only."""
    path = make_drafter(tiny_target, tmp_path / "d.gguf", block_size=3, n_layer=2)
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, 64)).astype(np.float32)
    toks = rng.integers(0, 320, n).astype(np.int32)

    def alone(lo: int, hi: int):
        dft = native.Drafter(str(path), str(tiny_target), n_batch=7, n_threads=2, n_window=0)
        dft.push_pairs(feats[lo:hi], toks[lo:hi])
        return dft

    return path, rng, feats, toks, alone


def _same_outputs(got, want):
    """Two (feat, logits) results equal up to float32 rounding."""
    for g, w in zip(got, want, strict=True):
        assert max_diff(g, w)[0] <= 10 * TOLERANCE["f32"] * max_diff(g, w)[1]


def test_a_backlog_beyond_the_window_is_left_out_of_the_context(native, tiny_target, tmp_path):
    """A backlog of more than n_window pairs keeps the last n_window of it (whole blocks) and its last block: the
    outputs are those of a drafter given those pairs alone (RoPE sees relative positions only), for the context pass,
    tree blocks and pairs pushed later, and they differ from the whole context's; truncating into the pairs left out
    evaluates the kept ones anew, windowed again."""
    path, rng, feats, toks, alone = _window_case(native, tiny_target, tmp_path, seed=6, n=50)
    # 40 pairs, block 3: the backlog before the last block ends at 37, the window of 10 is 9 pairs: 28 .. 39 stay
    windowed = native.Drafter(str(path), str(tiny_target), n_batch=7, n_threads=2, n_window=10)
    windowed.push_pairs(feats[:40], toks[:40])
    windowed.catch_up()
    reference = alone(28, 40)
    _same_outputs(windowed.eval_context(), reference.eval_context())
    block = (np.array([-1]), rng.standard_normal((1, 3, 64)).astype(np.float32), toks[40:43].reshape(1, 3).copy())
    _same_outputs(windowed.eval_blocks(*block), reference.eval_blocks(*block))
    for dft in (windowed, reference):
        dft.push_pairs(feats[40:46], toks[40:46])
    _same_outputs(windowed.eval_context(), reference.eval_context())
    whole = alone(0, 46)
    assert max_diff(whole.eval_context()[0], reference.eval_context()[0])[0] > 1e3 * TOLERANCE["f32"]

    windowed.truncate(20)  # into the pairs left out: 0 .. 19 are evaluated anew, and 8 .. 19 kept
    _same_outputs(windowed.eval_context(), alone(8, 20).eval_context())


def test_pairs_pushed_without_features_are_never_read(native, tiny_target, tmp_path):
    """Pairs pushed without features (the target computed none: they lie before the window) stay out of the context,
    whether or not a window applies: the outputs are those of a drafter given the later pairs alone, also after a
    truncation into them, and the unread pairs count as pairs (positions) all the same."""
    path, _, feats, toks, alone = _window_case(native, tiny_target, tmp_path, seed=7, n=40)
    for n_window in (0, 30):
        dft = native.Drafter(str(path), str(tiny_target), n_batch=7, n_threads=2, n_window=n_window)
        dft.push_unread(toks[:20])
        dft.push_pairs(feats[20:32], toks[20:32])
        assert dft.n_pairs == 32
        _same_outputs(dft.eval_context(), alone(20, 32).eval_context())
        dft.truncate(10)  # into the unread pairs: the ones kept are unread as well
        dft.push_pairs(feats[10:25], toks[10:25])
        _same_outputs(dft.eval_context(), alone(10, 25).eval_context())
    with pytest.raises(ValueError, match="token id 999"):
        dft.push_unread(np.array([999], np.int32))


def test_the_window_must_not_be_negative(native, tiny_drafter, tiny_target):
    with pytest.raises(ValueError, match="n_window -1"):
        native.Drafter(str(tiny_drafter), str(tiny_target), n_window=-1)
