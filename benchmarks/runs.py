"""What the benchmark sections share: the thesis protocol's runs and sweeps, timed steps, threads.

Every function takes the device as an argument; nothing here assumes a CPU or a GPU.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import torch

TODAY = {"eval_train": "full", "eval_batch_size": 512}
TODAY_FLAGS = ["--eval-train", "full", "--eval-batch-size", "512"]
THESIS = {"dataset": "mnist_cifar", "dataset_args": {"n_backgrounds": 8},
          "hparams": {"optimizer": "adam", "lr": 0.005, "batch_size": 64, "lr_milestones": [5, 8]},
          "data_seed": 13, "trial_seed": 13}


def thesis_runs(k: int, data_dir: Path, out: Path, device: str = "cpu") -> list:
    """K thesis-protocol runs (trial seeds 0..K-1) for throughput measurements.  They share one
    dataset object (runs only read it), so K copies of the data need not fit."""
    from domainbed_sc.training import trainer
    from domainbed_sc.training.records import RunArgs

    load, loaded = trainer.load_dataset, {}

    def load_once(*args):
        if repr(args) not in loaded:
            loaded[repr(args)] = load(*args)
        return loaded[repr(args)]

    trainer.load_dataset = load_once
    try:
        return [trainer.Run(RunArgs(THESIS["dataset"], dataset_args=THESIS["dataset_args"],
                                    hparams=THESIS["hparams"], trial_seed=t, steps=10**6),
                            trainer.RunOptions(out / f"t{t}", data_dir, device, progress=False))
                for t in range(k)]
    finally:
        trainer.load_dataset = load


def timed_steps(step, warmup: int, steps: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - t0


def train_seconds(runs: list, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` training steps of one run, or of the runs packed together."""
    from domainbed_sc.training.packed import PackedStep

    if len(runs) == 1:
        stream = runs[0].batch_stream()
        return timed_steps(lambda: runs[0].train_step(next(stream)), warmup, steps, runs[0].device)
    live = [True] * len(runs)
    pack = PackedStep(runs, live)
    stream = zip(*(run.batch_stream(0) for run in runs))
    return timed_steps(lambda: pack.step(next(stream), live), warmup, steps, pack.device)


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    default = torch.get_num_threads()
    torch.set_num_threads(n or default)
    try:
        yield
    finally:
        torch.set_num_threads(default)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def thesis_sweep(path: Path, jobs: int, length: dict) -> Path:
    """A sweep file of ``jobs`` thesis-protocol ERM runs (trial seeds 0..jobs-1, data seed 0, so
    one cached dataset serves them all); ``length``: {"epochs": E} or {"steps": S, ...}.  JSON is
    YAML."""
    spec = {"datasets": [{"name": THESIS["dataset"], "dataset_args": THESIS["dataset_args"]}],
            "algorithms": ["ERM"], "hparams": THESIS["hparams"], "trial_seeds": list(range(jobs)),
            **length}
    path.write_text(json.dumps(spec, indent=1))
    return path


def launch_seconds(sweep: Path, out: Path, data_dir: Path, device: str, flags: list[str]) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "domainbed_sc", "sweep", "launch", str(sweep), "--output-root",
                    str(out), "--device", device, "--data-dir", str(data_dir), *flags],
                   check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


