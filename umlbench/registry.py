"""A small name -> object registry, filled by a decorator (timm/mteb style).

Registering a name twice raises. A registry may name an entry-point group: on the first lookup
that misses, the group is loaded once, so third-party packages add entries without forking.

Built-in entries can be declared in a lazy index, ``{name: "module:attr"}`` (the entry-point
syntax): ``names()``, ``in`` and ``summary()`` answer from the index and the entry-point metadata
without importing anything, so ``umlbench list`` and name errors never pay for torch; ``get``
imports only the module that registers the requested name.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from umlbench.errors import UserError

__all__ = ["Registry", "source_summary"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps unique snake/kebab-case names to objects.

    Args:
        kind: what the entries are ("method", "loss", ...); used in error messages.
        entry_point_group: optional importlib entry-point group searched on a miss.
        builtin_modules: modules imported on first use; importing them registers the built-ins.
        lazy: built-in names and where they are defined (``"module:attr"``); the module is
            imported, and registers the entry with the decorator, only when the name is looked up.
    """

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        builtin_modules: tuple[str, ...] = (),
        lazy: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = builtin_modules
        self._lazy = dict(lazy or {})
        self._entries: dict[str, T] = {}
        self._builtins_loaded = not builtin_modules
        self._entry_points_loaded = entry_point_group is None
        self._entry_point_targets: dict[str, str] | None = None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as ``@REG.register("name")``."""

        def _add(item: T) -> T:
            if name in self._entries and self._entries[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = item
            return item

        return _add(obj) if obj is not None else _add

    # ---- loading ----------------------------------------------------------------------------
    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self._builtin_modules:
                importlib.import_module(module)

    def _load_lazy(self, name: str) -> None:
        target = self._lazy.get(name)
        if target is None or name in self._entries:
            return
        importlib.import_module(target.partition(":")[0])
        if name not in self._entries:  # the index and the decorators disagree: a umlbench bug
            raise RuntimeError(f"{target} did not register {self.kind} {name!r}")

    def _plugin_targets(self) -> dict[str, str]:
        """Entry-point names -> ``module:attr``, read from package metadata (nothing imported)."""
        if self._entry_point_targets is None:
            self._entry_point_targets = {} if self.entry_point_group is None else {
                ep.name: ep.value for ep in entry_points(group=self.entry_point_group)}
        return self._entry_point_targets

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._entries or ep.name in self._lazy:
                continue  # a built-in name wins over a plugin of the same name
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break the built-ins
                raise UserError(
                    f"could not load {self.kind} plugin {ep.name!r} ({ep.value}): {exc}"
                ) from exc
            self._entries.setdefault(ep.name, obj)

    # ---- lookup -----------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """Look ``name`` up; raises :class:`UserError` listing the known names on a miss."""
        self._load_builtins()
        self._load_lazy(name)
        if name not in self._entries:
            self._load_entry_points()
        if name not in self._entries:
            self.check(name)  # raises with the list of known names
            raise UserError(f"{self.kind} {name!r} could not be loaded")
        return self._entries[name]

    def check(self, name: str) -> None:
        """Raise the unknown-name :class:`UserError` if ``name`` is not known; imports nothing
        but the ``builtin_modules``."""
        if name not in self:
            raise UserError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")

    def names(self) -> list[str]:
        """Every known name, built-in or plugin, without importing lazy entries or plugins."""
        self._load_builtins()
        return sorted(set(self._entries) | set(self._lazy) | set(self._plugin_targets()))

    def summary(self, name: str) -> str:
        """First paragraph of the entry's docstring, on one line; for entries not imported yet it
        is read from the source file, so listing stays cheap. "" when there is none."""
        if name in self._entries:
            return _first_paragraph(getattr(self._entries[name], "__doc__", None) or "")
        target = self._lazy.get(name) or self._plugin_targets().get(name)
        return source_summary(target) if target else ""

    @property
    def index(self) -> dict[str, str]:
        """The lazy index of built-in entries, ``{name: "module:attr"}`` (a copy)."""
        return dict(self._lazy)

    def loaded(self) -> list[str]:
        """Names whose objects are imported and registered now."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries or name in self._lazy or name in self._plugin_targets()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def source_summary(target: str) -> str:
    """First docstring paragraph of ``attr`` in ``module`` (``"module:attr"``; of the module itself
    when ``attr`` is not a top-level class or function), parsed, not imported (finding the file
    imports only the parent packages); "" when there is none."""
    module, _, attr = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return ""
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (ImportError, OSError, SyntaxError, ValueError):
        return ""
    node = next((n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))
                 and n.name == attr), tree)
    return _first_paragraph(ast.get_docstring(node) or "")


def _first_paragraph(doc: str) -> str:
    """The summary of a docstring: its first paragraph on one line."""
    import inspect

    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
