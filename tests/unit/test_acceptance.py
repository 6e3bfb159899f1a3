"""Calibrated acceptance rates (fe::acceptance_stats, through _native.AcceptanceStats).

A proposer values a node by rate(key): P(accepted | parent accepted) estimated from verified trees, a long memory
that can itself be the prior of the current request's own trials (the n-gram proposer's). Trees here are data: a
root and drafted nodes under given keys, with the accepted path given by its last node.
"""

from __future__ import annotations

import pytest

from falcon_edge import _native

DECAY = 0.995  # the n-gram proposer's memory ...
REQUEST_WEIGHT = 8.0  # ... and the request's own level


def _verify_one(stats: _native.AcceptanceStats, key: int, accepted: bool) -> None:
    """A tree of the root and one drafted node filed under `key`, accepted or not."""
    stats.observe([0, 1], [-1, 0], [-1, key], _native.ORIGIN_NGRAM, 1 if accepted else 0)


def _learn(stats: _native.AcceptanceStats, key: int, n: int, every_failed: int) -> None:
    """n verified trees of `key`, one in every_failed rejected."""
    for i in range(n):
        _verify_one(stats, key, i % every_failed != 0)


def test_an_unseen_key_reads_its_prior_optimistically():
    stats = _native.AcceptanceStats(2, DECAY, REQUEST_WEIGHT)
    # a prior of 4 trials at 0.5, read half a standard error up: 0.5 + 0.5 * sqrt(0.25 / 4)
    assert stats.rate(0, 0.5) == pytest.approx(0.625, abs=1e-6)
    _learn(stats, 0, 400, every_failed=10)
    assert stats.rate(0, 0.5) == pytest.approx(0.9, abs=0.03)
    assert stats.rate(1, 0.5) == pytest.approx(0.625, abs=1e-6)  # keys are learned apart


def test_the_mean_is_the_estimate_without_the_optimism():
    # what the drafter's ceiling reads: the prior itself for an unseen key, the learned rate for a well-tried one
    stats = _native.AcceptanceStats(2, DECAY, 0.0)
    assert stats.mean(0, 0.5) == pytest.approx(0.5, abs=1e-6)
    assert stats.rate(0, 0.5) == pytest.approx(0.625, abs=1e-6)
    _learn(stats, 0, 400, every_failed=5)
    assert stats.mean(0, 0.5) == pytest.approx(0.8, abs=0.01)
    assert 0 < stats.rate(0, 0.5) - stats.mean(0, 0.5) < 0.02


def test_only_nodes_whose_parent_was_accepted_are_trials():
    stats = _native.AcceptanceStats(2, DECAY, REQUEST_WEIGHT)
    for _ in range(50):
        # root -> a (key 0, rejected) -> b (key 1): b was never verified
        stats.observe([0, 1, 2], [-1, 0, 1], [-1, 0, 1], _native.ORIGIN_NGRAM, 0)
    assert stats.rate(0, 0.5) < 0.1
    assert stats.rate(1, 0.5) == pytest.approx(0.625, abs=1e-6)


def test_a_request_where_a_key_fails_halves_its_rate_within_a_few_trees():
    # a key accepted 90% of the time over many requests, then a request in which it keeps failing: after as many
    # rejections as the request weight (8) its rate is half the long-run one, where the long memory alone would
    # still read ~0.86 (8 failures among ~200 trees); the next request starts from the long memory again
    stats = _native.AcceptanceStats(1, DECAY, REQUEST_WEIGHT)
    _learn(stats, 0, 400, every_failed=10)
    stats.start_request()
    long_run = stats.rate(0, 0.8)
    assert long_run > 0.85
    for _ in range(8):
        _verify_one(stats, 0, False)
    assert stats.rate(0, 0.8) <= 0.5 * long_run
    stats.start_request()
    assert stats.rate(0, 0.8) > 0.75 * long_run


def test_trees_of_the_root_alone_age_what_was_learned():
    # a key that failed often enough to fall below what a verified node costs on a steep curve is never offered
    # again, so only the cycles that draft nothing can make it retried: each verified tree, one of the root alone
    # included, ages the long memory, and after ~400 of them the key is read near its optimistic prior again
    stats = _native.AcceptanceStats(1, DECAY, REQUEST_WEIGHT)
    for _ in range(6):
        _verify_one(stats, 0, False)
    stats.start_request()
    assert stats.rate(0, 0.8) < 0.6
    for _ in range(400):
        stats.observe([0], [-1], [-1], _native.ORIGIN_NGRAM, 0)
    stats.start_request()
    assert stats.rate(0, 0.8) > 0.75


def test_without_a_request_level_the_long_memory_alone_counts():
    # the drafter's statistics: a few rejections in a request barely move a rate learned over many trees
    stats = _native.AcceptanceStats(1, DECAY, 0.0)
    _learn(stats, 0, 400, every_failed=10)
    stats.start_request()
    long_run = stats.rate(0, 0.8)
    for _ in range(8):
        _verify_one(stats, 0, False)
    assert 0.9 * long_run < stats.rate(0, 0.8) < long_run


def test_bad_trees_are_refused_with_the_offending_values():
    stats = _native.AcceptanceStats(1, DECAY, REQUEST_WEIGHT)
    with pytest.raises(ValueError, match="parent of node 1 must be in \\[0, 1\\), got 3"):
        stats.observe([0, 1], [-1, 3], [-1, 0], _native.ORIGIN_NGRAM, 1)
    with pytest.raises(ValueError, match="one bucket per node, got 1 buckets for 2 nodes"):
        stats.observe([0, 1], [-1, 0], [0], _native.ORIGIN_NGRAM, 1)
    with pytest.raises(ValueError, match="a path ends at a node in \\[0, 2\\), got 5"):
        stats.observe([0, 1], [-1, 0], [-1, 0], _native.ORIGIN_NGRAM, 5)
