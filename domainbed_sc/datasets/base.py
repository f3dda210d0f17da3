"""The data contract (docs/METHODS.md §P.1): every example carries x, y, s, g = y*S + s, e and idx.

A dataset is a set of named splits plus the facts an algorithm, the trainer and the collector
need (classes, attributes, groups, input shape, which labels it provides, which split is ID or
OOD).  Labels are always in-memory tensors; pixels live in memory too for small datasets
(``TensorSplit``) or are read from disk batch by batch for large image datasets.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Iterator

import torch
from torch import Tensor

from ..checks import Check, Spec, check_mapping, check_value
from ..errors import UserError

if TYPE_CHECKING:
    from .files import DataFiles

#: The optional training-time labels an algorithm may require (docs/METHODS.md §A.0).
LABELS = ("s", "g", "e")
#: the labels ``train_attr: false`` hides from the training and validation splits
ATTRIBUTE_LABELS = frozenset({"s", "g"})


@dataclass
class Batch:
    """One minibatch.  ``s``, ``g`` and ``e`` hold -1 where the dataset has no such label."""

    x: Tensor
    y: Tensor
    s: Tensor
    g: Tensor
    e: Tensor
    idx: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def tensors(self) -> tuple[Tensor, ...]:
        """The fields in order, not copied (``dataclasses.astuple`` deep-copies every tensor)."""
        return tuple(vars(self).values())

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in self.tensors()))

    @staticmethod
    def cat(batches: list["Batch"]) -> "Batch":
        if len(batches) == 1:
            return batches[0]
        return Batch(*(torch.cat(ts) for ts in zip(*(b.tensors() for b in batches))))


def group_ids(y: Tensor, s: Tensor, num_attributes: int) -> Tensor:
    """g = y*S + s, and -1 where s is unknown."""
    return torch.where(s >= 0, y * num_attributes + s, torch.full_like(y, -1))


class Split:
    """Labels of one split, in memory.  Subclasses say how to get pixels for given indices."""

    def __init__(self, y: Tensor, s: Tensor | None, e: Tensor | None, num_attributes: int):
        n = len(y)
        self.y = y.long()
        self.s = s.long() if s is not None else torch.full((n,), -1, dtype=torch.long)
        self.e = e.long() if e is not None else torch.full((n,), -1, dtype=torch.long)
        self.g = group_ids(self.y, self.s, num_attributes)
        self.idx = torch.arange(n)

    def __len__(self) -> int:
        return len(self.y)

    def load_x(self, indices: Tensor) -> Tensor:
        raise NotImplementedError

    def fetch(self, indices: Tensor) -> Batch:
        indices = indices.to(self.y.device)
        return Batch(self.load_x(indices), self.y[indices], self.s[indices], self.g[indices],
                     self.e[indices], self.idx[indices])

    def batches(self, index_batches: Iterable[Tensor]) -> Iterator[Batch]:
        """Batches for a stream of index tensors (disk splits override this to use workers)."""
        return (self.fetch(i) for i in index_batches)

    def eval_batches(self, batch_size: int, indices: Tensor | None = None) -> Iterator[Batch]:
        """The split (or its ``indices``) in order, in batches of ``batch_size``."""
        order = torch.arange(len(self)) if indices is None else indices
        return self.batches(order.split(batch_size))

    def subset(self, indices: Tensor) -> "Split":
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "Split":
        """Move what lives in memory to ``device`` (a no-op for the labels of disk splits)."""
        for name in ("y", "s", "g", "e", "idx"):
            setattr(self, name, getattr(self, name).to(device))
        return self


class TensorSplit(Split):
    """A split held as tensors.  uint8 pixels are stored compactly and scaled to [0, 1] on fetch."""

    def __init__(self, x: Tensor, y: Tensor, s: Tensor | None = None, e: Tensor | None = None,
                 *, num_attributes: int):
        super().__init__(y, s, e, num_attributes)
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x = x
        self.num_attributes = num_attributes

    def load_x(self, indices: Tensor) -> Tensor:
        x = self.x[indices]
        return x.float().div_(255) if x.dtype == torch.uint8 else x.float()

    def subset(self, indices: Tensor) -> "TensorSplit":
        return TensorSplit(self.x[indices], self.y[indices], self.s[indices], self.e[indices],
                           num_attributes=self.num_attributes)

    def to(self, device: torch.device | str) -> "TensorSplit":
        super().to(device)
        self.x = self.x.to(device)
        return self


def arg(default: Any, kind: type, check: Check | None = None, nullable: bool = False) -> Any:
    """A dataset argument with its type and range, declared once on the dataset's Args class."""
    return field(default=default, metadata={"spec": Spec(kind, check, nullable=nullable)})


@dataclass(frozen=True)
class DatasetArgs:
    """Arguments of a dataset.  Subclass with the dataset's own fields (``arg``).

    ``train_attr`` (every dataset; METHODS §P.8) is not a generation argument: false shows the
    training and validation splits without s and g, SubpopBench's ``train_attr: no``, so methods
    that need attribute labels are refused and model selection cannot read them.
    """

    # keyword-only: a subclass's own fields keep their positions (``MnistCifarArgs(8)``)
    train_attr: bool = field(default=True, kw_only=True, metadata={"spec": Spec(bool)})

    @classmethod
    def parse(cls, values: Any, dataset: str = "dataset") -> "DatasetArgs":
        """Checked arguments: every name known, every value of its declared type and range."""
        values = check_mapping(f"{dataset}: dataset_args", values)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UserError(f"unknown dataset argument(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(fields)) or 'none'}")
        for name, value in values.items():
            spec = fields[name].metadata.get("spec") or Spec(type(fields[name].default))
            check_value(f"{dataset} dataset argument", name, value, spec)
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def generation(self) -> dict[str, Any]:
        """The arguments the data are generated from (what a cache entry is keyed on)."""
        return {k: v for k, v in self.as_dict().items() if k != "train_attr"}

    def changed(self) -> dict[str, Any]:
        """The arguments that differ from their defaults (to name a configuration briefly)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}


class GroupDataset:
    """Base class of every registered dataset.

    Subclasses set the class attributes below and fill ``self.splits`` in ``__init__``.
    ``provides`` lists the training-time labels of LABELS the dataset has; ``id_split`` /
    ``ood_split`` name the in- and out-of-distribution test splits (None where not defined);
    ``val_split`` is the model-selection split (None where the protocol has none);
    ``oracle_split`` a held-out part of the test distribution (DomainBed's oracle selection).
    ``files`` declares what the dataset reads from the data dir and where to download it
    (files.py); generated tensor datasets subclass ``CachedTensorDataset`` (cached.py).
    """

    name: ClassVar[str]
    Args: ClassVar[type[DatasetArgs]] = DatasetArgs
    num_classes: ClassVar[int]
    input_shape: ClassVar[tuple[int, ...]]
    provides: ClassVar[frozenset[str]] = frozenset()
    val_split: ClassVar[str | None] = None
    oracle_split: ClassVar[str | None] = None
    id_split: ClassVar[str | None] = None
    ood_split: ClassVar[str | None] = None
    #: small-image datasets use DomainBed's "MNIST-like" hyperparameter defaults and ranges
    small_images: ClassVar[bool] = True
    #: default backbone (a name in networks.FEATURIZERS) and other per-dataset hparam defaults
    default_hparams: ClassVar[dict[str, Any]] = {}
    #: every file set the dataset can read, each a ``domainbed-sc download`` target by its name
    files: ClassVar[tuple[DataFiles, ...]] = ()

    @classmethod
    def files_for(cls, args: DatasetArgs) -> tuple[DataFiles, ...]:
        """The file sets these arguments read (the data step of setup fetches just these)."""
        return cls.files

    @classmethod
    def parse_args(cls, values: Any) -> DatasetArgs:
        return cls.Args.parse(values, cls.name)

    @classmethod
    def provides_for(cls, args: DatasetArgs) -> frozenset[str]:
        """The labels of LABELS the training split provides with these arguments, without
        loading it (sweep validation asks before any data is read)."""
        labels = cls.variant_provides(args)
        return labels if args.train_attr else labels - ATTRIBUTE_LABELS

    @classmethod
    def variant_provides(cls, args: DatasetArgs) -> frozenset[str]:
        """The labels this configuration has (variants override this)."""
        return cls.provides

    def hide_attributes(self) -> None:
        """``train_attr: false``: no s or g in the training and validation splits (the test
        splits keep them: the tables report groups, the run never sees them)."""
        for name in {"train", self.val_split} - {None}:
            split = self.splits[name]
            split.s, split.g = torch.full_like(split.s, -1), torch.full_like(split.g, -1)

    def __init__(self, data_dir: Path, args: DatasetArgs, data_seed: int):
        self.data_dir = Path(data_dir)
        self.args = args
        self.provides = self.provides_for(args)
        self.data_seed = data_seed
        self.num_attributes: int = 1
        self.splits: dict[str, Split] = {}

    # -- facts derived from the splits ----------------------------------------------------
    @property
    def num_groups(self) -> int:
        return self.num_classes * self.num_attributes

    @property
    def num_envs(self) -> int:
        return int(self.splits["train"].e.max().item()) + 1 if "e" in self.provides else 0

    @property
    def eval_splits(self) -> list[str]:
        return [name for name in self.splits if name != "train"]

    def train_group_counts(self) -> Tensor:
        g = self.splits["train"].g
        return torch.bincount(g[g >= 0].cpu(), minlength=self.num_groups)

    def to(self, device: torch.device | str) -> "GroupDataset":
        for split in self.splits.values():
            split.to(device)
        return self

    def describe(self) -> dict[str, Any]:
        """What the records carry about the dataset, so the collector needs nothing else."""
        return {
            "name": self.name, "args": self.args.as_dict(), "data_seed": self.data_seed,
            "num_classes": self.num_classes, "num_attributes": self.num_attributes,
            "num_groups": self.num_groups, "num_envs": self.num_envs,
            "input_shape": list(self.input_shape), "provides": sorted(self.provides),
            "splits": {k: len(v) for k, v in self.splits.items()},
            "val_split": self.val_split, "oracle_split": self.oracle_split,
            "id_split": self.id_split, "ood_split": self.ood_split,
        }
