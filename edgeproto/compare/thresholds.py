"""Pass/fail thresholds for ``edgeproto validate``: defaults per precision, overrides from a file.

Every threshold names one figure of the validation report and whether it is a floor (``min``: the
figure must be ≥ the limit) or a ceiling (``max``: ≤ the limit). A limit of ``None`` (``null`` in a
file) switches the check off. A thresholds file (YAML or JSON) is a mapping of threshold names to
limits, applied to whatever precision is validated, optionally with per-precision sections that win
over the flat keys::

    top1_prototype_agreement: 0.98     # every precision
    int8:                              # only when validating int8 artifacts
      top1_prototype_agreement: 0.9
      scores_max_abs: null

Unknown names raise EdgeprotoError listing the allowed ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from edgeproto.errors import EdgeprotoError

# name -> (direction, what it measures); fractions are in [0, 1]
THRESHOLDS: dict[str, tuple[str, str]] = {
    "prediction_agreement": ("min", "fraction of images with the same predicted class"),
    "top1_prototype_agreement": ("min", "fraction of images with the same top-1 (class-weighted) prototype"),
    "topk_overlap": ("min", "mean |top-k ∩ top-k| / k of the two prototype rankings (predicted class first, by similarity)"),
    "kendall_tau": ("min", "mean Kendall τ of the prototype scores"),
    "map_pearson": ("min", "mean Pearson of the reference's top-k prototype maps"),
    "map_iou": ("min", "mean IoU of the ≥95th-percentile masks of the upsampled top-k maps"),
    "argmax_agreement": ("min", "fraction of top-k maps that peak in the same latent cell"),
    "logits_max_abs": ("max", "largest |target − reference| of the logits"),
    "scores_max_abs": ("max", "largest |target − reference| of the prototype scores"),
    "maps_max_abs": ("max", "largest |target − reference| of the similarity maps"),
    "accuracy_drop": ("max", "reference accuracy − target accuracy"),
    "pointing_game_drop": ("max", "reference pointing game − target pointing game (datasets with parts)"),
    "consistency_drop": ("max", "reference consistency − target consistency (datasets with parts)"),
    "stability_drop": ("max", "reference stability − target stability (datasets with parts)"),
}
FRACTIONS = {name for name, (d, _) in THRESHOLDS.items() if d == "min"}

_FP32 = {
    "prediction_agreement": 1.0,
    "top1_prototype_agreement": 1.0,
    "topk_overlap": 0.99,
    "kendall_tau": 0.99,
    "map_pearson": 0.999,
    "map_iou": 0.99,
    "argmax_agreement": 0.99,
    "logits_max_abs": 1e-4,
    "scores_max_abs": 1e-4,
    "maps_max_abs": 1e-4,
    "accuracy_drop": 0.0,
    "pointing_game_drop": 0.01,
    "consistency_drop": 0.0,
    "stability_drop": 0.01,
}
_HALF = {  # fp16 / bf16: the prototype math stays fp32 under the guard; the backbone is reduced
    "prediction_agreement": 0.99,
    "top1_prototype_agreement": 0.95,
    "topk_overlap": 0.9,
    "kendall_tau": 0.9,
    "map_pearson": 0.98,
    "map_iou": 0.8,
    "argmax_agreement": 0.85,
    "logits_max_abs": None,
    "scores_max_abs": None,
    "maps_max_abs": None,
    "accuracy_drop": 0.01,
    "pointing_game_drop": 0.03,
    "consistency_drop": 0.1,
    "stability_drop": 0.05,
}
_INT8 = {
    "prediction_agreement": 0.95,
    "top1_prototype_agreement": 0.85,
    "topk_overlap": 0.8,
    "kendall_tau": 0.8,
    "map_pearson": 0.9,
    "map_iou": 0.6,
    "argmax_agreement": 0.7,
    "logits_max_abs": None,
    "scores_max_abs": None,
    "maps_max_abs": None,
    "accuracy_drop": 0.03,
    "pointing_game_drop": 0.05,
    "consistency_drop": 0.2,
    "stability_drop": 0.1,
}
# auto (compile --precision auto): whatever the search chose, at most int8; its own search thresholds
# (manifest: compiled.<target>-auto.search.thresholds) are what it was chosen against
DEFAULTS: dict[str, dict[str, float | None]] = {"fp32": _FP32, "fp16": _HALF, "bf16": _HALF, "int8": _INT8,
                                               "auto": _INT8}


def default_thresholds(precision: str) -> dict[str, float | None]:
    """The built-in limits for ``precision`` (fp32, fp16, bf16, int8)."""
    if precision not in DEFAULTS:
        raise EdgeprotoError(f"unknown precision {precision!r}; known: {', '.join(DEFAULTS)}")
    return dict(DEFAULTS[precision])


def _allowed() -> str:
    return ", ".join(THRESHOLDS) + "; sections: " + ", ".join(DEFAULTS)


def _check_value(name: str, value, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EdgeprotoError(f"{where}: threshold {name!r} must be a number or null, got {value!r}")
    value = float(value)
    if name in FRACTIONS and not 0.0 <= value <= 1.0:
        raise EdgeprotoError(f"{where}: threshold {name!r} is a fraction and must lie in [0, 1], got {value}")
    if name not in FRACTIONS and value < 0 and not name.endswith("_drop"):
        raise EdgeprotoError(f"{where}: threshold {name!r} must be >= 0, got {value}")
    return value


def _check_mapping(raw: Mapping, where: str, allow_sections: bool) -> None:
    allowed = set(THRESHOLDS) | (set(DEFAULTS) if allow_sections else set())
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise EdgeprotoError(
            f"{where}: unknown threshold(s) {', '.join(repr(k) for k in unknown)}; allowed keys: "
            + (_allowed() if allow_sections else ", ".join(THRESHOLDS))
        )


def read_thresholds_file(path: str | Path) -> dict:
    """The raw mapping of a YAML/JSON thresholds file (checked: known names, numeric limits)."""
    from edgeproto.yaml_files import load_yaml

    path = Path(path)
    raw = load_yaml(path, "thresholds file")  # YAML is a superset of JSON
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise EdgeprotoError(f"thresholds file {path} must hold a mapping of threshold names to limits")
    return check_overrides(raw, str(path))


def check_overrides(raw: Mapping, where: str = "thresholds") -> dict:
    """Validate an override mapping (flat names and/or per-precision sections); returns a copy."""
    if not isinstance(raw, Mapping):
        raise EdgeprotoError(f"{where} must be a mapping of threshold names to limits")
    _check_mapping(raw, where, allow_sections=True)
    out: dict = {}
    for key, value in raw.items():
        if key in DEFAULTS:
            if not isinstance(value, Mapping):
                raise EdgeprotoError(f"{where}: section {key!r} must be a mapping of threshold names to limits")
            _check_mapping(value, f"{where} [{key}]", allow_sections=False)
            out[key] = {n: _check_value(n, v, f"{where} [{key}]") for n, v in value.items()}
        else:
            out[key] = _check_value(key, value, where)
    return out


def resolve_thresholds(precision: str, overrides: str | Path | Mapping | None = None) -> dict[str, float | None]:
    """Defaults for ``precision`` with ``overrides`` (a file path or a mapping) applied."""
    limits = default_thresholds(precision)
    if overrides is None:
        return limits
    raw = check_overrides(overrides) if isinstance(overrides, Mapping) else read_thresholds_file(overrides)
    limits.update({k: v for k, v in raw.items() if k in THRESHOLDS})
    limits.update(raw.get(precision, {}))
    return limits


def evaluate(limits: Mapping[str, float | None], figures: Mapping[str, float | None]) -> list[dict]:
    """One check per threshold: ``{name, direction, limit, value, status}``; status is ``pass``,
    ``fail``, ``off`` (no limit) or ``n/a`` (the figure does not exist here, e.g. no parts)."""
    checks = []
    for name, (direction, what) in THRESHOLDS.items():
        limit, value = limits.get(name), figures.get(name)
        if limit is None:
            status = "off"
        elif value is None:
            status = "n/a"
        elif isinstance(value, float) and math.isnan(value):
            status = "fail"
        else:
            ok = value >= limit if direction == "min" else value <= limit
            status = "pass" if ok else "fail"
        checks.append({"name": name, "direction": direction, "limit": limit, "value": value, "status": status,
                       "description": what})
    return checks
