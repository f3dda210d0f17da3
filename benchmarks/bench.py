"""Speed of domainbed_sc on this machine, against the machine's own limit, a DomainBed-style loop
and today's behaviour.

    python benchmarks/bench.py --out results/bench/<date>-<machine>.json [--quick] [--sections a,b]

Sections (default: all, in this order):

``core``, on the DL thesis protocol (MNIST-CIFAR N=8, LeNet-5, batch 64, Adam lr 5e-3):

1. the reference limit: fp32 matmul GFLOP/s (large square matmul, best of several);
2. training images/s and achieved GFLOP/s of one run through our trainer, and of K packed runs in
   aggregate; FLOPs are counted analytically (conv/linear MACs x 2 forward, training = 3 x forward);
   also evaluation images/s (what every checkpoint costs);
3. a plain PyTorch loop: a Dataset returning one sample at a time from the same tensors, the
   default collate, batch 64, shuffle: what a typical DomainBed-style script gets;
4. start-up: process start to the first training step of ``domainbed-sc train`` (dataset cached),
   plus the import times of torch and of our trainer;

``launchers``: wall time of a 16-run sweep of the protocol at reduced length (200 steps, one final
evaluation each) through the local and parallel launchers, with and without packing, against the
baseline loop run 16 times as separate processes (as DomainBed's launcher does);

``cmnist``, ``thesis``, ``sweep``, ``evalbatch``, ``gpu``: what users run, against today's
behaviour in the same run (protocols.py).

Prints tables and writes the JSON.  ``--quick`` is a smoke run with tiny sizes.  The machine is
shared: the load average before and after is recorded; compare numbers only at low load.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import protocols
import report
import runs
from domainbed_sc.datasets.sources import resolve_data_dir
from domainbed_sc.networks import lenet5

THESIS_DATASET_ARGS = {"n_backgrounds": 8}
THESIS_HPARAMS = {"optimizer": "adam", "lr": 0.005, "batch_size": 64}
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10

# Runs in a child process: stops `domainbed-sc train` at the start of its first step and prints
# the time, so process start -> first step is measured on the real command line path.
STARTUP_PROBE = """
import os, sys, time
from domainbed_sc.training import trainer
def first_step(self, batch):
    print(f"FIRST_STEP {time.time()!r}", flush=True)
    os._exit(0)
trainer.Run.train_step = first_step
from domainbed_sc.cli import main
main(sys.argv[1:])
"""


@dataclass
class Sizes:
    """How much each measurement runs (``--quick`` shrinks everything)."""

    matmul_n: int = 4096
    matmul_repeats: int = 5
    steps: int = 200  # timed training steps per throughput measurement
    warmup: int = 20
    pack: int = 8
    sweep_runs: int = 16
    sweep_steps: int = 200
    repeats: int = 3  # of the start-up measurements
    eval_cap: int | None = None  # images evaluated per split (None: all, as a checkpoint does)
    # the protocol sections (protocols.py)
    cmnist_steps: int = 301
    cmnist_freq: int = 100
    thesis_epochs: float = 10
    sweep_jobs: int = 16
    sweep_epochs: float = 2
    split_cap: int | None = None  # every split cut to this many examples (None: the real data)
    split_subsample: int | None = None  # the training subsample under split_cap
    eval_batches: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024, 2048)
    eval_images: int = 4096
    gpu_packs: tuple[int, ...] = (1, 8, 32, 128, 512, 2048)
    gpu_sweep_jobs: int = 64
    gpu_sweep_epochs: float = 10


QUICK = Sizes(matmul_n=512, matmul_repeats=2, steps=5, warmup=2, pack=2, sweep_runs=2, sweep_steps=5,
              repeats=1, eval_cap=1024, cmnist_steps=3, cmnist_freq=2, thesis_epochs=2, sweep_jobs=2,
              sweep_epochs=0.01, split_cap=400, split_subsample=100, eval_batches=(64, 512),
              eval_images=1024, gpu_packs=(1, 8), gpu_sweep_jobs=2,
              gpu_sweep_epochs=0.01)
SECTIONS = ("core", "launchers", "cmnist", "thesis", "sweep", "evalbatch", "gpu")


@dataclass
class Throughput:
    images_per_s: float
    gflops: float  # achieved, from the analytic FLOP count
    seconds: float
    images: int


@dataclass
class Results:
    machine: dict
    load_before: list[float]
    sizes: dict
    matmul_gflops: float = 0.0
    lenet5_macs: int = 0
    train_flops_per_image: float = 0.0
    trainer: Throughput | None = None
    trainer_1_thread: Throughput | None = None  # what each parallel-launcher worker runs with
    packed: Throughput | None = None
    evaluation: Throughput | None = None
    baseline: Throughput | None = None
    startup: dict = field(default_factory=dict)
    sweep_seconds: dict = field(default_factory=dict)
    protocols: dict = field(default_factory=dict)  # the protocol sections, by name
    load_after: list[float] = field(default_factory=list)


# -- (1) the machine's limit ----------------------------------------------------------------------
def matmul_peak(n: int, repeats: int) -> float:
    """Best fp32 GFLOP/s of an n x n matmul (2 n^3 FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: thread pool, allocator
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


# -- FLOPs ---------------------------------------------------------------------------------------
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the conv and linear layers for one input (biases, activations and
    pooling, a few per cent, are not counted)."""
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k = module.weight[0].numel()  # in_channels / groups * kh * kw
            macs += output[0].numel() * k
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return macs


def thesis_network() -> nn.Module:
    """LeNet-5 with its 10-way head, as ERM builds it."""
    return nn.Sequential(lenet5(INPUT_SHAPE), nn.Linear(84, NUM_CLASSES))


def train_flops_per_image(macs: int) -> float:
    return 3 * 2 * macs  # forward 2 FLOPs per MAC; backward ~ 2x forward


def throughput(images: int, seconds: float, flops_per_image: float) -> Throughput:
    return Throughput(images / seconds, images * flops_per_image / seconds / 1e9, seconds, images)


# -- (2) our trainer, unpacked and packed --------------------------------------------------------
def trainer_throughput(data_dir: Path, sizes: Sizes, flops: float, out: Path,
                       threads: int | None = None) -> Throughput:
    one = runs.thesis_runs(1, data_dir, out)
    with runs.threads(threads):
        seconds = runs.train_seconds(one, sizes.warmup, sizes.steps)
    return throughput(sizes.steps * THESIS_HPARAMS["batch_size"], seconds, flops)


def packed_throughput(data_dir: Path, sizes: Sizes, flops: float, out: Path) -> Throughput:
    seconds = runs.train_seconds(runs.thesis_runs(sizes.pack, data_dir, out), sizes.warmup,
                                      sizes.steps)
    return throughput(sizes.steps * THESIS_HPARAMS["batch_size"] * sizes.pack, seconds, flops)


def eval_throughput(data_dir: Path, sizes: Sizes, macs: int, out: Path) -> Throughput:
    """Evaluation of every split, as each checkpoint does it."""
    from domainbed_sc.training.evaluation import predict_split

    run = runs.thesis_runs(1, data_dir, out)[0]
    splits = [s if sizes.eval_cap is None else s.subset(torch.arange(min(sizes.eval_cap, len(s))))
              for s in run.ds.splits.values()]
    t0 = time.perf_counter()
    images = sum(len(predict_split(run.algorithm, split, run.eval_batch_size, run.device))
                 for split in splits)
    return throughput(images, time.perf_counter() - t0, 2 * macs)


# -- (3) the DomainBed-style baseline ------------------------------------------------------------
class PerSample(torch.utils.data.Dataset):
    """One (x, y) at a time, x scaled to [0, 1] on access, as image datasets usually are."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i].float() / 255, self.y[i]


def baseline_loop(data_dir: Path, steps: int, warmup: int, evaluate: bool) -> dict:
    """The plain loop on the same tensors: seconds for ``steps`` training steps, and for an
    evaluation of every split (batch 64, as DomainBed's eval loaders) if asked."""
    from domainbed_sc.datasets import load_dataset

    ds = load_dataset("mnist_cifar", THESIS_DATASET_ARGS, 0, data_dir)
    train = ds.splits["train"]
    loader = torch.utils.data.DataLoader(PerSample(train.x, train.y), batch_size=64, shuffle=True,
                                         drop_last=True)
    net = thesis_network()
    opt = torch.optim.Adam(net.parameters(), lr=THESIS_HPARAMS["lr"])
    batches = iter(loader)
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x, y = next(batches)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    result = {"train_s": time.perf_counter() - t0, "steps": steps}
    if evaluate:
        t1 = time.perf_counter()
        net.eval()
        with torch.no_grad():
            for split in ds.splits.values():
                for x, y in torch.utils.data.DataLoader(PerSample(split.x, split.y), batch_size=64):
                    (net(x).argmax(1) == y).sum()
        result["eval_s"] = time.perf_counter() - t1
    return result


def baseline_run_seconds(data_dir: Path, steps: int) -> float:
    """One whole baseline run as its own process (start-up, data, training, evaluation)."""
    t0 = time.time()
    subprocess.run([sys.executable, __file__, "--baseline-run", "--sweep-steps", str(steps),
                    "--data-dir", str(data_dir)], check=True, stdout=subprocess.DEVNULL)
    return time.time() - t0


# -- (4) start-up --------------------------------------------------------------------------------
def python_seconds(code: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.time()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.time() - t0)
    return best


def startup(data_dir: Path, out: Path, repeats: int) -> dict:
    """Process start -> first step of `domainbed-sc train` (median of repeats), and its parts."""
    times = []
    for i in range(repeats):
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", STARTUP_PROBE, "train", "--dataset", "mnist_cifar", "--dataset-args",
             json.dumps(THESIS_DATASET_ARGS), "--hparams", json.dumps(THESIS_HPARAMS), "--steps", "500",
             "--output-dir", str(out / f"startup{i}"), "--data-dir", str(data_dir), "--quiet",
             "--device", "cpu"], capture_output=True, text=True, check=False)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("FIRST_STEP")]
        if not lines:
            raise SystemExit(f"start-up probe failed:\n{proc.stderr[-2000:]}")
        times.append(float(lines[0].split()[1]) - t0)
    return {"to_first_step_s": statistics.median(times), "all_s": times,
            "python_s": python_seconds("pass", repeats),
            "import_torch_s": python_seconds("import torch", repeats),
            # torch.optim.Optimizer.__init__ imports torch._dynamo on first use (_disable_dynamo)
            "import_torch_dynamo_s": python_seconds("import torch._dynamo", repeats),
            "import_trainer_s": python_seconds("import domainbed_sc.training.trainer", repeats)}


# -- (5) a sweep ---------------------------------------------------------------------------------
def sweep_variants(n: int) -> dict[str, list[str]]:
    """Each launcher, then packed: all n runs in one pack, or half per worker."""
    half = max(1, n // 2)
    return {"local": ["--launcher", "local"],
            "parallel (2 workers)": ["--launcher", "parallel", "--workers", "2"],
            f"local, pack {n}": ["--launcher", "local", "--pack", str(n)],
            f"parallel (2 workers), pack {half}": ["--launcher", "parallel", "--workers", "2", "--pack", str(half)]}


def sweep_seconds(data_dir: Path, sizes: Sizes, tmp: Path) -> dict[str, float]:
    length = {"steps": sizes.sweep_steps, "checkpoint_freq": sizes.sweep_steps}
    path = runs.thesis_sweep(tmp / "bench_sweep.yaml", sizes.sweep_runs, length)
    seconds = {name: runs.launch_seconds(path, tmp / name.replace(" ", "_"), data_dir, "cpu", flags)
               for name, flags in sweep_variants(sizes.sweep_runs).items()}
    seconds[f"baseline loop x {sizes.sweep_runs} processes"] = (
        baseline_run_seconds(data_dir, sizes.sweep_steps) * sizes.sweep_runs)
    return seconds


# -- report --------------------------------------------------------------------------------------
def machine() -> dict:
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), platform.processor())
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
            "nproc": os.cpu_count(), "cpu": model, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def measure_core(r: Results, data_dir: Path, sizes: Sizes, tmp: Path) -> None:
    r.matmul_gflops = matmul_peak(sizes.matmul_n, sizes.matmul_repeats)
    r.lenet5_macs = count_macs(thesis_network(), INPUT_SHAPE)
    r.train_flops_per_image = train_flops_per_image(r.lenet5_macs)
    r.trainer = trainer_throughput(data_dir, sizes, r.train_flops_per_image, tmp / "trainer")
    r.trainer_1_thread = trainer_throughput(data_dir, sizes, r.train_flops_per_image, tmp / "trainer1", 1)
    r.packed = packed_throughput(data_dir, sizes, r.train_flops_per_image, tmp / "packed")
    r.evaluation = eval_throughput(data_dir, sizes, r.lenet5_macs, tmp / "eval")
    base = baseline_loop(data_dir, sizes.steps, sizes.warmup, evaluate=False)
    r.baseline = throughput(sizes.steps * 64, base["train_s"], r.train_flops_per_image)
    r.startup = startup(data_dir, tmp, sizes.repeats)


def measure(data_dir: Path, sizes: Sizes, sections: list[str]) -> Results:
    r = Results(machine(), list(os.getloadavg()), dataclasses.asdict(sizes))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in sections:
            print(f"bench: section {name} ...", file=sys.stderr, flush=True)
            if name == "core":
                measure_core(r, data_dir, sizes, tmp)
            elif name == "launchers":
                r.sweep_seconds = sweep_seconds(data_dir, sizes, tmp)
            else:
                r.protocols[name] = protocols.run_section(name, sizes, data_dir, tmp, device)
    r.load_after = list(os.getloadavg())
    return r


def section_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown) or '(none given)'}; "
                                         f"known: {', '.join(SECTIONS)}")
    return names


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="JSON file to write (e.g. results/bench/<date>-<machine>.json)")
    p.add_argument("--data-dir", help="data directory (default $DOMAINBED_SC_DATA or ./data)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every measurement")
    p.add_argument("--sections", type=section_list, default=list(SECTIONS),
                   help=f"comma-separated, of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--sweep-epochs", type=float, help=f"epochs per job of the sweep section (default "
                   f"{Sizes.sweep_epochs}; the thesis protocol is 10)")
    p.add_argument("--baseline-run", action="store_true", help=argparse.SUPPRESS)  # one baseline process
    p.add_argument("--sweep-steps", type=int, default=Sizes.sweep_steps, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    data_dir = resolve_data_dir(a.data_dir)
    if a.baseline_run:
        print(json.dumps(baseline_loop(data_dir, a.sweep_steps, 0, evaluate=True)))
        return
    sizes = QUICK if a.quick else Sizes()
    if a.sweep_epochs is not None:
        sizes = dataclasses.replace(sizes, sweep_epochs=a.sweep_epochs)
    result = measure(data_dir, sizes, a.sections)
    print(report.table(result))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
