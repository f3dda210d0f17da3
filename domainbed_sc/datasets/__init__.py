"""Dataset registry.  Adding a dataset: one module in this package with a ``@register_dataset``
class that declares the files it reads (``files``, files.py); generated tensor datasets subclass
``CachedTensorDataset`` (cached.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..registry import Registry, import_all
from .base import LABELS, Batch, DatasetArgs, GroupDataset, Split, TensorSplit

DATASETS: Registry[type[GroupDataset]] = Registry("dataset")
register_dataset = DATASETS.register


def load_dataset(name: str, args: dict[str, Any] | None, data_seed: int,
                 data_dir: Path) -> GroupDataset:
    cls = DATASETS.get(name)
    ds = cls(Path(data_dir), cls.parse_args(args), data_seed)
    if not ds.args.train_attr:
        ds.hide_attributes()
    return ds


# Importing every module of this package registers its datasets.
import_all(__name__, __path__, skip=("base", "cached", "files", "sources"))

__all__ = ["DATASETS", "LABELS", "Batch", "DatasetArgs", "GroupDataset", "Split", "TensorSplit",
           "load_dataset", "register_dataset"]
