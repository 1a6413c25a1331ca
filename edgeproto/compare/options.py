"""The options of ``validate`` and ``validate --sweep``: one object instead of a long keyword list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproto.compare.fidelity import DEFAULT_K
from edgeproto.environment import usable_cpus
from edgeproto.compare.localization import STABILITY_NOISE_STD
from edgeproto.errors import EdgeprotoError


MAX_BATCH = 4096


def check_threads(threads: int) -> None:
    """0 (the runtime's choice) up to the number of CPUs this process may use."""
    cpus = usable_cpus()
    if not isinstance(threads, bool) and isinstance(threads, (int, np.integer)) and threads > cpus:
        raise EdgeprotoError(f"--threads {threads} is more than the {cpus} usable CPU(s) of this machine")


@dataclass(frozen=True)
class ValidateOptions:
    """Which images, which limits, where, and how much to show.

    ``data``: a dataset config file or mapping (default: the bundle's); ``split``: ``test`` or
    ``train``; ``limit``: that many images, evenly spaced over the split; ``batch``: images per
    run; ``thresholds``: a file or mapping overriding the per-precision defaults; ``device`` and
    ``threads``: for the runtime (threads also for the PyTorch reference); ``checkpoint``: where the
    reference checkpoint is if not where the manifest says; ``k``: the top-k of fidelity;
    ``samples`` / ``worst``: example images in the report; ``noise_std`` / ``seed``: stability;
    ``pointing_tolerance``: pixels of slack for the pointing game (Zhang et al. use 15; default 0);
    sweep only: ``latency_queries`` timed batch-1 queries, ``calib`` int8 calibration images;
    ``data_root``: the image folder of the bundle's dataset when it moved (replaces ``root``).
    """

    data: str | Path | Mapping | None = None
    split: str = "test"
    limit: int | None = None
    batch: int = 32
    thresholds: str | Path | Mapping | None = None
    device: str | None = None
    threads: int = 0
    checkpoint: str | Path | None = None
    k: int = DEFAULT_K
    samples: int = 4
    worst: int = 4
    noise_std: float = STABILITY_NOISE_STD
    seed: int = 0
    pointing_tolerance: float = 0.0
    progress: bool = True
    latency_queries: int = 50
    calib: int = 64
    data_root: str | Path | None = None

    def check(self) -> None:
        """Refuse values that cannot be right, with one clear error."""
        for name in ("batch", "k", "latency_queries", "calib") + (("limit",) if self.limit is not None else ()):
            _whole(name, getattr(self, name), 1)
        for name in ("samples", "worst", "threads", "seed"):
            _whole(name, getattr(self, name), 0)
        if self.batch > MAX_BATCH:
            raise EdgeprotoError(f"batch must be at most {MAX_BATCH} images, got {self.batch}")
        check_threads(self.threads)
        if isinstance(self.noise_std, bool) or not isinstance(self.noise_std, (int, float)) or not self.noise_std >= 0:
            raise EdgeprotoError(f"noise_std must be a number ≥ 0, got {self.noise_std!r}")
        tol = self.pointing_tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
            raise EdgeprotoError(f"pointing_tolerance must be a number of pixels ≥ 0, got {tol!r}")


def _whole(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise EdgeprotoError(f"{name} must be a whole number of at least {least}, got {value!r}")
