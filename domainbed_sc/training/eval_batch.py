"""The evaluation batch size, per backbone and device, where the user gives none (issue 15).

Evaluation is most of a checkpointed run's wall time on a CPU, and the fastest batch depends on
the backbone: DomainBed's MNIST_CNN (128 channels at 14x14 / 7x7) evaluates at 643 img/s in
batches of 64 but 443 img/s in batches of 512 on one core (channels-last), while LeNet-5's small
activations stay in cache up to 512 and it is 15-50 % faster there than at 2048.  Entries not
measured keep the previous single default, 512 (GPUs are near their peak from a few hundred
images on).  ``benchmarks/bench.py --sections evalbatch`` measures the rows of this table on
the machine it runs on (each backbone at a range of batch sizes).
"""
from __future__ import annotations

import torch

from ..errors import UserError

#: (arch, device type) -> images per evaluation batch, measured on one core of the dev VM
#: (bench.py --sections evalbatch, 2026-12-02: MNIST_CNN's featurizer 1043 img/s at 64, 603 at 512;
#: LeNet-5 flat from 32 to 1024, 30 % slower at 2048)
MEASURED: dict[tuple[str, str], int] = {
    ("mnist_cnn", "cpu"): 64,
    ("lenet5", "cpu"): 512,
    ("rcl_cnn", "cpu"): 128,  # 3245 img/s vs 2005 at 512 (featurizer, one thread, quiet VM)
}
FALLBACK = 512


def eval_batch_size(arch: str | None, device: torch.device, explicit: int | None = None) -> int:
    """``explicit`` if given (the user's value always wins), else the table's entry."""
    if explicit is not None:
        if explicit < 1:
            raise UserError(f"the evaluation batch size must be at least 1, got {explicit}")
        return explicit
    return MEASURED.get((str(arch), torch.device(device).type), FALLBACK)
