"""Re-export of a real (tiny, random) GGUF target through libllama's quantizer, by API and by CLI."""

from __future__ import annotations

import subprocess
import sys

import gguf
import numpy as np
import pytest

from falcon_edge import requantize
from falcon_edge.errors import ModelLoadError
from helpers.tiny_target import write_tiny_llama_gguf


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("requantize") / "tiny-f32.gguf", seed=11)


def _tensors(path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def test_variant_path_replaces_the_type_suffix(tmp_path):
    assert requantize.variant_path(tmp_path / "qwen-q4_k_m.gguf", "F16") == tmp_path / "qwen-f16.gguf"
    assert requantize.variant_path(tmp_path / "model.gguf", "q8_0") == tmp_path / "model-q8_0.gguf"


@pytest.mark.parametrize("ftype, ggml_type, tol", [("F16", gguf.GGMLQuantizationType.F16, 1e-3),
                                                   ("Q8_0", gguf.GGMLQuantizationType.Q8_0, 2e-2)])
def test_requantize_keeps_the_weights_at_the_new_type(target, tmp_path, ftype, ggml_type, tol):
    dst = requantize.requantize(target.path, tmp_path / f"out-{ftype}.gguf", ftype, threads=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [dst.name]  # no partial file left behind
    src_t, dst_t = _tensors(target.path), _tensors(dst)
    assert src_t.keys() == dst_t.keys()
    ffn = dst_t["blk.0.ffn_up.weight"]
    assert ffn.tensor_type == ggml_type
    before = gguf.dequantize(src_t["blk.0.ffn_up.weight"].data, src_t["blk.0.ffn_up.weight"].tensor_type)
    after = gguf.dequantize(ffn.data, ffn.tensor_type)
    assert after.shape == before.shape
    err = np.abs(after - before).max() / np.abs(before).max()
    assert 0 < err < tol  # rounded to the new type, not rewritten as something else
    # norms stay float32 whatever the type, as llama-quantize keeps them
    assert dst_t["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_requantize_names_bad_arguments(target, tmp_path):
    with pytest.raises(ValueError, match=r"unknown weight type 'Q3_X': known types are F32, F16"):
        requantize.requantize(target.path, tmp_path / "x.gguf", "Q3_X")
    with pytest.raises(ValueError, match="threads must be >= 0, got -2"):
        requantize.requantize(target.path, tmp_path / "x.gguf", "F16", threads=-2)
    with pytest.raises(ModelLoadError, match="cannot re-export .*missing.gguf: no such file"):
        requantize.requantize(tmp_path / "missing.gguf", tmp_path / "x.gguf", "F16")
    not_gguf = tmp_path / "junk.gguf"
    not_gguf.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="libllama could not re-export .*junk.gguf as F16"):
        requantize.requantize(not_gguf, tmp_path / "x.gguf", "F16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.gguf"]


def test_cli_export_writes_once_and_prints_the_path(target, tmp_path):
    out = tmp_path / "tiny-q8.gguf"
    cmd = [sys.executable, "-m", "falcon_edge.cli", "models", "export", target.path, "--type", "q8_0",
           "--out", str(out), "--threads", "1"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)
    assert first.stdout.strip() == str(out)
    n = len(_tensors(target.path))  # a progress bar over the tensors instead of libllama's log
    assert f"{n}/{n}" in first.stderr and "llama_model_loader" not in first.stderr
    mtime = out.stat().st_mtime_ns
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True)
    assert second.stdout.strip() == str(out) and out.stat().st_mtime_ns == mtime  # an existing export is kept
    bad = subprocess.run(cmd[:7] + ["Q3_X"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown weight type 'Q3_X'" in bad.stderr
