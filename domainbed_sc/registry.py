"""A tiny name -> class registry with a decorator, shared by datasets and algorithms."""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            if getattr(obj, "name", None) != name:  # frozen entries that carry their own name
                obj.name = name  # type: ignore[attr-defined]
            return obj

        return decorator

    @contextlib.contextmanager
    def temporary(self, name: str, obj: T) -> Iterator[T]:
        """``obj`` registered as ``name`` for the ``with`` block only: tests register their own
        classes this way, so code that walks the registry (the contract tests) never sees them.
        An object already registered under another name gets that name back afterwards."""
        old = obj.__dict__.get("name") if hasattr(obj, "__dict__") else None
        self.register(name)(obj)
        try:
            yield obj
        finally:
            del self._items[name]
            if old is not None and old != name:
                obj.name = old  # type: ignore[attr-defined]

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    # a registry reads like the name -> entry mapping it holds, in registration order
    __getitem__ = get

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def values(self) -> list[T]:
        return list(self._items.values())


def parse_names(text: str, known: Mapping[str, T], kind: str) -> list[T]:
    """The entries of ``known`` (a registry or a dict) named in a comma-separated flag value, in
    the order given; every unknown name in one error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UserError(f"unknown {kind}(s) {', '.join(unknown) or '(none given)'}; "
                        f"known: {', '.join(known)}")
    return [known[n] for n in names]


def import_all(package_name: str, package_path: list[str], skip: tuple[str, ...] = ()) -> None:
    """Import every module of a package, so that its decorators register what it defines.

    This is what makes "one file, one decorator" work: a new module needs no import line.
    """
    for info in pkgutil.iter_modules(package_path):
        if info.name not in skip and not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
