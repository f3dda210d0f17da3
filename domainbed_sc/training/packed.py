"""Packed training: K independent runs of one architecture trained at once, in one process.

The K runs are ordinary trainer ``Run`` objects: built as the trainer builds them (same seeds,
so the same initial weights, data and sampler), and trained by the trainer's own loop
(``trainer.Loop``: resume, epoch hooks, records, checkpoints, divergence, ``done``) into their
own output dirs.  Only the training step differs, ``PackedStep``: their
parameters are stacked (``torch.func.stack_module_state``), the algorithm's pure ``loss`` is
vmapped over the stack through ``functional_call``, and one optimizer of the runs' own class and
settings steps the stacked tensors.  Adam and SGD are elementwise, so that equals K separate
optimizers when the runs share hyperparameters and step counts.  Before every record the stack
is written back into each run's own algorithm (parameters, optimizer state sliced per run,
scheduler), so a packed run's files are those of an unpacked run, and either can resume the other.

A killed pack may leave its runs at different checkpoints (the kill fell between two of their
checkpoint writes).  The loop restarts at the smallest step; a run that is ahead rides along in
its slot without being recorded and is reloaded from its own checkpoint when the loop reaches its
step.  The records' ``wall_time`` is the pack's wall time.
"""
from __future__ import annotations

import functools
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from ..algorithms import ALGORITHMS, Algorithm
from ..algorithms.resolve import resolve_hparams
from ..datasets import DATASETS
from ..datasets.base import Batch
from ..errors import UserError
from ..networks import build_featurizer
from .records import DONE, RunArgs
from .run_dir import open_run_dir, run_logs
from .trainer import Run, RunOptions, StepStrategy, split_envs, train_runs

#: optimizers whose update is elementwise, so that one over stacked tensors equals K separate ones
ELEMENTWISE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
#: what must agree between the runs of a pack besides the resolved hparams (seeds may differ)
SHARED_ARGS = ("dataset", "dataset_args", "algorithm", "steps", "epochs", "checkpoint_freq")


def declares_packable(cls: type[Algorithm]) -> bool:
    """Only a class that sets ``packable`` itself: a subclass may have changed ``update``."""
    return bool(cls.__dict__.get("packable", False))


def pack_key(args: RunArgs) -> str | None:
    """Runs with equal keys can share a pack; None for a run that cannot be packed.

    The key leaves out only the trial and data seeds (the data seed only, under
    ``hparams_per_trial``, whose draw depends on the trial seed), so equal keys also mean equal
    resolved hyperparameters.
    """
    cls = ALGORITHMS.get(args.algorithm)
    if not declares_packable(cls):
        return None
    ds_cls = DATASETS.get(args.dataset)
    _, hp = resolve_hparams(args, ds_cls)  # uses only class attributes of the dataset
    if hp["pretrained"] not in ("none", None, "") or featurizer_blocker(
            hp["arch"], tuple(ds_cls.input_shape), hp["resnet_dropout"]):
        return None
    d = args.as_dict()
    del d["data_seed"]
    if not args.hparams_per_trial:
        del d["trial_seed"]
    return repr(sorted(d.items()))


@functools.lru_cache(maxsize=None)
def featurizer_blocker(arch: str, input_shape: tuple[int, ...], dropout: float) -> str | None:
    """``module_blocker`` of a backbone, built once (without pretrained weights, and without
    touching the caller's random state)."""
    with torch.random.fork_rng(devices=[]):
        return module_blocker(build_featurizer(arch, input_shape, dropout=dropout))


def module_blocker(module: nn.Module) -> str | None:
    """Why vmap cannot train this network exactly like K separate ones, or None."""
    if next(module.buffers(), None) is not None:
        return "its network has buffers (e.g. BatchNorm statistics), which vmap cannot update"
    owners = Counter(id(p) for m in module.modules() for p in m.parameters(recurse=False))
    if any(n > 1 for n in owners.values()):
        return "a parameter is shared between two modules (tied weights)"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules()):
        return "its network uses dropout (training-time randomness)"
    return None


def algorithm_blocker(algorithm: Algorithm) -> str | None:
    """Why this algorithm instance cannot be trained packed, or None."""
    cls = type(algorithm)
    if not declares_packable(cls):
        return f"algorithm {cls.name} does not declare packable = True (it needs a pure loss())"
    if cls.has_epoch_hooks():
        return f"algorithm {cls.name} has epoch hooks (multi-stage training)"
    reason = module_blocker(algorithm)
    if reason:
        return reason
    stateful = {k for k, v in vars(algorithm).items()
                if isinstance(v, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))}
    if not {"optimizer"} <= stateful <= {"optimizer", "scheduler"}:
        return f"it keeps optimizers {sorted(stateful)}; packing supports one `optimizer` (+ `scheduler`)"
    if not isinstance(algorithm.optimizer, ELEMENTWISE_OPTIMIZERS):
        return f"optimizer {type(algorithm.optimizer).__name__} is not elementwise"
    optimized = {id(p) for g in algorithm.optimizer.param_groups for p in g["params"]}
    if optimized != {id(p) for p in algorithm.parameters()}:
        return "its optimizer does not cover exactly the algorithm's parameters"
    return None


def check_compatible(runs: list[Run]) -> None:
    """Raise a one-line UserError unless the runs can be trained as one pack."""
    if not runs:
        raise UserError("a pack needs at least one run")
    first = runs[0]
    reason = algorithm_blocker(first.algorithm)
    if reason:
        raise UserError(f"cannot pack {first.args.dir_name()}: {reason}")
    if len({r.out_dir.resolve() for r in runs}) < len(runs):
        raise UserError("packed runs need distinct output dirs")
    for run in runs[1:]:
        diffs = [k for k in SHARED_ARGS if getattr(run.args, k) != getattr(first.args, k)]
        diffs += ["resolved hparams"] * (run.hparams != first.hparams)
        diffs += [f"{k} (derived)" for k in ("total", "freq", "device")
                  if getattr(run, k) != getattr(first, k)]
        if run.sampler.batch_sizes() != first.sampler.batch_sizes():
            diffs.append("per-environment batch sizes")
        if run.sampler.steps_per_epoch != first.sampler.steps_per_epoch:
            diffs.append("steps per epoch")
        if diffs:
            raise UserError(f"cannot pack {run.args.dir_name()} with {first.args.dir_name()}: "
                            f"they differ in {', '.join(diffs)}")


def channels_last_slices(p: Tensor) -> Tensor:
    """A stacked conv weight [K, O, C, kh, kw] laid out (K, O, kh, kw, C): vmap runs the K convs
    as one grouped conv on the [K*O, C, kh, kw] view, which is then channels_last, the layout
    oneDNN is fast at on CPU (NCHW grouped convs are 2-3x slower per image there)."""
    if p.dim() != 5:
        return p
    return p.detach().permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3).requires_grad_()


class _Loss(nn.Module):
    """``functional_call`` calls a module; this one calls the algorithm's loss."""

    def __init__(self, algorithm: Algorithm):
        super().__init__()
        self.alg = algorithm

    def forward(self, batches: list[Batch]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.alg.loss(batches)


class PackedStep(StepStrategy):
    """The training step of K compatible runs: their stacked parameters, optimizer and scheduler."""

    def __init__(self, runs: list[Run], live: list[bool]):
        super().__init__(runs, live)
        ref = runs[0]
        self.device, self.sizes = ref.device, ref.sampler.batch_sizes()
        # one name per optimized parameter, in the optimizer's order (its state_dict's indices)
        names = {id(p): n for n, p in ref.algorithm.named_parameters()}
        self.names = [names[id(p)] for g in ref.algorithm.optimizer.param_groups for p in g["params"]]
        stacked, _ = stack_module_state([run.algorithm for run in runs])
        self.params = {n: channels_last_slices(stacked[n]) for n in self.names}
        opt = ref.algorithm.optimizer
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [self.params[names[id(p)]] for p in g["params"]]} for g in opt.param_groups]
        self.optimizer = type(opt)(groups, **opt.defaults)
        self.scheduler = (ref.algorithm.make_scheduler(self.optimizer)
                          if ref.algorithm.scheduler is not None else None)
        self.module = _Loss(ref.algorithm)
        # randomness="error": packed algorithms must not draw random numbers while training
        self.vloss = torch.vmap(self._loss, randomness="error")
        self.reload(live)
        self.loss_sums: dict[str, Tensor] = {}
        self.loss_count = 0
        self.settled: set[int] = set()  # runs whose own state is current at this step
        for run in runs:
            run.log.info("training packed with %s", ", ".join(
                r.out_dir.name for r in runs if r is not run) or "no other run")

    # -- moving state between the stack and the runs --------------------------------------
    def _shaped_like(self, value: Any, i: int, stacked: bool) -> bool:
        """Optimizer state shaped like its parameter is per run; the rest (Adam's step) shared."""
        shape = self.params[self.names[i]].shape
        return isinstance(value, Tensor) and value.shape == (shape if stacked else shape[1:])

    def reload(self, live: list[bool]) -> None:
        """Stack every run's parameters and optimizer state; shared state from a live run."""
        algs = [run.algorithm for run in self.runs]
        ref = algs[live.index(True)]
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(torch.stack([alg.get_parameter(n) for alg in algs]))
        sds = [alg.optimizer.state_dict() for alg in algs]
        ref_sd = ref.optimizer.state_dict()
        state = {i: {k: torch.stack([sd["state"][i][k] for sd in sds])
                     if self._shaped_like(v, i, stacked=False) else v.clone() for k, v in s.items()}
                 for i, s in ref_sd["state"].items()}
        self.optimizer.load_state_dict({"state": state, "param_groups": ref_sd["param_groups"]})
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ref.scheduler.state_dict())

    def settle(self, r: int) -> None:
        """Put slot r of the stack and its loss sums into run r, ready for its record."""
        if r in self.settled:
            return
        self.settled.add(r)
        run = self.runs[r]
        with torch.no_grad():
            for n, p in self.params.items():
                run.algorithm.get_parameter(n).copy_(p[r])
        sd = self.optimizer.state_dict()
        state = {i: {k: v[r].clone() if self._shaped_like(v, i, stacked=True) else v.clone()
                     for k, v in s.items()}
                 for i, s in sd["state"].items()}
        run.algorithm.optimizer.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
        if self.scheduler is not None:
            run.algorithm.scheduler.load_state_dict(self.scheduler.state_dict())
        run.loss_sums = {k: v[r] for k, v in self.loss_sums.items()}
        run.loss_count = self.loss_count

    def recorded(self) -> None:
        self.loss_sums, self.loss_count = {}, 0

    # -- training ---------------------------------------------------------------------------
    def _loss(self, params: dict[str, Tensor], fields: tuple[Tensor, ...]):
        batches = split_envs(Batch(*fields), self.sizes)
        # ERM reaches its featurizer by two paths (featurizer, network.0); the module is shared, so
        # setting one path sets both, and torch's tie handling would leave plain tensors behind
        return functional_call(self.module, {f"alg.{n}": p for n, p in params.items()}, (batches,),
                               tie_weights=False)

    def step(self, batches: tuple[Batch, ...], live: list[bool]) -> None:
        """One vmapped step of all K slots; a waiting run's slot rides along until it joins."""
        fields = tuple(torch.stack(ts) for ts in zip(*(b.to(self.device).tensors() for b in batches)))
        losses, logs = self.vloss(self.params, fields)
        # run r's loss depends only on slot r: each slot gets its own gradient
        Algorithm.step_optimizer(losses.sum(), self.optimizer, self.scheduler)
        for k, v in logs.items():
            self.loss_sums[k] = self.loss_sums.get(k, 0) + v.detach()
        self.loss_count += 1
        for run, on in zip(self.runs, live):
            if on:
                run.step += 1
        self.settled.clear()


def train_packed(members: list[tuple[RunArgs, RunOptions]]) -> list[Path]:
    """Train the runs as one pack (see the module doc); returns their output dirs.  Like
    ``train``, every check comes before a run dir is touched, and each dir is held
    (``run_dir.open_run_dir``) while the pack runs."""
    dirs = [Path(opts.output_dir) for _, opts in members]
    built = [Run(args, opts) for args, opts in members if not (Path(opts.output_dir) / DONE).exists()]
    if built:
        check_compatible(built)
    with ExitStack() as held:
        for (args, _), out in zip(members, dirs):
            held.enter_context(open_run_dir(out, args))
        held.enter_context(run_logs(dirs))
        train_runs(built, PackedStep, progress=any(opts.progress for _, opts in members))
    return dirs
