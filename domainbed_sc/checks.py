"""Typed value specs: what a hyperparameter or a dataset argument may be, and the check.

A ``Spec`` names a type (bool, int, float, str or list), an optional range or choice (a
``Check`` that knows how to say what it expects) and, for lists, the type and range of the
elements.  ``check_value`` is the one function that validates a value against its spec, for
hyperparameters (``hparams.validate``) and dataset arguments (``DatasetArgs.parse``) alike, so
``train`` and sweep validation refuse the same values with the same one-line error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .errors import UserError

TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
              list: "a list"}
ITEM_NAMES = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


@dataclass(frozen=True)
class Check:
    """A predicate on a value of the right type, and the words for what it accepts."""

    test: Callable[[Any], bool]
    text: str
    lists_values: bool = False  # the text names every allowed value: no type word needed

    def __call__(self, value: Any) -> bool:
        return bool(self.test(value))


positive = Check(lambda v: v > 0, "> 0")
non_negative = Check(lambda v: v >= 0, ">= 0")


def at_least(lo: float) -> Check:
    return Check(lambda v: v >= lo, f">= {lo}")


def between(lo: float, hi: float, lo_open: bool = True, hi_open: bool = True) -> Check:
    """lo < v < hi by default; ``lo_open=False`` / ``hi_open=False`` include the ends."""
    def test(v: Any) -> bool:
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    brackets = ("(" if lo_open else "[", ")" if hi_open else "]")
    return Check(test, f"in {brackets[0]}{lo}, {hi}{brackets[1]}")


def one_of(*values: Any) -> Check:
    return Check(lambda v: v in values, "one of " + ", ".join(map(str, values)), lists_values=True)


class OneRegistered(Check):
    """One of a registry's names, read when a value is checked (so an entry registered later,
    e.g. with ``Registry.temporary``, is accepted and named in the message)."""

    def __init__(self, registry: Any):  # no dataclass fields: test and text are read live
        object.__setattr__(self, "registry", registry)

    test = property(lambda self: lambda v: v in self.registry)
    text = property(lambda self: "one of " + ", ".join(self.registry))
    lists_values = True


def is_kind(kind: type, value: Any) -> bool:
    """JSON/YAML-level types: bool is not an int, an int is a float, a tuple is a list."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    if kind is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, kind)


@dataclass(frozen=True)
class Spec:
    kind: type
    check: Check | None = None
    item: type | None = None  # lists: the type of every element
    item_check: Check | None = None
    nullable: bool = False  # None (JSON null) allowed

    def expected(self) -> str:
        if self.kind is list:
            items = ITEM_NAMES.get(self.item, "values")
            return f"a list of {items}" + (f" {self.item_check.text}" if self.item_check else "")
        if self.check is not None and self.check.lists_values:
            text = self.check.text
        else:
            text = TYPE_NAMES[self.kind] + (f" {self.check.text}" if self.check else "")
        return text + (" or null" if self.nullable else "")

    def problem(self, value: Any) -> str | None:
        """None if ``value`` fits; else "wrong type" or "invalid value"."""
        if value is None:
            return None if self.nullable else "wrong type"
        if not is_kind(self.kind, value):
            return "wrong type"
        if self.kind is list and self.item is not None:
            if not all(is_kind(self.item, v) for v in value):
                return "wrong type"
            if self.item_check is not None and not all(_fits(self.item_check, v) for v in value):
                return "invalid value"
        if self.check is not None and not _fits(self.check, value):
            return "invalid value"
        return None


def _fits(check: Check, value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False  # NaN compares false to everything, but `not (nan < 0)` would let it in
    return check(value)


def check_value(what: str, name: str, value: Any, spec: Spec) -> None:
    """Raise a one-line UserError naming ``what`` (e.g. "hyperparameter"), the name, the value
    and what is expected, unless ``value`` fits ``spec``."""
    problem = spec.problem(value)
    if problem == "wrong type":
        raise UserError(f"{what} {name}={value!r} has the wrong type (expected {spec.expected()})")
    if problem is not None:
        raise UserError(f"invalid value for {what} {name}: {value!r} (expected {spec.expected()})")


def check_mapping(what: str, value: Any) -> dict[str, Any]:
    """The JSON/YAML value given for a set of named values must be an object/mapping."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{what} must be a JSON object / mapping of names to values, got {value!r}")
    return value
