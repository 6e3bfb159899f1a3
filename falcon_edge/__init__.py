"""falcon-edge: Falcon semi-autoregressive speculative decoding on llama.cpp / GGUF.

>>> from falcon_edge import EdgeFalcon
>>> llm = EdgeFalcon("qwen2.5-coder-1.5b-instruct", drafter="ngram")
>>> llm.chat([{"role": "user", "content": "Write a haiku about speed."}])["choices"][0]["message"]["content"]
"""

import importlib.metadata as _metadata

# llama_cpp first: the extension then binds to the libllama it already loaded (one copy per process)
import llama_cpp as _llama_cpp

from . import _native  # noqa: E402


def _check_llama_cpp_version() -> None:
    required = next(
        (r.split("==", 1)[1].strip() for r in (_metadata.requires("falcon-edge") or []) if r.startswith("llama-cpp-python==")),
        None,
    )
    if required is not None and _llama_cpp.__version__ != required:
        raise ImportError(f"falcon-edge needs llama-cpp-python {required}, found {_llama_cpp.__version__}")


_check_llama_cpp_version()

from .engine import EdgeFalcon  # noqa: E402
from .errors import (  # noqa: E402
    ContextFullError,
    FalconEdgeError,
    GenerationAborted,
    IncompatibleDrafterError,
    ModelFetchError,
    ModelLoadError,
    UnknownModelError,
)
from .types import GenerationResult, SpecStats, StreamChunk  # noqa: E402

__version__ = _metadata.version("falcon-edge")

__all__ = [
    "ContextFullError",
    "EdgeFalcon",
    "FalconEdgeError",
    "GenerationAborted",
    "GenerationResult",
    "IncompatibleDrafterError",
    "ModelFetchError",
    "ModelLoadError",
    "SpecStats",
    "StreamChunk",
    "UnknownModelError",
    "__version__",
]
