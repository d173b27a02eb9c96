"""A tiny name -> factory registry, so the CLI validates names and lists the valid ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that is not in a registry; the message lists the valid names."""


class Registry(Generic[T]):
    def __init__(self, kind: str, check: Callable[[T], None] | None = None) -> None:
        self.kind = kind
        self._check = check
        """Run on every entry as it registers: an entry that lacks what the registry needs fails there."""
        self._entries: dict[str, T] = {}
        self._summaries: dict[str, str] = {}

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self._check is not None:
                self._check(entry)
            self._entries[name] = entry
            self._summaries[name] = summary
            return entry

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._entries))}") from None

    def summary(self, name: str) -> str:
        return self._summaries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
