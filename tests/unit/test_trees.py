"""Tree presets: the paper's shipped shapes parse to the published sizes; malformed presets are refused."""

from __future__ import annotations

import json

import pytest

from falcon_edge import trees
from falcon_edge.config import SpecConfig


@pytest.mark.parametrize("name, n_nodes, depth", [("falcon-168", 165, 8), ("falcon-119", 117, 8), ("falcon-77", 75, 4)])
def test_shipped_presets_have_the_papers_sizes(name, n_nodes, depth):
    # falcon-method.md §5.2: 166 listed paths with one duplicate, 117 and 75 paths
    t = trees.load(name)
    assert (t.n_nodes, t.depth) == (n_nodes, depth)
    assert all(p < i for i, p in enumerate(t.parent))
    assert t.rank[:20] == tuple(range(20)) and t.parent[:20] == (-1,) * 20  # top-20 roots first
    assert 0 < t.n_leaves < t.n_nodes
    SpecConfig(preset_parent=t.parent, preset_rank=t.rank)


def test_from_paths_orders_parents_first_and_drops_duplicates():
    t = trees.from_paths([[0, 1], [1], [0], [0, 1], [0, 0, 2], [0, 0]])
    assert t.n_nodes == 5 and t.depth == 3 and t.n_leaves == 3
    assert t.parent == (-1, -1, 0, 0, 2) and t.rank == (0, 1, 0, 1, 2)


@pytest.mark.parametrize(
    "paths, match",
    [
        ([], "non-empty list"),
        ({"a": 1}, "non-empty list"),
        ([[0], [1, 2]], r"path \[1, 2\] has no parent path \[1\]"),
        ([[0], [-1]], "ranks in"),
        ([[0], [64]], "ranks in"),
        ([[0], "0"], "each path"),
        ([[0], [True]], "ranks in"),
        ([[0] * 33], "1 to 32 ranks"),
        ([[r] for r in range(64)] + [[0, r] for r in range(64)] + [[0, 0, r] for r in range(64)] + [[0, 0, 0, r] for r in range(64)],
         "at most 255 nodes"),
    ],
)
def test_malformed_paths_are_refused(paths, match):
    with pytest.raises(trees.TreeError, match=match):
        trees.from_paths(paths)


def test_files_and_names(tmp_path):
    with pytest.raises(trees.TreeError, match="shipped presets are falcon-119, falcon-168, falcon-77"):
        trees.load("no-such-tree")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(trees.TreeError, match="cannot read a tree preset"):
        trees.load(bad)
    bad.write_text(json.dumps([[0]]))
    with pytest.raises(trees.TreeError, match="JSON object with 'paths', got list"):
        trees.load(bad)
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"paths": [[0], [1], [0, 0]]}))
    assert trees.load(good).name == "mine" and trees.load(good).n_nodes == 3


def test_spec_config_checks_preset_lengths():
    with pytest.raises(ValueError, match="equal lengths, got 2 and 1"):
        SpecConfig(preset_parent=(-1, 0), preset_rank=(0,))
