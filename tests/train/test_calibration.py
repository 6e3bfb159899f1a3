"""Held-out acceptance counting per engine key: trials only under an accepted parent, successes at the target."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from falcon_edge import gguf_schema as gs
from falcon_edge.train.calibration import PRIOR_TRIALS, AcceptCounts, accept_keys

N_BINS = len(gs.ACCEPT_PROB_EDGES) + 1


def test_trials_follow_the_parent_and_successes_the_target():
    # one sequence, k = 2, two candidates per position: blocks (0, 1) and (2, 3), position 4 starts a third block
    probs = torch.tensor([[[0.8, 0.1], [0.4, 0.3], [0.6, 0.05], [0.9, 0.01], [0.25, 0.15]]])  # [1, 5, 2]
    hits = torch.tensor([[[True, False],    # depth 1, accepted: its block's depth 2 is tried
                          [False, True],    # depth 2 under an accepted parent: 2 trials, the 0.3 one succeeds
                          [False, False],   # depth 1, nothing accepted
                          [True, False],    # depth 2 under a rejected parent: no trial at all
                          [False, True]]])  # depth 1 again
    valid = torch.ones(1, 5, dtype=torch.bool)
    counts = AcceptCounts()
    counts.add(probs, hits, valid, k=2)
    trials, successes = np.zeros(gs.N_ACCEPT_KEYS), np.zeros(gs.N_ACCEPT_KEYS)
    for p, depth, ok in [(0.8, 1, 1), (0.1, 1, 0), (0.4, 2, 0), (0.3, 2, 1), (0.6, 1, 0), (0.05, 1, 0),
                         (0.25, 1, 0), (0.15, 1, 1)]:
        key = int(accept_keys(np.float32(p), depth))
        trials[key] += 1
        successes[key] += ok
    assert counts.trials.tolist() == trials.tolist() and counts.successes.tolist() == successes.tolist()


def test_invalid_positions_are_neither_tried_nor_parents():
    probs = torch.full((1, 4, 1), 0.9)  # [1, 4, 1]
    hits = torch.ones(1, 4, 1, dtype=torch.bool)
    valid = torch.tensor([[False, True, True, True]])  # no target at position 0: its depth-2 partner has no parent
    counts = AcceptCounts()
    counts.add(probs, hits, valid, k=2)
    assert counts.trials[accept_keys(np.float32(0.9), 1)] == 1  # position 2
    assert counts.trials[accept_keys(np.float32(0.9), 2)] == 1  # position 3 only
    assert counts.trials.sum() == 2


def test_rates_lean_on_the_bin_middle_until_trials_come():
    counts = AcceptCounts()
    rates = counts.rates()
    assert len(rates) == gs.N_ACCEPT_KEYS
    assert rates[:N_BINS] == pytest.approx([0.05, 0.15, 0.275, 0.425, 0.6, 0.85]) and rates[N_BINS:] == rates[:N_BINS]
    key = int(accept_keys(np.float32(0.95), 1))  # the top bin at depth 1: middle 0.85
    counts.trials[key], counts.successes[key] = 96.0, 24.0
    assert counts.rates()[key] == pytest.approx((24 + PRIOR_TRIALS * 0.85) / (96 + PRIOR_TRIALS))
