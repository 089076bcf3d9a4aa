"""Name -> class registries for passes, backends and instruments, filled by plugin hooks.

A registry remembers which plugin registered each name and refuses a second registration of the
same name, naming both plugins, so a later plugin can never silently replace an earlier pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import PluginError, did_you_mean

__all__ = ["Registry", "Entry"]

T = TypeVar("T")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    cls: type
    plugin: str


class Registry(Generic[T]):
    """Registered classes of one kind (``pass``, ``backend``, ``instrument``), by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self.current_plugin = "<python>"

    def add(self, cls: type) -> type:
        """Register ``cls`` under ``cls.name``; refuse a duplicate or malformed name."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(f"{self.kind} class {cls.__qualname__} has name {name!r}; "
                              "expected a kebab-case string such as 'fold-batchnorm'",
                              where=f"plugin '{self.current_plugin}'")
        if name in self._entries:
            first = self._entries[name]
            raise PluginError(f"{self.kind} '{name}' is registered twice: by plugin "
                              f"'{first.plugin}' and by plugin '{self.current_plugin}'",
                              hint="rename one of them or remove one plugin from the list")
        self._entries[name] = Entry(name, cls, self.current_plugin)
        return cls

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise PluginError(f"unknown {self.kind} '{name}'",
                              hint=did_you_mean(name, self._entries)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in sorted(self._entries)]
