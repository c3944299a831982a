"""A registry is a dict and a decorator: the one implementation, for every kind of component
(scorers, budgets, evaluation tasks, image corruptions)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Callable, Generic, TypeVar

from .errors import UsageError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Lowercase names to entries (classes or functions), in registration order. Duplicates are
    refused; an unknown name raises :class:`UsageError` listing the valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """A decorator that registers its target under ``name`` (default: the target's ``__name__``)."""
        if name is not None:
            self._check_name(name)

        def deco(entry: T) -> T:
            key = name if name is not None else self._check_name(entry.__name__)  # type: ignore[attr-defined]
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered ({self._entries[key].__qualname__})")  # type: ignore[attr-defined]
            if isinstance(entry, type):
                entry.name = key  # type: ignore[attr-defined]
            self._entries[key] = entry
            return entry

        return deco

    def _check_name(self, name: str) -> str:
        if name != name.lower() or not name:
            raise ValueError(f"{self.kind} names are lowercase and non-empty, got {name!r}")
        return name

    def get(self, name: str) -> T:  # type: ignore[override]
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
