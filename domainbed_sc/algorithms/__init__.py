"""Algorithm registry.  Adding an algorithm: one module in this package with a ``@register_algorithm`` class."""
from __future__ import annotations

from ..registry import Registry, import_all
from .base import Algorithm, TaskInfo

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")
register_algorithm = ALGORITHMS.register

# Importing every module of this package registers its algorithms.
import_all(__name__, __path__, skip=("base",))

__all__ = ["ALGORITHMS", "Algorithm", "TaskInfo", "register_algorithm"]
