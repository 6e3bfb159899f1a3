"""Fixed decoding-tree shapes (presets), as data.

A preset is a JSON file: ``{"name", "description", "block_size", "source", "paths"}`` where ``paths`` lists tree
nodes as candidate-rank paths, Medusa/EAGLE/Falcon style: ``[a, b, c]`` is the candidate of rank ``a`` at drafted
depth 1, then rank ``b`` at depth 2 below it, then rank ``c``. Every proper prefix of a path must be a path too.

The presets shipped in ``falcon_edge/trees/`` are the Falcon paper's trees (its released ``models/choices.py``):
``falcon-168`` (its default: depth 8, 165 distinct drafted nodes; 168 verified tokens there, where 2 root tokens
and one duplicate path are counted), ``falcon-119`` and ``falcon-77``. falcon-edge's default is not a preset but the
dynamic tree sized from the measured verify cost (cost-model.h); presets exist to compare against the paper.

In the engine a preset becomes two arrays (``SpecConfig.preset_parent``, ``preset_rank``): node i is the candidate
of rank ``preset_rank[i]`` below node ``preset_parent[i]`` (-1: below the root).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

MAX_RANK = 64  # candidates ranked per drafted position at most
MAX_NODES = 255  # drafted nodes at most (one verification batch of 256 with the root)
MAX_DEPTH = 32


class TreeError(ValueError):
    """A tree preset that cannot be used (unknown name, unreadable file, malformed paths)."""


@dataclass(frozen=True)
class TreePreset:
    """A parsed preset: node i is the candidate of rank ``rank[i]`` below node ``parent[i]`` (-1: the root)."""

    name: str
    parent: tuple[int, ...]
    rank: tuple[int, ...]
    depth: int
    n_leaves: int

    @property
    def n_nodes(self) -> int:
        """Drafted nodes (the root not counted)."""
        return len(self.rank)


def presets_dir() -> Path:
    """Where the shipped presets are installed."""
    return Path(__file__).resolve().parent / "trees"


def names() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in presets_dir().glob("*.json"))


def load(name_or_path: str | os.PathLike[str]) -> TreePreset:
    """A shipped preset by name, or a preset JSON file by path.

    Raises:
        TreeError: unknown name, unreadable or malformed file (the message names the file and the offending value).
    """
    path = Path(name_or_path)
    if not path.is_file():
        shipped = presets_dir() / f"{name_or_path}.json"
        if not shipped.is_file():
            raise TreeError(f"no tree preset file or name {str(name_or_path)!r}; shipped presets are {', '.join(names())}")
        path = shipped
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TreeError(f"{path}: cannot read a tree preset: {e}") from None
    if not isinstance(doc, dict) or "paths" not in doc:
        raise TreeError(f"{path}: a tree preset is a JSON object with 'paths', got {type(doc).__name__}")
    return from_paths(doc["paths"], name=str(doc.get("name", path.stem)), where=str(path))


def from_paths(paths, *, name: str = "custom", where: str = "tree") -> TreePreset:
    """A preset from rank paths (duplicates are dropped; parents get lower indices than their children).

    Raises:
        TreeError: paths that are not lists of ranks in [0, MAX_RANK), deeper than MAX_DEPTH, more than MAX_NODES,
            or whose prefixes are missing.
    """
    if not isinstance(paths, list) or not paths:
        raise TreeError(f"{where}: 'paths' must be a non-empty list, got {type(paths).__name__} {str(paths)[:40]}")
    unique: dict[tuple[int, ...], None] = {}
    for p in paths:
        if (not isinstance(p, list) or not 1 <= len(p) <= MAX_DEPTH
                or not all(type(r) is int and 0 <= r < MAX_RANK for r in p)):
            raise TreeError(f"{where}: each path must be a list of 1 to {MAX_DEPTH} ranks in [0, {MAX_RANK}), got {str(p)[:60]}")
        unique[tuple(p)] = None
    if len(unique) > MAX_NODES:
        raise TreeError(f"{where}: a preset may have at most {MAX_NODES} nodes, got {len(unique)}")
    ordered = sorted(unique, key=lambda p: (len(p), p))
    index = {p: i for i, p in enumerate(ordered)}
    for p in ordered:
        if len(p) > 1 and p[:-1] not in index:
            raise TreeError(f"{where}: path {list(p)} has no parent path {list(p[:-1])}")
    parent = tuple(index[p[:-1]] if len(p) > 1 else -1 for p in ordered)
    has_child = set(parent)
    return TreePreset(name=name, parent=parent, rank=tuple(p[-1] for p in ordered),
                      depth=max(len(p) for p in ordered), n_leaves=sum(i not in has_child for i in range(len(ordered))))
