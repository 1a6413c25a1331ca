"""Comparison of a deployed artifact with the PyTorch reference: validate, fidelity, localization, thresholds, report."""
