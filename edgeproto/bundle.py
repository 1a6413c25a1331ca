"""The deployment bundle on disk: reading it and checking its integrity (no torch).

Layout: ``model.onnx``, ``manifest.json``, ``prototypes/*.png`` (source patches),
``explain/last_layer.npy`` (class weights, C×M), ``golden/*.npy`` (inputs and PyTorch reference
outputs). ``manifest.json`` lists the sha256 of every other file; :func:`open_bundle` rejects a
bundle whose files do not match.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproto.errors import EdgeprotoError
from edgeproto.ranking import prototype_classes

MANIFEST = "manifest.json"
FORMAT = "edgeproto-bundle"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest, keyed by POSIX relative path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


@dataclass(frozen=True)
class Bundle:
    """An opened bundle directory and its manifest."""

    root: Path
    manifest: dict

    def path(self, rel: str) -> Path:
        """Absolute path of a file named in the manifest."""
        return self.root / rel

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def prototypes(self) -> list[dict]:
        return self.manifest["prototypes"]

    def array(self, rel: str) -> np.ndarray:
        """A ``.npy`` file of the bundle (never unpickled)."""
        try:
            return np.load(self.path(rel), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise EdgeprotoError(f"bundle {self.root}: cannot read {rel}: {exc}") from None

    def golden(self) -> dict[str, np.ndarray]:
        """The golden inputs and PyTorch reference outputs."""
        return {k: self.array(v) for k, v in self.manifest["golden"]["files"].items()}

    def last_layer(self) -> np.ndarray:
        """Class weights (C,M): each prototype's weight in each class logit (shown beside the ranking)."""
        return self.array(self.manifest["explain"]["last_layer"])

    def prototype_classes(self) -> np.ndarray:
        """(M,) class of each prototype, −1 for merged / pruned ones: what the ranking needs
        (:func:`edgeproto.ranking.top_prototypes`)."""
        return prototype_classes(self.prototypes)


def verify_files(root: Path, manifest: dict) -> list[str]:
    """Problems found comparing the files with the manifest's sha256s (empty when intact)."""
    listed: dict[str, str] = manifest.get("files", {})
    problems = []
    for rel, digest in listed.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(p) != digest:
            problems.append(f"{rel}: sha256 mismatch (modified or corrupt)")
    for rel in file_hashes(root):
        if rel not in listed:
            problems.append(f"{rel}: not listed in the manifest")
    return problems


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle directory (or a ``.zip`` of one, extracted beside it) and check its files."""
    root = Path(path)
    if root.suffix == ".zip" and root.is_file():
        root = _extract(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise EdgeprotoError(f"{root} is not an edgeproto bundle ({MANIFEST} missing)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise EdgeprotoError(f"{manifest_path} is unreadable: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise EdgeprotoError(f"{manifest_path} is not an edgeproto bundle manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise EdgeprotoError(f"bundle format {manifest['format_version']} is newer than this edgeproto")
    if verify:
        problems = verify_files(root, manifest)
        if problems:
            raise EdgeprotoError(f"bundle {root} failed its integrity check: " + "; ".join(problems))
    return Bundle(root, manifest)


def _extract(zip_path: Path) -> Path:
    dest = zip_path.with_suffix("")
    if not (dest / MANIFEST).is_file():
        with zipfile.ZipFile(zip_path) as zf:
            for name in zf.namelist():  # refuse paths that would escape the destination
                if name.startswith("/") or ".." in Path(name).parts:
                    raise EdgeprotoError(f"{zip_path}: unsafe path {name!r} in the archive")
            zf.extractall(dest)
    return dest
