"""The architecture registry: ``model.arch`` → a builder ``(config, backbone) → nn.Module``.

Each architecture's module registers its own builder with :func:`register_arch`; ``create_model``
looks the recipe's ``model.arch`` up here.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from edgeproto.errors import EdgeprotoError

ArchBuilder = Callable[[dict, nn.Module], nn.Module]
_ARCHS: dict[str, ArchBuilder] = {}


def register_arch(name: str) -> Callable[[ArchBuilder], ArchBuilder]:
    """Decorator: register ``builder(config, backbone)`` as ``model.arch: name``."""

    def wrap(builder: ArchBuilder) -> ArchBuilder:
        if name in _ARCHS:
            raise ValueError(f"model arch {name!r} is registered twice")
        _ARCHS[name] = builder
        return builder

    return wrap


def archs() -> tuple[str, ...]:
    """The registered architecture names."""
    return tuple(_ARCHS)


def arch_builder(name: str) -> ArchBuilder:
    """The builder of ``name``; one clear error for an unknown name."""
    try:
        return _ARCHS[name]
    except KeyError:
        raise EdgeprotoError(f"unknown model arch {name!r}; known: {', '.join(_ARCHS)}") from None
