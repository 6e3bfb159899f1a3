"""bench/window.py on SmolLM2 and its shipped drafter. This is not a speed test: nothing asserts a timing."""

from __future__ import annotations

import pytest
from helpers import bench_scripts

pytestmark = pytest.mark.model


def test_each_window_bounds_the_features_of_a_prompt(smollm_path):
    window = bench_scripts.load("window")
    report = window.measure(str(smollm_path), None, [0, 16], n_prompts=1, first=0, max_tokens=16, tree_budget=4,
                            n_threads=1)
    whole, windowed = report["windows"]["0"], report["windows"]["16"]
    assert set(whole) == set(windowed) == {"mt-bench", "humaneval", "gsm8k"}
    for name, row in whole.items():
        # the whole prompt; with the window, the tokens from the start of the 256-token prompt chunk holding the
        # window and the drafter's last block (k = 2) on: here every prompt is a single chunk
        assert row["n_prompt_features"] == row["n_prompt"] and 18 < min(row["n_prompt"]) and max(row["n_prompt"]) <= 256
        assert windowed[name]["n_prompt_features"] == row["n_prompt"], name
        assert windowed[name]["n_prompt"] == row["n_prompt"], name
        assert 1.0 <= row["tau"] <= 4 and 0.0 <= row["accepted_per_drafted"] <= 1.0, name
    table = window.format_table(report)
    assert "gsm8k tau" in table and len(table.splitlines()) == 4


def test_a_negative_window_is_refused(smollm_path):
    with pytest.raises(SystemExit, match="windows must be >= 0"):
        bench_scripts.load("window").measure(str(smollm_path), None, [64, -1], 1, 0, 8, 4, 1)
