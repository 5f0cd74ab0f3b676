"""One registry helper for losses, models, data sets and launchers: names -> builders.

A :class:`Registry` is a ``dict`` from names to objects with a
:meth:`~Registry.register` method (a call or a decorator) that refuses empty and
duplicate names, a :meth:`~Registry.lookup` whose error lists the valid names,
and a per-name ``info`` dict (a one-line description and anything else the
caller wants to record, e.g. which config options a data set reads). The CLI and
the config validate names against these registries, so registering a loss, a
model, a data set or a launcher is the only edit that makes it usable from the command line.

>>> shapes = Registry("shape")
>>> @shapes.register("square", description="four equal sides")
... def square(side):
...     return side * side
>>> shapes.lookup("square")(3), shapes.names(), shapes.info["square"]["description"]
(9, ['square'], 'four equal sides')
>>> shapes.lookup("circle")
Traceback (most recent call last):
...
ValueError: unknown shape 'circle': expected one of square
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Names (``str``) -> objects, filled by :meth:`register`.

    Args:
        kind: what is registered (``"loss"``, ``"model"``, ``"dataset"``), used in messages.
        case_insensitive: store and look up names in lower case.
    """

    def __init__(self, kind: str, *, case_insensitive: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.case_insensitive = case_insensitive
        self.info: dict[str, dict[str, Any]] = {}

    def key(self, name: object) -> str:
        """The stored form of ``name`` (checked: a non-empty str without surrounding spaces)."""
        if not isinstance(name, str):
            raise TypeError(f"expected {self.kind} name to be a str, got {type(name).__name__}")
        if not name or name != name.strip():
            raise ValueError(
                f"expected a non-empty {self.kind} name without surrounding spaces, got {name!r}"
            )
        return name.lower() if self.case_insensitive else name

    def register(
        self, name: str, obj: T | None = None, *, description: str = "", **info: Any
    ) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does.

        ``description`` and any further keywords are kept in ``self.info[name]``.
        A name already registered is refused (ValueError).
        """
        key = self.key(name)
        if key in self:
            raise ValueError(f"expected a new {self.kind} name, got already registered {name!r}")

        def add(target: T) -> T:
            if not callable(target):
                raise TypeError(
                    f"expected a callable {self.kind} builder, got {type(target).__name__}"
                )
            self[key] = target
            self.info[key] = {"description": description, **info}
            return target

        return add if obj is None else add(obj)

    def pop(self, name: str, *default: Any) -> Any:
        """Remove ``name`` (and its info), like ``dict.pop`` (any case in a case-insensitive one)."""
        key = name.lower() if self.case_insensitive and isinstance(name, str) else name
        self.info.pop(key, None)
        return super().pop(key, *default)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self)

    def lookup(self, name: object) -> T:
        """The object registered as ``name``; ValueError listing the valid names otherwise."""
        key = self.key(name)
        if key not in self:
            raise ValueError(
                f"unknown {self.kind} {name!r}: expected one of {', '.join(self.names())}"
            )
        return self[key]
