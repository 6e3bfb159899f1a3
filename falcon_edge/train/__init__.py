"""Drafter training and its PyTorch reference model (needs the `train` extra: torch)."""
