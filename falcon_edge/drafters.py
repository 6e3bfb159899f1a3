"""Drafters shipped with falcon-edge: the trained falcon-sar GGUFs in models/ (installed as falcon_edge/drafters).

Each registry target that has one is paired with it here. ``EdgeFalcon``'s default ``drafter="auto"`` and both
benchmark suites find it for a target file named after the registry target: the registry's own file or an export of
the same model in another type, e.g. ``qwen2.5-coder-1.5b-instruct-q8_0.gguf``.
"""

from __future__ import annotations

from pathlib import Path

from . import models

# registry target name -> shipped drafter file
SHIPPED = {
    "qwen2.5-coder-1.5b-instruct": "falcon-qwen2.5-coder-1.5b-instruct.gguf",
    "smollm2-135m-instruct": "falcon-smollm2-135m-instruct.gguf",
}


def drafters_dir() -> Path:
    """Where the shipped drafters are installed."""
    return Path(__file__).resolve().parent / "drafters"


def shipped_drafter(name: str) -> Path | None:
    """The shipped drafter of registry target ``name``, or None when it has none.

    Raises:
        UnknownModelError: ``name`` is not a registry name.
        FileNotFoundError: the drafter belongs to the package but is missing (a broken installation).
    """
    models.get_entry(name)  # raises UnknownModelError naming the known models
    if name not in SHIPPED:
        return None
    path = drafters_dir() / SHIPPED[name]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped drafter of {name} should be at {path} but is missing: reinstall falcon-edge")
    return path


def shipped_drafter_for_file(target: Path) -> Path | None:
    """The shipped drafter of the registry target whose name starts ``target``'s file name (case-insensitive), if any.

    The registry's own file and exports of the same model in another type (``<name>-f16.gguf``, ``<name>-q8_0.gguf``)
    match; the longest matching name wins.

    Raises:
        FileNotFoundError: the drafter belongs to the package but is missing (a broken installation).
    """
    file_name = target.name.lower()
    names = [name for name in SHIPPED if file_name.startswith(name.lower())]
    return shipped_drafter(max(names, key=len)) if names else None
