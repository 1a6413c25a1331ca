"""Comparisons of a deployed model with its PyTorch reference (numpy only; no torch)."""
