"""Algorithm registry.  Adding an algorithm: one module with a ``@register_algorithm`` class."""
from __future__ import annotations

from ..registry import Registry
from .base import Algorithm, TaskInfo

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")
register_algorithm = ALGORITHMS.register

# Importing the modules registers the algorithms.
from . import erm  # noqa: E402,F401

__all__ = ["ALGORITHMS", "Algorithm", "TaskInfo", "register_algorithm"]
