"""Re-export of a GGUF target at another weight type through libllama's own quantizer.

The benchmarks compare one model's weights at several decode costs (peers-and-limits.md §2.4): a Q4_K_M
registry model written again as Q8_0 or F16 holds the same weights (no new information) and decodes at the
wider format's speed. ``llama_model_quantize`` with ``allow_requantize`` dequantizes every tensor and writes
it at the new type, exactly as the ``llama-quantize --allow-requantize`` tool does, without building it.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from pathlib import Path

import llama_cpp
from llama_cpp import _logger as llama_logger
from tqdm import tqdm

from falcon_edge.errors import ModelLoadError

# the weight types a re-export may take, by llama.cpp's own names (llama-quantize spells them the same)
FTYPES = {
    "F32": llama_cpp.LLAMA_FTYPE_ALL_F32,
    "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "BF16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
}


GGML_LOG_LEVEL_ERROR = 3
_TENSOR_LINE = re.compile(rb"^\[\s*(\d+)/\s*(\d+)\]")  # the quantizer's "[  12/ 339] name ..." per tensor


class _Progress:
    """libllama's log during a re-export: one bar step per tensor line, errors to stderr, the rest dropped."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.bar = tqdm(desc=desc, unit="tensor", disable=not enabled)
        self.callback = llama_cpp.llama_log_callback(self._log)  # kept alive while libllama may call it

    def _log(self, level: int, text: bytes, user_data) -> None:
        m = _TENSOR_LINE.match(text)
        if m:
            self.bar.total = int(m.group(2))
            self.bar.update(int(m.group(1)) - self.bar.n)
        elif level == GGML_LOG_LEVEL_ERROR:
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    def __enter__(self) -> "_Progress":
        llama_cpp.llama_log_set(self.callback, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc) -> None:
        llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
        self.bar.close()


def ftype_id(ftype: str) -> int:
    """libllama's ``llama_ftype`` value for a weight type name of :data:`FTYPES` (case-insensitive).

    Raises:
        ValueError: ``ftype`` is not a known type.
    """
    key = ftype.upper()
    if key not in FTYPES:
        raise ValueError(f"unknown weight type {ftype!r}: known types are {', '.join(FTYPES)}")
    return FTYPES[key]


def variant_path(src: os.PathLike[str] | str, ftype: str) -> Path:
    """Where the re-export of ``src`` at ``ftype`` lives: beside it, named after it.

    A registry file ``qwen2.5-coder-1.5b-instruct-q4_k_m.gguf`` gives ``qwen2.5-coder-1.5b-instruct-f16.gguf`` for
    ``F16``: the source's own type suffix, when it has one, is replaced.
    """
    src = Path(src)
    stem = src.stem
    for name in FTYPES:
        if stem.lower().endswith("-" + name.lower()):
            stem = stem[: -len(name) - 1]
            break
    return src.with_name(f"{stem}-{ftype.lower()}.gguf")


def requantize(src: os.PathLike[str] | str, dst: os.PathLike[str] | str, ftype: str, threads: int = 0,
               progress: bool = True) -> Path:
    """Writes ``src`` again at weight type ``ftype`` into ``dst`` and returns ``dst``.

    The file is written under a temporary name and renamed, so a file under its final name is always complete.

    Args:
        src: a GGUF model libllama loads.
        dst: the output file (overwritten).
        ftype: a key of :data:`FTYPES`, e.g. ``"Q8_0"`` (case-insensitive).
        threads: quantizer threads; 0 lets libllama use every core.
        progress: a tqdm bar over the tensors; libllama's own log is dropped except for its errors.

    Raises:
        ValueError: ``ftype`` is not a known type or ``threads`` is negative.
        ModelLoadError: ``src`` is missing or libllama could not convert it.
    """
    ftype_value = ftype_id(ftype)
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ModelLoadError(f"cannot re-export {src}: no such file")
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype_value
    params.allow_requantize = True
    partial = dst.with_name(f"{dst.name}.partial-{os.getpid()}")
    with _Progress(f"{src.name} -> {ftype.upper()}", progress):
        rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(partial), ctypes.byref(params))
    if rc != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ModelLoadError(f"libllama could not re-export {src} as {ftype.upper()}: llama_model_quantize returned {rc}")
    partial.replace(dst)
    return dst
