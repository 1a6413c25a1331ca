"""Checkpoints: ``model.safetensors`` + ``config.json`` + ``prototypes/*.png``, and resume state.

A checkpoint directory is complete when ``config.json`` exists: it is written last. Resume state
(``resume.pt``: tensors, numbers and strings only) is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from edgeproto import __version__, atomic_files
from edgeproto.errors import EdgeprotoError
from edgeproto.models import PrototypeNet, create_model

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
RESUME = "resume.pt"
FORMAT = "edgeproto-checkpoint"


def save_weights(out: Path, model: PrototypeNet) -> None:
    """Write the model's state dict as safetensors, atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_files.write_bytes(out / WEIGHTS, save(state))


def save_config(out: Path, config: dict) -> None:
    """Write ``config.json`` last: its presence marks a complete checkpoint."""
    config = {"format": FORMAT, "format_version": 1, "edgeproto_version": __version__, **config}
    atomic_files.write_text(out / CONFIG, json.dumps(config, indent=2))


def read_config(path: str | Path) -> dict:
    """The checkpoint's config, or a clear error when it is not a complete checkpoint."""
    path = Path(path)
    cfg_path = path / CONFIG
    if not path.is_dir():
        raise EdgeprotoError(f"checkpoint not found: {path} (expected a directory with {CONFIG})")
    if not cfg_path.is_file():
        raise EdgeprotoError(f"{path} is not a complete checkpoint: {CONFIG} is missing")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise EdgeprotoError(f"checkpoint config {cfg_path} is unreadable: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise EdgeprotoError(f"{cfg_path} is not an edgeproto checkpoint config")
    return config


def load_checkpoint(path: str | Path) -> tuple[PrototypeNet, dict]:
    """Rebuild the model from ``config.json`` and load its safetensors weights (eval mode)."""
    path = Path(path)
    config = read_config(path)
    try:
        spec = config["model"]
        if spec.get("backbone", {}).get("pretrained"):  # the weights are in the checkpoint: no ImageNet load
            spec = {**spec, "backbone": {**spec["backbone"], "pretrained": False}}
        model = create_model(spec)
    except KeyError as exc:
        raise EdgeprotoError(f"checkpoint {path}: model config lacks {exc}") from None
    try:
        state = load_file(str(path / WEIGHTS))
    except FileNotFoundError:
        raise EdgeprotoError(f"checkpoint {path}: {WEIGHTS} is missing") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise EdgeprotoError(f"checkpoint {path}: {WEIGHTS} is corrupt or truncated ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EdgeprotoError(
            f"checkpoint {path}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval(), config


def save_resume(out: Path, state: dict) -> None:
    """Atomically write the resume state (model/optimizer state dicts, stage, epoch, RNG)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_files.write_bytes(out / RESUME, buf.getvalue())


def load_resume(out: Path) -> dict | None:
    """The resume state if a killed run left one (tensors only, no pickled code)."""
    path = out / RESUME
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a torn or foreign file: say so rather than crash mid-resume
        raise EdgeprotoError(f"cannot resume from {path}: {exc}; delete it to start over") from None
