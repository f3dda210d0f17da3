"""One resumable training run, ``train(RunArgs, RunOptions)``, and the loop that trains one run
or K packed ones (``Loop``; the packed step is ``packed.PackedStep``).

Order of effects, which is what makes resume exact: at each checkpoint the record is appended
first, then ``checkpoint.pt`` (model, optimizers, sampler, RNG state, step) is written
atomically.  A restarted run loads the checkpoint, drops records past its step and continues;
samplers are pure functions of the step, so the remaining batches are the ones an uninterrupted
run would draw.  ``done`` is written last.  The run dir is claimed, checked to belong to this
run and cleared of dead writers' leftovers first (``run_dir``); a non-finite loss stops the run
with a ``diverged`` marker instead.

One loop does all of this for one run or for K packed runs (docs/METHODS.md §P.7; the nanoGPT
shape: one loop, the step pluggable): ``Loop`` resumes, runs epoch hooks, steps, records and checkpoints, finishes
and logs, and a ``StepStrategy`` makes the training step: each run's ``algorithm.update``, or
``packed.PackedStep``'s vmapped step over the stacked runs.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor
from tqdm import tqdm

from ..algorithms import ALGORITHMS, Algorithm, TaskInfo
from ..algorithms.context import EpochContext, Schedule, total_steps
from ..algorithms.resolve import check_labels, resolve_hparams
from ..datasets import DATASETS, GroupDataset, load_dataset
from ..datasets.base import Batch
from ..errors import UserError
from ..hparams import seed_hash
from .eval_batch import eval_batch_size
from .evaluation import evaluate
from .events import open_events, summary_writer, write_events
from .options import RunOptions
from .records import CHECKPOINT, DONE, RESULTS, Record, RunArgs, append_record, read_records, truncate_records
from .run_dir import (last_step, load_checkpoint, mark_diverged, mark_done, open_run_dir,
                      restart_from_scratch, run_log, run_logs, save_checkpoint)
from .samplers import SAMPLERS, make_sampler, restore_sampler


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name} requested but CUDA is not available")
    return torch.device(name)


def check_run(args: RunArgs) -> None:
    """Every check of a run's arguments that needs no data: names, dataset arguments and hparam
    overrides (type and range), and the labels the algorithm and its sampler need against what
    the dataset provides with these arguments.  ``train`` and sweep validation both call this."""
    ds_cls, alg_cls = DATASETS.get(args.dataset), ALGORITHMS.get(args.algorithm)
    ds_args = ds_cls.parse_args(args.dataset_args)
    _, hparams = resolve_hparams(args, ds_cls)
    sampler = hparams["sampler"]
    needs = SAMPLERS.get(sampler).needs
    by_sampler = {needs: f"algorithm {alg_cls.name} with sampler {sampler}"} if needs else {}
    check_labels(alg_cls, hparams, args.dataset, ds_args, ds_cls.provides_for(ds_args), by_sampler)


def check_requirements(algorithm_cls: type[Algorithm], hparams: dict[str, Any], ds: GroupDataset) -> None:
    """What only the loaded data shows (``check_run`` checked the labels): the environments the
    sampler needs (uniform_env: two)."""
    min_envs = SAMPLERS.get(hparams["sampler"]).min_envs
    if ds.num_envs < min_envs:
        raise UserError(f"algorithm {algorithm_cls.name} needs at least {min_envs} training "
                        f"environments; dataset {ds.name} has {ds.num_envs}")


class Run:
    """The state of one run in progress; ``Run(...).execute()`` trains it to the end."""

    def __init__(self, args: RunArgs, opts: RunOptions):
        self.args, self.opts = args, opts
        self.out_dir = Path(opts.output_dir)
        self.log = run_log(self.out_dir)
        self.device = resolve_device(opts.device)
        check_run(args)  # bad arguments fail here, before any data is read
        self.ds = load_dataset(args.dataset, args.dataset_args, args.data_seed, opts.data_dir)
        self.alg_cls, self.hparams = resolve_hparams(args, self.ds)
        check_requirements(self.alg_cls, self.hparams, self.ds)
        self.ds.to(self.device)
        self.seed = seed_hash(args.dataset, args.algorithm, args.hparams_seed, args.trial_seed)
        train = self.ds.splits["train"]
        self.sampler = make_sampler(self.hparams["sampler"], train.g, train.e,
                                    self.hparams["batch_size"], self.seed)
        self.schedule = Schedule(self.sampler.steps_per_epoch,
                                 total_steps(args, self.sampler.steps_per_epoch))
        self.freq = args.checkpoint_freq or (self.sampler.steps_per_epoch if args.steps is None else 100)
        self.per_epoch = args.checkpoint_freq is None and args.steps is None  # follows the schedule
        self.group_counts = self.ds.train_group_counts()
        self.eval_batch_size = eval_batch_size(self.hparams.get("arch"), self.device, opts.eval_batch_size)
        self.writer_cls = summary_writer() if opts.tensorboard else None
        self.events: Any = None  # the TensorBoard writer, from resume to the end of the loop
        torch.manual_seed(self.seed)
        self.algorithm = self.alg_cls(self._task(), self.hparams).to(self.device)
        if self.device.type == "cpu":  # oneDNN's CPU convs: LeNet-5 trains 1.3x, evaluates 1.5x faster
            self.algorithm.to(memory_format=torch.channels_last)
        self.step, self.elapsed = 0, 0.0
        self.loss_sums: dict[str, Tensor] = {}
        self.loss_count = 0
        self.extra: dict[str, Any] = {}

    @property
    def total(self) -> int:
        return self.schedule.total

    def _task(self) -> TaskInfo:
        return TaskInfo(self.ds.num_classes, self.ds.num_attributes, self.ds.num_groups,
                        self.ds.num_envs, tuple(self.ds.input_shape),
                        tuple(self.group_counts.tolist()), self.sampler.steps_per_epoch, self.total)

    # -- checkpointing -------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        state = {"step": self.step, "elapsed": self.elapsed, "algorithm": self.algorithm.checkpoint_state(),
                 "schedule": dataclasses.asdict(self.schedule),
                 "sampler": self.sampler.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        save_checkpoint(state, self.out_dir / CHECKPOINT)

    def try_resume(self) -> None:
        path, log = self.out_dir / CHECKPOINT, self.log
        state = load_checkpoint(path, self.device, log)
        if state is not None and state["step"] not in {r["step"] for r in read_records(self.out_dir / RESULTS)}:
            # each checkpoint is written after its record: a missing record means results.jsonl
            # lost lines, which resuming would never write again
            restart_from_scratch(path, f"{RESULTS} has no record of checkpoint step {state['step']}", log)
            state = None
        if state is None:
            (self.out_dir / RESULTS).unlink(missing_ok=True)  # records without a checkpoint are stale
            return
        self.algorithm.load_checkpoint_state(state["algorithm"])
        self.sampler = restore_sampler(self.sampler, state["sampler"])
        torch.set_rng_state(state["rng"].cpu())
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.step, self.elapsed = state["step"], state["elapsed"]
        if "schedule" in state:  # older checkpoints: the schedule never changed
            self.schedule = Schedule(**state["schedule"])
        truncate_records(self.out_dir / RESULTS, self.step)
        log.info("resumed from step %d", self.step)

    # -- what the loop calls -----------------------------------------------------------------
    def epoch_hook(self, final: bool) -> bool:
        """The algorithm's ``on_epoch``; whether it changed the sampler or the schedule."""
        ctx = EpochContext(int(self.schedule.epoch(self.step)), self.step, final, self.ds,
                           self.sampler, self.device, self.eval_batch_size, self.out_dir,
                           args=self.args)
        self.algorithm.on_epoch(ctx)
        changed = ctx.sampler is not self.sampler or ctx.schedule is not None
        self.sampler = ctx.sampler
        self.schedule = ctx.schedule or self.schedule
        self.extra.update(ctx.extra)
        return changed

    def batch_stream(self, start: int | None = None) -> Iterator[Batch]:
        """Training batches from ``start`` (default: the current step) on; disk splits prefetch
        them with workers."""
        steps = range(self.step if start is None else start, self.total)
        return self.ds.splits["train"].batches(torch.cat(self.sampler.indices(t)) for t in steps)

    def train_step(self, batch: Batch) -> None:
        sizes = self.sampler.batch_sizes()
        for k, v in self.algorithm.update(split_envs(batch.to(self.device), sizes)).items():
            v = v.detach() if isinstance(v, Tensor) else torch.tensor(float(v))
            self.loss_sums[k] = self.loss_sums.get(k, 0) + v
        self.loss_count += 1
        self.step += 1

    def checkpoint(self, t0: float) -> Record:
        """Evaluate, append the record, then write the checkpoint (a non-finite mean loss marks
        the run diverged instead)."""
        losses = {k: float(v) / max(self.loss_count, 1) for k, v in self.loss_sums.items()}
        if not all(math.isfinite(v) for v in losses.values()):  # a sum over steps: any bad step shows
            raise mark_diverged(self.out_dir, self.step, losses)
        metrics = evaluate(self.algorithm, self.ds, self.eval_batch_size, self.device,
                           self.group_counts, self.opts.eval_train)
        self.elapsed += time.time() - t0
        record = Record(self.args.as_dict(), self.hparams, self.ds.describe(), self.step,
                        self.schedule.epoch(self.step), losses, metrics, self.elapsed,
                        str(self.device), dict(self.extra), self.algorithm.stage,
                        self.algorithm.num_stages)
        append_record(self.out_dir / RESULTS, record)
        if self.events is not None:
            write_events(self.events, record)
        self.save_checkpoint()
        self.loss_sums, self.loss_count, self.extra = {}, 0, {}
        return record

    def checkpoint_due(self) -> bool:
        """Every ``checkpoint_freq`` steps, or (the default with ``--epochs``) every epoch."""
        return self.schedule.epoch_starts(self.step) if self.per_epoch else self.step % self.freq == 0

    def execute(self) -> Path:
        """Resume this run and train it to the end (``train`` holds its dir and log around this)."""
        train_runs([self], StepStrategy, self.opts.progress)
        return self.out_dir


def split_envs(batch: Batch, sizes: list[int]) -> list[Batch]:
    """The per-environment batches (``Sampler.batch_sizes``) of one concatenated batch."""
    return [Batch(*parts) for parts in zip(*(t.split(sizes) for t in batch.tensors()))]


class StepStrategy:
    """One training step of every run in the loop: each run's own ``algorithm.update``.  The
    packed strategy (``packed.PackedStep``) instead steps K runs' stacked parameters at once and
    keeps their state until the loop asks for it (``settle``); here the runs hold it all along."""

    def __init__(self, runs: list[Run], live: list[bool]):
        self.runs = runs

    def step(self, batches: tuple[Batch, ...], live: list[bool]) -> None:
        """One step of the live runs on their batches (a waiting run's batch is ignored)."""
        for run, batch, on in zip(self.runs, batches, live):
            if on:
                run.train_step(batch)

    def settle(self, r: int) -> None:
        """Make run r's own algorithm and loss sums current: it records or runs a hook next."""

    def recorded(self) -> None:
        """The live runs have recorded: their loss sums start again."""

    def reload(self, live: list[bool]) -> None:
        """Take the runs' own state back: a hook changed it, or waiting runs joined."""


class Loop:
    """The training loop over runs that share one schedule (one run, or a pack).  Runs resumed
    from later checkpoints than others wait (``live`` False) until the loop reaches their step."""

    def __init__(self, runs: list[Run], strategy: type[StepStrategy], progress: bool):
        step = min(run.step for run in runs)
        self.runs, self.live = runs, [run.step == step for run in runs]
        self.lead = runs[self.live.index(True)]  # a live run: its step and schedule are the loop's
        self.strategy = strategy(runs, self.live)
        desc = runs[0].args.dir_name()[:40] if len(runs) == 1 else f"pack of {len(runs)}"
        self.bar = tqdm(total=self.lead.total, initial=step, disable=not progress, desc=desc,
                        mininterval=1.0, leave=False)

    def run(self) -> None:
        t0 = time.time()
        stream = self.batches()
        while self.lead.step < self.lead.total:
            if self.lead.schedule.epoch_starts(self.lead.step) and self.epoch_hooks():
                stream = self.batches()  # a hook changed the sampler or the length
                self.bar.total = self.lead.total
            self.strategy.step(next(stream), self.live)
            self.bar.update(1)
            if self.lead.checkpoint_due() and self.lead.step < self.lead.total:
                self.checkpoint(t0)
                t0 = time.time()
        self.finish(t0)
        self.bar.close()

    def batches(self) -> Iterator[tuple[Batch, ...]]:
        return zip(*(run.batch_stream(self.lead.step) for run in self.runs))

    def hook(self, r: int, final: bool) -> bool:
        """Run r's epoch hook on its settled state; whether it changed the sampler or length."""
        self.strategy.settle(r)
        return self.runs[r].epoch_hook(final)

    def epoch_hooks(self) -> bool:
        """The live runs' hooks at an epoch start, where the algorithm has one (a pack's never
        has: ``packed.algorithm_blocker``); whether one changed a sampler or the length."""
        hooked = [r for r, run in enumerate(self.runs) if self.live[r] and run.algorithm.has_epoch_hooks()]
        changed = [self.hook(r, final=False) for r in hooked]
        if hooked:
            self.strategy.reload(self.live)
        return any(changed)

    def record(self, r: int, t0: float, final: bool = False) -> None:
        run = self.runs[r]
        self.strategy.settle(r)
        rec = run.checkpoint(t0)
        run.log.info("%sstep %d %s", "final " * final, rec.step, summary(rec))
        self.bar.set_postfix_str(summary(rec), refresh=False)

    def checkpoint(self, t0: float) -> None:
        """Record and checkpoint every live run at this step; then let waiting runs join."""
        for r, live in enumerate(self.live):
            if live:
                self.record(r, t0)
        self.strategy.recorded()
        joining = [not live and run.step == self.lead.step for live, run in zip(self.live, self.runs)]
        if any(joining):
            self.live[:] = [a or b for a, b in zip(self.live, joining)]
            self.strategy.reload(self.live)

    def finish(self, t0: float) -> None:
        """The final hook and record where a run lacks its final record, then ``done``."""
        if not all(self.live):  # only if a checkpoint was off the shared checkpoint steps
            raise RuntimeError("a packed run never reached the step of its checkpoint")
        for r, run in enumerate(self.runs):
            if last_step(run.out_dir) < run.total:
                if run.algorithm.has_epoch_hooks():
                    self.hook(r, final=True)
                self.record(r, t0, final=True)
            mark_done(run.out_dir)


def open_runs(runs: list[Run]) -> list[Run]:
    """The unfinished runs, resumed from their checkpoints; finished ones get ``done``."""
    todo = []
    for run in runs:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        if (run.out_dir / DONE).exists():
            continue
        run.try_resume()
        if run.step >= run.total and last_step(run.out_dir) >= run.total:
            mark_done(run.out_dir)  # killed between its last record and `done`
            continue
        if run.writer_cls is not None:
            run.events = open_events(run.writer_cls, run.out_dir, run.step)
        todo.append(run)
    return todo


def train_runs(runs: list[Run], strategy: type[StepStrategy], progress: bool) -> None:
    """Resume the runs and train the unfinished ones to the end with ``strategy``."""
    runs = open_runs(runs)
    try:
        if runs:
            Loop(runs, strategy, progress).run()
    finally:
        for run in runs:
            if run.events is not None:
                run.events.close()


def summary(record: Record) -> str:
    return " ".join(f"{name}={m['acc']:.3f}" for name, m in record.metrics.items())


def train(args: RunArgs, opts: RunOptions) -> Path:
    run = Run(args, opts)  # every check on the arguments and data, before the dir is touched
    with open_run_dir(run.out_dir, args), run_logs([run.out_dir]):
        return run.execute()
