"""A small name -> object registry, filled by a decorator (timm/mteb style).

Registering a name twice raises. A registry may name an entry-point group: on the first lookup
that misses, the group is loaded once, so third-party packages add entries without forking.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from umlbench.errors import UserError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps unique snake/kebab-case names to objects.

    Args:
        kind: what the entries are ("method", "loss", ...); used in error messages.
        entry_point_group: optional importlib entry-point group searched on a miss.
        builtin_modules: modules imported on first use; importing them registers the built-ins.
    """

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        builtin_modules: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = builtin_modules
        self._entries: dict[str, T] = {}
        self._builtins_loaded = not builtin_modules
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as ``@REG.register("name")``."""

        def _add(item: T) -> T:
            if name in self._entries and self._entries[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = item
            return item

        return _add(obj) if obj is not None else _add

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self._builtin_modules:
                importlib.import_module(module)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._entries:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break the built-ins
                raise UserError(
                    f"could not load {self.kind} plugin {ep.name!r} ({ep.value}): {exc}"
                ) from exc
            self._entries.setdefault(ep.name, obj)

    def get(self, name: str) -> T:
        """Look ``name`` up; raises :class:`UserError` listing the known names on a miss."""
        self._load_builtins()
        if name not in self._entries:
            self._load_entry_points()
        if name not in self._entries:
            known = ", ".join(self.names())
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load_builtins()
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        if name not in self._entries:
            self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
