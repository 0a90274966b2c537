"""Registry of anomaly-segmentation methods, discovered from the modules of this package."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from ..errors import CavlogError
from .base import Batch, Logs, Method, MethodOptions, read_logs, step_if_finite

__all__ = ["Batch", "Logs", "Method", "MethodOptions", "get_method", "list_methods", "read_logs",
           "step_if_finite"]


@functools.cache  # the package's modules do not change while the process runs
def _discover() -> dict[str, type[Method]]:
    found: dict[str, type[Method]] = {}
    for info in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        importlib.import_module(info.name)
    stack = list(Method.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if getattr(cls, "name", None) and not getattr(cls, "__abstractmethods__", None):
            found[cls.name] = cls
    return dict(sorted(found.items()))


def list_methods() -> dict[str, str]:
    """``{name: one-line description}`` of every available method."""
    return {name: cls.description for name, cls in _discover().items()}


def get_method(name: str) -> type[Method]:
    """Return the :class:`Method` subclass ``name``; unknown names raise :class:`CavlogError`."""
    methods = _discover()
    if name not in methods:
        raise CavlogError(f"method {name!r} is unknown; available: {', '.join(methods)}")
    return methods[name]
