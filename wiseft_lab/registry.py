"""A registry of named classes in timm's style: it knows no plugin; the plugins register themselves when their
package face imports them, and ``names()`` says what exists."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Name -> class for subclasses of ``base``; ``what`` and ``key`` word the errors (``Unknown <key> 'x'``)."""

    def __init__(self, base: type, what: str, key: str):
        self.base, self.what, self.key = base, what, key
        self._classes: dict[str, T] = {}

    def register(self, name: str):
        """Class decorator: register a subclass of ``base`` under ``name`` and set its ``name`` attribute."""
        def decorator(cls: T) -> T:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{self.what} {name!r} must be a {self.base.__name__} subclass, not {cls!r}")
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"A {self.what} {name!r} is already registered ({self._classes[name].__name__})")
            cls.name = name
            self._classes[name] = cls
            return cls
        return decorator

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> T:
        if name not in self._classes:
            raise KeyError(f"Unknown {self.key} {name!r}; known: {self.names()}")
        return self._classes[name]
