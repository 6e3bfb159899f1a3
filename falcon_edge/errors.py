"""Exceptions raised by falcon_edge.

Every error falcon_edge raises on purpose derives from :class:`FalconEdgeError` (a ``RuntimeError``), so a caller,
or the ``falcon-edge`` command line, can catch one type. The engine's errors are defined by the native extension
and re-exported here, so C++ and Python raise the very same classes:

- :class:`ModelLoadError`: a model or drafter file cannot be loaded (missing, truncated, not GGUF, unknown arch).
- :class:`IncompatibleDrafterError`: the drafter was made for another target or is malformed.
- :class:`ContextFullError`: a prompt or tree does not fit in the context.
- :class:`GenerationAborted`: a generation was cancelled; the engine stays usable.

Python adds :class:`ModelFetchError` and :class:`UnknownModelError` (registry), and :class:`ToolsNotFoundError` and
:class:`ToolOutputError` (llama.cpp's own tools, run as benchmark peers). Bad arguments raise the built-in ``ValueError``
or ``TypeError``; :class:`UnknownModelError` is both a ``FalconEdgeError`` and a ``ValueError``,
:class:`ToolsNotFoundError` both a ``FalconEdgeError`` and a ``FileNotFoundError``.

Messages are lowercase, have no trailing period, and name the object and both offending values, for example
``prompt of 5000 tokens does not fit: n_ctx 4096``.
"""

from ._native import (
    ContextFullError,
    FalconEdgeError,
    GenerationAborted,
    IncompatibleDrafterError,
    ModelLoadError,
)


class ModelFetchError(FalconEdgeError):
    """A registry model could not be downloaded, assembled or verified; nothing was left in the cache."""


class UnknownModelError(FalconEdgeError, ValueError):
    """A name is neither a registry model nor an existing file; the message lists the known names."""


class ToolsNotFoundError(FalconEdgeError, FileNotFoundError):
    """The llama.cpp tools for the installed llama-cpp-python are not built (run bench/build_llama_tools.sh)."""


class ToolOutputError(FalconEdgeError):
    """A llama.cpp tool failed, ran past its time limit, or printed a report that cannot be parsed."""


__all__ = [
    "ContextFullError",
    "FalconEdgeError",
    "GenerationAborted",
    "IncompatibleDrafterError",
    "ModelFetchError",
    "ModelLoadError",
    "ToolOutputError",
    "ToolsNotFoundError",
    "UnknownModelError",
]
