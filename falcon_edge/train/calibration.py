"""Held-out calibration of a drafter: P(a drafted node is accepted | its parent is) per acceptance key.

The engine values a drafted node by the acceptance rate of its key (gguf_schema: drafter probability bin x depth 1
or 2+), learned online from what verification accepts. A fresh engine has seen nothing, so it starts from a prior;
a drafter file that carries the rates measured here (``falcon-sar.acceptance.rates``) gives it the drafter's real
calibration instead of its raw probability, which overrates an overconfident drafter in the first trees.

Trials are counted as the engine counts them, with teacher-forced context (csgd.evaluate): position ≡ j (mod k)
drafts depth j + 1 below the last committed token, CANDIDATES tokens per position. A drafted token is a trial when
its parent was accepted, i.e. when the target's token at every shallower depth of the block is among that depth's
candidates (within a k-block the candidates of a depth do not depend on the token above), and a success when it is
the target's greedy token. Depths beyond the first block come from further passes and share the depth-2 key.
"""

from __future__ import annotations

import numpy as np
import torch

from falcon_edge import gguf_schema as gs

CANDIDATES = 4  # drafted tokens per position: the engine's default top_k_draft
PRIOR_TRIALS = 4.0  # a key with few held-out trials leans on its bin's middle probability

_EDGES = np.asarray(gs.ACCEPT_PROB_EDGES, dtype=np.float32)
_N_BINS = len(_EDGES) + 1
_BOUNDS = np.concatenate([[0.0], _EDGES, [1.0]])
_BIN_MIDDLE = (_BOUNDS[:-1] + _BOUNDS[1:]) / 2  # [N_BINS]


def accept_keys(probs: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Acceptance keys of drafted tokens, binned in float32 as the engine bins them.

    Args:
        probs: drafter probabilities, any shape.
        depth: depths >= 1 below the root, broadcastable to ``probs``.

    Returns:
        int64 keys in [0, N_ACCEPT_KEYS), the shape of ``probs``.
    """
    prob_bin = np.searchsorted(_EDGES, np.asarray(probs, dtype=np.float32), side="right")
    return (np.minimum(np.asarray(depth), gs.ACCEPT_DEPTH_KEYS) - 1) * _N_BINS + prob_bin


class AcceptCounts:
    """Trials and successes per acceptance key, accumulated over held-out batches."""

    def __init__(self) -> None:
        self.trials = np.zeros(gs.N_ACCEPT_KEYS)  # [N_ACCEPT_KEYS]
        self.successes = np.zeros(gs.N_ACCEPT_KEYS)  # [N_ACCEPT_KEYS]

    def add(self, probs: torch.Tensor, hits: torch.Tensor, valid: torch.Tensor, k: int) -> None:
        """Counts one batch.

        Args:
            probs: [B, T, C] drafter probabilities of the C candidates drafted at each position.
            hits: [B, T, C] bool, the candidate is the target's greedy token.
            valid: [B, T] bool, positions with a target token to compare against.
            k: block size; position t drafts depth t % k + 1.
        """
        t = valid.shape[1]
        covered = hits.any(-1) & valid  # [B, T] some candidate was accepted
        parent_ok = torch.ones_like(valid)
        for j in range(1, k):
            at = torch.arange(j, t, k, device=valid.device)
            parent_ok[:, at] = parent_ok[:, at - 1] & covered[:, at - 1]
        trial = valid & parent_ok  # [B, T]
        depth = (torch.arange(t, device=valid.device) % k + 1).expand_as(valid)[trial]  # [n]
        keys = accept_keys(probs[trial].float().cpu().numpy(), depth.cpu().numpy()[:, None])  # [n, C]
        np.add.at(self.trials, keys.ravel(), 1.0)
        np.add.at(self.successes, keys.ravel(), hits[trial].cpu().numpy().ravel().astype(np.float64))

    def rates(self) -> list[float]:
        """P(accepted | parent accepted) per key, each pulled toward its bin's middle by PRIOR_TRIALS trials."""
        prior = np.tile(_BIN_MIDDLE, gs.ACCEPT_DEPTH_KEYS)
        return ((self.successes + PRIOR_TRIALS * prior) / (self.trials + PRIOR_TRIALS)).astype(np.float32).tolist()
