"""bench/prefill.py on SmolLM2 and its shipped drafter. This is not a speed test: nothing asserts a timing."""

from __future__ import annotations

import statistics

import pytest
from helpers import bench_scripts

pytestmark = pytest.mark.model


def test_every_length_is_prefilled_alike_with_and_without_the_drafter(smollm_path):
    prefill = bench_scripts.load("prefill")
    # the script checks each run's drafter_joined against its mode: a fixed budget makes the drafter join every
    # speculative request, and plain requests never take it
    report = prefill.measure(str(smollm_path), None, [16, 48], repeats=2, n_threads=1)
    assert report["path_head"] is True and set(report["lengths"]) == {"16", "48"}
    for n, r in report["lengths"].items():
        assert len(r["prefill_s_plain"]) == len(r["prefill_s_spec"]) == 2, n
        assert all(t > 0 for t in r["prefill_s_plain"] + r["prefill_s_spec"]), n
        ratios = [s / p for p, s in zip(r["prefill_s_plain"], r["prefill_s_spec"])]
        assert r["median_ratio"] == pytest.approx(statistics.median(ratios)), n
        assert r["fastest_ratio"] == pytest.approx(min(r["prefill_s_spec"]) / min(r["prefill_s_plain"])), n
    # the drafter's own window (256) covers both prompts
    assert [r["n_prompt_features"] for r in report["lengths"].values()] == [16, 48]
    table = prefill.format_table(report)
    assert "median ratio" in table and len(table.splitlines()) == 4


def test_a_window_bounds_the_features_computed(smollm_path):
    # a 16-token window and the drafter's last block (k = 2) start at token 582 of 600: the tokens decoded with
    # features on are those of the prompt's 256-token chunk holding it, from 512 on; all 16 of a 16-token prompt
    report = bench_scripts.load("prefill").measure(str(smollm_path), None, [16, 600], repeats=1, n_threads=1, window=16)
    assert report["window"] == 16
    assert [r["n_prompt_features"] for r in report["lengths"].values()] == [16, 600 - 512]


def test_lengths_beyond_the_context_are_refused(smollm_path):
    with pytest.raises(SystemExit, match=r"prompt lengths must be in \[1, 4096\), got 16..5000"):
        bench_scripts.load("prefill").measure(str(smollm_path), None, [16, 5000], repeats=1, n_threads=1)
