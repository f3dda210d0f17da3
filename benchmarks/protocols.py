"""Benchmark sections of what users run (issue 15), each against today's behaviour in the same run.

* ``cmnist``: DomainBed's protocol on Coloured MNIST (ERM, MNIST_CNN, 301 steps, a checkpoint
  every 100), one thread as DomainBed's launcher gives each process: wall time, the share spent
  evaluating, and whether the val / oracle / test records equal those of full evaluation;
* ``thesis``: the thesis protocol end to end (MNIST-CIFAR N=8, LeNet-5, 10 epochs, data and
  trial seed 13; results/thesis_protocol_n8/README.md) with the default threads;
* ``sweep``: a 16-job thesis sweep (2 epochs a job; ``--sweep-epochs 10`` for the whole
  protocol) through the default launcher, against ``--launcher local`` with today's and with the
  new evaluation;
* ``evalbatch``: evaluation images/s per backbone and batch size on the default device (the
  rows of ``domainbed_sc/training/eval_batch.py``);
* ``gpu`` (CUDA only, else skipped with the reason): one thesis run's training images/s, packed
  K runs' aggregate images/s for K = 1, 8, 32, ... up to the largest K that fits, and the wall
  time of a 64-run thesis sweep in packs of that K (at most 64).

"Today" is full evaluation of every split in batches of 512 (``--eval-train full
--eval-batch-size 512``) and, for sweeps, the local launcher.  Code paths take the device as an
argument; nothing here assumes a CPU or a GPU.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from runs import (THESIS, TODAY, TODAY_FLAGS, launch_seconds, sync, thesis_runs, thesis_sweep, threads,
                  train_seconds)

CMNIST = {"dataset": "cmnist", "algorithm": "ERM"}  # DomainBed variant, test env 2, default hparams
ARCH_INPUTS = {"mnist_cnn": (2, 28, 28), "lenet5": (3, 32, 32), "rcl_cnn": (3, 28, 28), "mlp": (2, 28, 28)}


# -- helpers -------------------------------------------------------------------------------------
@contextlib.contextmanager
def capped_splits(cap: int | None, subsample: int | None) -> Iterator[None]:
    """``--quick``: every split cut to its first ``cap`` examples (and the training subsample to
    ``subsample``), so a smoke run evaluates little; a no-op for real measurements."""
    from domainbed_sc.training import evaluation, trainer

    if cap is None:
        yield
        return
    load, limit = trainer.load_dataset, evaluation.SUBSAMPLE_MAX

    def load_capped(*args, **kw):
        ds = load(*args, **kw)
        ds.splits = {k: s.subset(torch.arange(min(cap, len(s)))) for k, s in ds.splits.items()}
        return ds

    trainer.load_dataset, evaluation.SUBSAMPLE_MAX = load_capped, subsample or limit
    try:
        yield
    finally:
        trainer.load_dataset, evaluation.SUBSAMPLE_MAX = load, limit


@contextlib.contextmanager
def timed_evaluation() -> Iterator[list[float]]:
    """Seconds spent in each checkpoint's evaluation, appended to the yielded list."""
    from domainbed_sc.training import trainer

    spent, evaluate = [], trainer.evaluate

    def timed(*args, **kw):
        t0 = time.perf_counter()
        try:
            return evaluate(*args, **kw)
        finally:
            spent.append(time.perf_counter() - t0)

    trainer.evaluate = timed
    try:
        yield spent
    finally:
        trainer.evaluate = evaluate


def warm_up(run_args: dict, data_dir: Path, out: Path, device: str) -> None:
    """What the first run of a process pays and the second not: the dataset cache, imports on
    the first optimizer step (torch._dynamo), oneDNN's primitives."""
    from domainbed_sc.training.evaluation import predict_split
    from domainbed_sc.training.records import RunArgs
    from domainbed_sc.training.trainer import Run, RunOptions

    run = Run(RunArgs(**{**run_args, "steps": 2, "epochs": None}),
              RunOptions(out, data_dir, device, progress=False))
    stream = run.batch_stream()
    for _ in range(2):
        run.train_step(next(stream))
    train = run.ds.splits["train"]
    for batch_size in {run.eval_batch_size, TODAY["eval_batch_size"]}:
        some = torch.arange(min(batch_size, len(train)))
        predict_split(run.algorithm, train, batch_size, run.device, some)


def one_run(run_args: dict, opts: dict, out: Path, data_dir: Path, device: str) -> dict[str, Any]:
    """Wall time (dataset cached) of one run through the trainer, its evaluation seconds, records."""
    from domainbed_sc.training.records import RESULTS, RunArgs, read_records
    from domainbed_sc.training.trainer import RunOptions, train

    with timed_evaluation() as spent:
        t0 = time.perf_counter()
        train(RunArgs(**run_args), RunOptions(out, data_dir, device, progress=False, **opts))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "eval_s": sum(spent), "eval_share": sum(spent) / wall,
            "records": list(read_records(out / RESULTS))}


def same_records(a: list[dict], b: list[dict], splits: set[str]) -> bool:
    """Equal steps, losses and metrics of ``splits`` in every record."""
    return len(a) == len(b) and all(
        x["step"] == y["step"] and x["losses"] == y["losses"]
        and all(x["metrics"][s] == y["metrics"][s] for s in splits) for x, y in zip(a, b))


def today_vs_new(run_args: dict, sizes, data_dir: Path, out: Path, device: str,
                 n_threads: int | None) -> dict:
    """One run with today's evaluation and one with the new, timed and compared."""
    with capped_splits(sizes.split_cap, sizes.split_subsample), threads(n_threads):
        warm_up(run_args, data_dir, out / "warm-up", device)
        new = one_run(run_args, {}, out / "new", data_dir, device)
        today = one_run(run_args, TODAY, out / "today", data_dir, device)
    new_recs, today_recs = new.pop("records"), today.pop("records")
    return {"today": today, "new": new, "speedup": today["wall_s"] / new["wall_s"],
            "threads": n_threads or torch.get_num_threads(), "steps": new_recs[-1]["step"],
            "identical_records": same_records(today_recs, new_recs, read_splits(new_recs[0])),
            "compared_splits": sorted(read_splits(new_recs[0])),
            "train_n": {"today": today_recs[-1]["metrics"]["train"]["n"],
                        "new": new_recs[-1]["metrics"]["train"]["n"]}}


def read_splits(record: dict) -> set[str]:
    """The splits the collector reads from a record (collect/reader.py's roles)."""
    ds = record["dataset"]
    return {ds[k] for k in ("val_split", "oracle_split", "id_split", "ood_split") if ds.get(k)}


# -- sections ------------------------------------------------------------------------------------
def cmnist_section(sizes, data_dir: Path, out: Path, device: str) -> dict:
    args = {**CMNIST, "steps": sizes.cmnist_steps, "checkpoint_freq": sizes.cmnist_freq}
    return today_vs_new(args, sizes, data_dir, out / "cmnist", device, 1)


def thesis_section(sizes, data_dir: Path, out: Path, device: str) -> dict:
    return today_vs_new({**THESIS, "epochs": sizes.thesis_epochs}, sizes, data_dir, out / "thesis",
                        device, None)


def sweep_section(sizes, data_dir: Path, out: Path, device: str) -> dict:
    from domainbed_sc.datasets import load_dataset

    load_dataset(THESIS["dataset"], THESIS["dataset_args"], 0, data_dir)  # cached before the timings
    sweep = thesis_sweep(out / "thesis_sweep.yaml", sizes.sweep_jobs, {"epochs": sizes.sweep_epochs})
    variants = {"default launcher, new evaluation": [],
                "local, new evaluation": ["--launcher", "local"],
                "local, today's evaluation (today)": ["--launcher", "local", *TODAY_FLAGS]}
    seconds = {name: launch_seconds(sweep, out / f"sweep{i}", data_dir, device, flags)
               for i, (name, flags) in enumerate(variants.items())}
    default = seconds["default launcher, new evaluation"]
    return {"jobs": sizes.sweep_jobs, "epochs": sizes.sweep_epochs, "wall_s": seconds,
            "speedup_vs_local": seconds["local, new evaluation"] / default,
            "speedup_vs_today": seconds["local, today's evaluation (today)"] / default}


def evalbatch_section(sizes, device: str) -> dict:
    """Evaluation images/s of each backbone (random weights: speed does not depend on them)."""
    from domainbed_sc.networks import build_featurizer

    dev = torch.device(device)
    rows = {}
    for arch, shape in ARCH_INPUTS.items():
        net = build_featurizer(arch, shape).to(dev).eval()
        if dev.type == "cpu":
            net = net.to(memory_format=torch.channels_last)
        x = torch.rand(sizes.eval_images, *shape, device=dev)
        rows[arch] = {}
        for bs in sizes.eval_batches:
            with torch.inference_mode():
                net(x[:bs])  # warm-up
                sync(dev)
                t0 = time.perf_counter()
                for chunk in x.split(bs):
                    net(chunk)
                sync(dev)
            rows[arch][bs] = sizes.eval_images / (time.perf_counter() - t0)
    return {"device": device, "threads": torch.get_num_threads(), "images_per_s": rows,
            "best": {arch: max(r, key=r.get) for arch, r in rows.items()}}


def gpu_section(sizes, data_dir: Path, out: Path, device: str = "cuda") -> dict:
    """Training images/s of K packed thesis runs for growing K until memory runs out, and a
    64-run thesis sweep (10 epochs, the whole protocol) in packs of the largest K that fit (at
    most 64).  ``device`` is a parameter so the code path can be tried on a CPU."""
    batch = THESIS["hparams"]["batch_size"]
    packs: dict[int, float] = {}
    for k in sizes.gpu_packs:
        try:
            runs = thesis_runs(k, data_dir, out / f"gpu_pack{k}", device)
            packs[k] = k * batch * sizes.steps / train_seconds(runs, sizes.warmup, sizes.steps)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            runs = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    pack = min(max(packs), sizes.gpu_sweep_jobs)
    sweep = thesis_sweep(out / "gpu_sweep.yaml", sizes.gpu_sweep_jobs, {"epochs": sizes.gpu_sweep_epochs})
    seconds = launch_seconds(sweep, out / "gpu_sweep", data_dir, device, ["--pack", str(pack)])
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    return {"device": name, "one_run_images_per_s": packs[1],
            "packed_images_per_s": packs, "largest_pack": max(packs),
            "sweep": {"jobs": sizes.gpu_sweep_jobs, "epochs": sizes.gpu_sweep_epochs, "pack": pack,
                      "wall_s": seconds}}


def run_section(name: str, sizes, data_dir: Path, out: Path, device: str) -> dict:
    if name == "cmnist":
        return cmnist_section(sizes, data_dir, out, device)
    if name == "thesis":
        return thesis_section(sizes, data_dir, out, device)
    if name == "sweep":
        return sweep_section(sizes, data_dir, out, device)
    if name == "evalbatch":
        return evalbatch_section(sizes, device)
    if not torch.cuda.is_available():
        return {"skipped": "CUDA is not available on this machine"}
    return gpu_section(sizes, data_dir, out)


# -- report --------------------------------------------------------------------------------------
TARGETS = {"cmnist": 1.8, "thesis": 1.25, "sweep": 1.3}  # issue 15: today / new wall time


def run_rows(name: str, r: dict) -> list[list[str]]:
    rows = []
    for variant in ("today", "new"):
        v = r[variant]
        rows.append([f"{name}: {variant}", f"{v['wall_s']:.1f}", f"{v['eval_s']:.1f}",
                     f"{100 * v['eval_share']:.0f} %", f"{r['train_n'][variant]}"])
    rows.append([f"{name}: speed-up (target {TARGETS[name]})", f"{r['speedup']:.2f}x", "", "",
                 "records equal" if r["identical_records"] else "RECORDS DIFFER"])
    return rows


def sweep_table(sw: dict) -> list[list[str]]:
    rows = [[name, f"{sec:.1f}"] for name, sec in sw["wall_s"].items()]
    return rows + [[f"speed-up vs today (target {TARGETS['sweep']})", f"{sw['speedup_vs_today']:.2f}x"],
                   ["speed-up vs local with the new evaluation (the launcher's share)",
                    f"{sw['speedup_vs_local']:.2f}x"]]


def evalbatch_table(eb: dict) -> list[list[Any]]:
    return [[arch, *(f"{r[b]:.0f}" for b in r), eb["best"][arch]] for arch, r in eb["images_per_s"].items()]


def gpu_table(g: dict) -> list[list[str]]:
    rows = [[f"pack {k}" + " (one run)" * (k == 1), f"{v:.0f}"] for k, v in g["packed_images_per_s"].items()]
    sw = g["sweep"]
    return rows + [[f"sweep: {sw['jobs']} jobs x {sw['epochs']} epochs, packs of {sw['pack']}",
                    f"{sw['wall_s']:.1f} s"]]


def tables(results: dict[str, dict]) -> str:
    from tabulate import tabulate

    out = []
    one = [row for name in ("cmnist", "thesis") if name in results for row in run_rows(name, results[name])]
    if one:
        out.append(tabulate(one, ["one run (today: full eval, batch 512)", "wall s", "eval s",
                                  "eval share", "train n"], tablefmt="github"))
    if "sweep" in results:
        sw = results["sweep"]
        out.append(tabulate(sweep_table(sw), [f"thesis sweep: {sw['jobs']} jobs x {sw['epochs']} epochs",
                                              "wall s"], tablefmt="github"))
    if "evalbatch" in results:
        eb = results["evalbatch"]
        batches = list(next(iter(eb["images_per_s"].values())))
        out.append(tabulate(evalbatch_table(eb), [f"eval img/s, {eb['device']}, {eb['threads']} threads",
                                                  *batches, "best"], tablefmt="github"))
    if "gpu" in results:
        g = results["gpu"]
        out.append(f"gpu: skipped ({g['skipped']})" if "skipped" in g
                   else tabulate(gpu_table(g), [f"gpu: {g['device']}", "train img/s"], tablefmt="github"))
    return "\n\n".join(out)
