"""Measurement: single-stream latency, memory, Jetson boards (probe, tegrastats, SSH transport)."""
