"""A seeded random falcon-sar drafter for a tiny target, and its checkpoint in FalconDrafter's format."""

from __future__ import annotations

import torch

from falcon_edge.train.model import DrafterConfig, FalconDrafter


def make_tiny_drafter(target, meta: dict, *, seed: int = 0, d2t=None, **overrides) -> FalconDrafter:
    """A random drafter shaped for a target, deterministic in its arguments.

    Args:
        target: a helpers.tiny_target.TinyTarget (its embed and lm_head are used).
        meta: read_target_meta(target.path).
        seed: torch seed of the weights.
        d2t: target ids of a reduced draft vocabulary (set draft_vocab_size accordingly).
        **overrides: DrafterConfig fields; defaults n_ff 96, n_layer 2, the rest from the target.

    Returns:
        the drafter in eval mode; every parameter (norms included) carries seeded noise.
    """
    generator = torch.Generator().manual_seed(seed)
    config = DrafterConfig.for_target(meta, **{"n_ff": 96, "n_layer": 2, **overrides})
    # the modules' own initialisation draws from the global generator: seed it too, without
    # disturbing the caller's stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FalconDrafter(config, target.embed, target.lm_head, d2t=d2t)
    with torch.no_grad():
        for p in model.parameters():
            # norms move away from 1 so a misplaced norm weight shows in the outputs
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval()


def checkpoint_of(model: FalconDrafter) -> dict:
    """The checkpoint training saves: {"config": DrafterConfig.to_dict(), "state_dict": model.state_dict()}."""
    return {"config": model.config.to_dict(), "state_dict": model.state_dict()}
