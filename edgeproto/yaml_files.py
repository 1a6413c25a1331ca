"""Reading YAML that a user hands us (recipes, data configs, thresholds) with bounded cost.

A plain ``yaml.safe_load`` accepts anchors and aliases, so a few hundred bytes ("billion laughs")
expand to gigabytes once the result is walked. Recipes never need aliases: :func:`load_yaml`
refuses them, caps the file size, and turns every read/decoding/parse problem into one
``EdgeprotoError`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgeproto.errors import EdgeprotoError

MAX_YAML_BYTES = 1 << 20  # recipes and configs are a few kB
MAX_YAML_DEPTH = 32


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (``*name``) and deep nesting."""

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in edgeproto files", event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.constructor.ConstructorError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str, where: str = "YAML") -> Any:
    """Parse YAML text with :class:`_NoAliasLoader`; ``EdgeprotoError`` on any problem."""
    if len(text) > MAX_YAML_BYTES:
        raise EdgeprotoError(f"{where} is larger than {MAX_YAML_BYTES >> 10} KiB")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise EdgeprotoError(f"{where} is not valid YAML: {first}") from None
    except RecursionError:
        raise EdgeprotoError(f"{where} is nested too deeply") from None


def load_yaml(path: str | Path, what: str = "file") -> Any:
    """Read and parse a YAML (or JSON) file of at most :data:`MAX_YAML_BYTES`."""
    path = Path(path)
    if not path.is_file():
        raise EdgeprotoError(f"{what} not found: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise EdgeprotoError(f"{what} {path} is {size} bytes; at most {MAX_YAML_BYTES >> 10} KiB is read")
        data = path.read_bytes()
    except OSError as exc:
        raise EdgeprotoError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EdgeprotoError(f"{what} {path} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None
    return parse_yaml(text, f"{what} {path}")
