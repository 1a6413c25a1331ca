"""The PyTorch reference as a runner (host only; imports torch when loaded)."""
