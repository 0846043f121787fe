"""
Exports name their public module: ``resilience.RetryPolicy``, not ``resilience._policies``.

Each public module ends with ``publish(__name__, globals())``, as httpx does with its loop:
every class and function in its ``__all__`` that still names a private module gets the public
one as ``__module__``, so reprs, tracebacks, ``help()`` and pickles show the import users
write. The first public module to publish a name keeps it (``resilience`` is imported first).

A class's string annotations (``from __future__ import annotations``) are resolved by
``typing.get_type_hints`` in the globals of ``__module__``; before renaming, each one becomes
a ``ForwardRef`` pinned to the module that wrote it, so the hints still resolve.
"""

from __future__ import annotations

import inspect
import types
import typing

from collections.abc import Mapping
from typing import Any


__all__ = ["publish"]


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _pin_annotations(cls: type, module: str) -> None:
    annotations = inspect.get_annotations(cls)
    if any(isinstance(value, str) for value in annotations.values()):
        cls.__annotations__ = {
            name: typing.ForwardRef(value, module=module, is_class=True)
            if isinstance(value, str)
            else value
            for name, value in annotations.items()
        }


def publish(public: str, namespace: Mapping[str, Any]) -> None:
    """Give every class and function in *namespace*'s ``__all__`` the module *public*."""
    for name in namespace["__all__"]:
        obj = namespace[name]
        if not isinstance(obj, type | types.FunctionType):
            continue  # constants and type aliases have no module of their own
        module = obj.__module__
        if not module.startswith("resilience") or not _is_private(module):
            continue  # another library's, or published already
        if isinstance(obj, type):
            _pin_annotations(obj, module)
        obj.__module__ = public
