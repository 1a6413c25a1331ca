"""Write files and directories under a temporary name, then rename: readers never see half a file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgeproto.errors import EdgeprotoError


_UMASK = os.umask(0)
os.umask(_UMASK)


def _os_error(path: Path, exc: OSError) -> EdgeprotoError:
    return EdgeprotoError(f"cannot write {path}: {exc.strerror or exc}")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the user's usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise _os_error(path, exc) from None


def write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``path``, on error remove it.

    Works for a file or a directory the caller creates at the yielded path. An existing ``path``
    is replaced only once the new one is complete.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise _os_error(path, exc) from None
    target = tmp / f"staged{suffix}"
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            old = tmp / "old"
            os.replace(path, old)
        elif path.exists():
            path.unlink()
        os.replace(target, path)
    except OSError as exc:
        raise _os_error(path, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def overlaps(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` are the same path or one is inside the other (symlinks resolved)."""
    ra, rb = _resolved(a), _resolved(b)
    return ra == rb or ra in rb.parents or rb in ra.parents


def check_output(out: str | Path, inputs: dict[str, str | Path | None], option: str = "--out") -> None:
    """Refuse an output path that is, contains, or is inside one of ``inputs`` ({description: path}).

    Writing (or, with --force, replacing) such an output would destroy the input it is read from.
    """
    for what, path in inputs.items():
        if path is None or str(path) == "":
            continue
        if overlaps(out, path):
            ra, rb = _resolved(out), _resolved(path)
            how = "is" if ra == rb else ("is inside" if rb in ra.parents else "contains")
            raise EdgeprotoError(f"{option} {out} {how} the {what} {path}; write the output somewhere else")
