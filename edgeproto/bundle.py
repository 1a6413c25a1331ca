"""The deployment bundle on disk: reading it and checking its integrity (no torch).

Layout: ``model.onnx``, ``manifest.json``, ``prototypes/*.png`` (source patches),
``explain/last_layer.npy`` (class weights, C×M), ``golden/*.npy`` (inputs and PyTorch reference
outputs). ``manifest.json`` lists the sha256 of every other file; :func:`open_bundle` rejects a
bundle whose files do not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproto.errors import EdgeprotoError
from edgeproto.ranking import prototype_classes

MANIFEST = "manifest.json"
FORMAT = "edgeproto-bundle"
FORMAT_VERSION = 1

# Bounds on a zipped bundle, checked from its central directory before anything is extracted.
MAX_BUNDLE_BYTES = int(os.environ.get("EDGEPROTO_MAX_BUNDLE_BYTES", 4 << 30))  # all files, uncompressed
MAX_MANIFEST_BYTES = 64 << 20
MAX_ZIP_ENTRIES = 100_000
MAX_COMPRESSION_RATIO = 200  # a member larger than 1 MiB may be at most this many times its compressed size

# Keys every manifest must carry, and the keys each of them needs (checked once, in open_bundle).
REQUIRED = {
    "model": ("file",),
    "preprocess": ("image_size", "mean", "std"),
    "classes": (),
    "prototypes": (),
    "explain": ("last_layer",),
    "golden": ("files",),
    "files": (),
}


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


def check_manifest(manifest: dict, where: str | Path) -> None:
    """Every key the commands read is present with the right kind of value; else one clear error."""
    for key, subkeys in REQUIRED.items():
        if key not in manifest:
            raise EdgeprotoError(f"{where}: manifest has no {key!r} entry (corrupt, hand-edited or too old)")
        value = manifest[key]
        kind = list if key in ("classes", "prototypes") else dict
        if not isinstance(value, kind):
            raise EdgeprotoError(f"{where}: manifest entry {key!r} must be a {'list' if kind is list else 'mapping'}")
        for sub in subkeys:
            if sub not in value:
                raise EdgeprotoError(f"{where}: manifest entry {key!r} has no {sub!r}")
    if not manifest["classes"]:
        raise EdgeprotoError(f"{where}: manifest lists no classes")
    pre = manifest["preprocess"]
    size = pre["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 8192:
        raise EdgeprotoError(f"{where}: manifest preprocess.image_size must be an integer in 1..8192, got {size!r}")
    for stat in ("mean", "std"):
        v = pre[stat]
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                          for x in v)):
            raise EdgeprotoError(f"{where}: manifest preprocess.{stat} must be 3 numbers")
    if not isinstance(manifest["golden"]["files"], dict) or "image" not in manifest["golden"]["files"]:
        raise EdgeprotoError(f"{where}: manifest golden.files must name the golden 'image' and outputs")


def open_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle directory (or a ``.zip`` of one, extracted to a cache keyed by its sha256) and check it."""
    root = Path(path)
    checked = False  # a fresh extraction hashed every member against the manifest already
    if root.suffix == ".zip" and root.is_file():
        root, checked = _extract(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise EdgeprotoError(f"{root} is not an edgeproto bundle ({MANIFEST} missing)")
    manifest = _read_manifest(manifest_path.read_bytes() if manifest_path.stat().st_size <= MAX_MANIFEST_BYTES
                              else None, manifest_path)
    if verify and not checked:
        problems = verify_files(root, manifest)
        if problems:
            raise EdgeprotoError(f"bundle {root} failed its integrity check: " + "; ".join(problems))
    return Bundle(root, manifest)


def _read_manifest(data: bytes | None, where) -> dict:
    if data is None:
        raise EdgeprotoError(f"{where} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a bundle manifest")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EdgeprotoError(f"{where} is unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EdgeprotoError(f"{where} is not an edgeproto bundle manifest")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise EdgeprotoError(f"bundle format {version!r} is newer than this edgeproto")
    check_manifest(manifest, where)
    return manifest


def cache_dir() -> Path:
    """Where zipped bundles are extracted: ``$EDGEPROTO_CACHE`` or ``$XDG_CACHE_HOME/edgeproto`` (~/.cache)."""
    env = os.environ.get("EDGEPROTO_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "edgeproto"


def _extract(zip_path: Path) -> tuple[Path, bool]:
    """Extract ``zip_path`` to ``<cache>/bundles/<sha256 of the zip>``: a replaced zip gets a new folder.
    Returns the folder and whether this call extracted (and so hash-checked) it.

    Sizes come from the central directory and are checked against the manifest and the caps before a
    byte is extracted; every member is hashed while it is written and compared with the manifest;
    the folder appears (by rename) only when complete, and nothing is left after a failure.
    """
    digest = sha256_file(zip_path)
    dest = cache_dir() / "bundles" / digest
    if (dest / MANIFEST).is_file():
        return dest, False
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise EdgeprotoError(f"{zip_path} is not a readable zip archive ({exc}); re-export or re-copy it") from None
    with zf:
        infos, listed = _check_members(zf, zip_path)
        made = [d for d in (dest.parent.parent, dest.parent) if not d.exists()]
        ok = False
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}.", suffix=".tmp", dir=dest.parent))
        except OSError as exc:
            raise EdgeprotoError(f"cannot extract {zip_path} to {dest.parent}: {exc.strerror or exc}") from None
        try:
            for info in infos:
                _extract_member(zf, info, stage, zip_path, listed)
            try:
                os.replace(stage, dest)
            except OSError:
                if not (dest / MANIFEST).is_file():  # another process won the race: use its copy
                    raise
            ok = True
        except OSError as exc:
            raise EdgeprotoError(f"cannot extract {zip_path}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            if not ok:  # leave no cache folders behind that this failed open created
                for d in reversed(made):
                    with contextlib.suppress(OSError):
                        d.rmdir()
    return dest, True


def _check_members(zf: zipfile.ZipFile, zip_path: Path) -> tuple[list[zipfile.ZipInfo], dict]:
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > MAX_ZIP_ENTRIES:
        raise EdgeprotoError(f"{zip_path}: {len(infos)} entries is more than a bundle holds")
    total = 0
    for info in infos:
        name = info.filename
        if name.startswith("/") or "\\" in name or ".." in Path(name).parts or ":" in name:
            raise EdgeprotoError(f"{zip_path}: unsafe path {name!r} in the archive")
        total += info.file_size
        if info.file_size > (1 << 20) and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise EdgeprotoError(
                f"{zip_path}: {name} expands {info.compress_size} → {info.file_size} bytes "
                f"(ratio > {MAX_COMPRESSION_RATIO}); refusing a possible zip bomb")
    if total > MAX_BUNDLE_BYTES:
        raise EdgeprotoError(f"{zip_path}: {total} bytes uncompressed is more than the "
                             f"{MAX_BUNDLE_BYTES} allowed (EDGEPROTO_MAX_BUNDLE_BYTES)")
    names = {i.filename for i in infos}
    if MANIFEST not in names:
        raise EdgeprotoError(f"{zip_path} is not an edgeproto bundle ({MANIFEST} missing from the archive)")
    info = zf.getinfo(MANIFEST)
    data = None
    if info.file_size <= MAX_MANIFEST_BYTES:
        try:
            data = zf.read(MANIFEST)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise EdgeprotoError(f"{zip_path}: cannot read {MANIFEST} ({exc})") from None
    manifest = _read_manifest(data, f"{zip_path}:{MANIFEST}")
    listed = manifest.get("files", {})
    extra = sorted(names - set(listed) - {MANIFEST})
    if extra:
        raise EdgeprotoError(f"{zip_path} failed its integrity check: {extra[0]}: not listed in the manifest"
                             + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    missing = sorted(set(listed) - names)
    if missing:
        raise EdgeprotoError(f"{zip_path} failed its integrity check: {missing[0]}: missing")
    return infos, listed


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, stage: Path, zip_path: Path,
                    listed: dict) -> None:
    out = stage / info.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    h, written = hashlib.sha256(), 0
    try:
        with zf.open(info) as src, open(out, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                written += len(chunk)
                if written > info.file_size:
                    raise EdgeprotoError(f"{zip_path}: {info.filename} is larger than its directory entry says")
                h.update(chunk)
                dst.write(chunk)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise EdgeprotoError(f"{zip_path}: cannot extract {info.filename} ({exc}); the archive is corrupt") from None
    if info.filename != MANIFEST and h.hexdigest() != listed.get(info.filename):
        raise EdgeprotoError(f"{zip_path} failed its integrity check: {info.filename}: sha256 mismatch "
                             "(modified or corrupt)")
