"""Fault injection: kill, corrupt and race a toy sweep, then check that nothing was lost or mixed.

    python benchmarks/fault_injection.py [--rounds 12] [--jobs 50] [--steps 100] [--freq 10] [--seed 0]
        [--faults kill_launcher,kill_job,kill_all,race,truncate_record,corrupt_checkpoint]
        [--keep DIR] [--verbose]

Builds a sweep of ``--jobs`` toy jobs of a few steps, runs it once uninterrupted (the reference),
then, ``--rounds`` times, launches it (local or parallel launcher, in subprocesses; sometimes two
launches at once) and SIGKILLs the launcher, one job process (a parallel worker) or everything at
a random moment (half the time: just after a job of this launch wrote a checkpoint, so that the
kill lands in the middle of a job); between rounds it tears the last line of an unfinished job's results.jsonl or
writes random bytes into its checkpoint.pt.  Finally it relaunches until every job is done (at
most 3 times) and checks:

* every job is done, and finished once (its log has one "final step" line at most);
* per job, the records' steps are strictly increasing and exactly the reference's: a missing step
  is a record lost, a repeated or out-of-order one a record duplicated;
* the records equal the reference run's, field by field except wall time.

It prints the runs, the faults injected by kind, records lost, records duplicated, runs whose
records differ from the reference and jobs not done, and exits 1 if any of those is non-zero.
The defaults take a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from domainbed_sc.sweep import sweep_jobs  # noqa: E402
from domainbed_sc.sweep.jobs import Job, is_claimed  # noqa: E402
from domainbed_sc.training.records import CHECKPOINT, DONE, RESULTS  # noqa: E402

SWEEP = """datasets: [{{name: toy, dataset_args: {{n_train: 64, n_test: 64}}}}]
algorithms: [ERM]
trial_seeds: {seeds}
steps: {steps}
checkpoint_freq: {freq}
"""
KILLS = ("kill_launcher", "kill_job", "kill_all")
CORRUPTIONS = ("truncate_record", "corrupt_checkpoint")
FAULTS = (*KILLS, "race", *CORRUPTIONS)
MAX_DELAY_S = 12.0  # a kill lands at most this long after the launch (start-up takes a few s)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def launch(sweep: Path, out: Path, launcher: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "domainbed_sc", "sweep", "launch", str(sweep), "--output-root",
           str(out), "--device", "cpu", "--launcher", launcher]
    if launcher == "parallel":
        cmd += ["--workers", "2"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                            start_new_session=True)  # its own process group, workers included


def workers(pid: int) -> list[int]:
    """The spawned pool workers of a parallel launcher (not its resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for child in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill(proc: subprocess.Popen, kind: str, rng: random.Random) -> bool:
    """SIGKILL the launcher, one of its job processes, or its whole group; False if it had ended."""
    if kind == "kill_job":  # the pool starts a few seconds after the launcher
        deadline = time.time() + 5
        while not workers(proc.pid) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        pool = workers(proc.pid)
        if not pool:
            return False
        os.kill(rng.choice(pool), signal.SIGKILL)
        return True
    if proc.poll() is not None:
        return False
    if kind == "kill_launcher":
        proc.kill()
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    return True


def settle(procs: list[subprocess.Popen], grace: float) -> int:
    """Wait up to ``grace`` seconds for every process of the launches' groups to end (orphaned
    workers finish their job), then SIGKILL what is left; how many groups that hit."""
    deadline = time.time() + grace
    hit = 0
    for proc in procs:
        while time.time() < deadline and (proc.poll() is None or group_alive(proc.pid)):
            time.sleep(0.05)
        if proc.poll() is None or group_alive(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                hit += 1
            except ProcessLookupError:
                pass
        proc.wait()
    return hit


def unfinished(jobs: list[Job], needs: str) -> list[Job]:
    return [j for j in jobs if (j.dir / needs).exists() and not (j.dir / DONE).exists()
            and not is_claimed(j.dir)]


def corrupt(jobs: list[Job], kind: str, rng: random.Random, avoid: set[str]) -> Job | None:
    """Tear the last line of results.jsonl (its tail lost) or write random bytes into
    checkpoint.pt, in an unfinished job that nothing is running, preferably one not in
    ``avoid`` (corrupted before); the job, if there was one."""
    candidates = unfinished(jobs, RESULTS if kind == "truncate_record" else CHECKPOINT)
    if not candidates:
        return None
    job = rng.choice([j for j in candidates if j.name not in avoid] or candidates)
    if kind == "truncate_record":
        path = job.dir / RESULTS
        data = path.read_bytes()
        start = data.rstrip(b"\n").rfind(b"\n") + 1  # the last line
        path.write_bytes(data[:start + rng.randrange(1, max(2, len(data) - start - 1))])
    else:
        path = job.dir / CHECKPOINT
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 64)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
    return job


def wait_mid_job(jobs: list[Job], since: float, timeout: float) -> None:
    """Until an unfinished job has a checkpoint newer than ``since`` (or ``timeout`` passed)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for job in jobs:
            try:
                fresh = (job.dir / CHECKPOINT).stat().st_mtime > since
            except OSError:
                continue
            if fresh and not (job.dir / DONE).exists():
                return
        time.sleep(0.02)


def one_round(sweep: Path, out: Path, jobs: list[Job], rng: random.Random, faults: set[str],
              max_delay: float, counts: Counter, hits: dict[str, list[str]]) -> str:
    """One or two launches (a race), one kill at a random moment, then maybe corruptions; a
    line saying what happened."""
    race = "race" in faults and rng.random() < 0.3
    kills = [k for k in KILLS if k in faults]
    kind = rng.choice(kills) if kills else None
    launchers = [rng.choice(["local", "parallel"]) for _ in range(2 if race else 1)]
    if kind == "kill_job":
        launchers[0] = "parallel"  # the one with job processes of its own
    procs = [launch(sweep, out, name) for name in launchers]
    counts["race"] += race
    if rng.random() < 0.5:  # at a random moment early in the launch, while jobs remain
        time.sleep(rng.uniform(0.3, min(max_delay / 2, MAX_DELAY_S)))
    else:  # just after some job of this launch wrote a checkpoint: in the middle of a job
        wait_mid_job(jobs, time.time(), timeout=max_delay)
        time.sleep(rng.uniform(0.0, 0.1))
    done = ["no kill"]
    if kind is not None:
        landed = kill(procs[0] if kind == "kill_job" else rng.choice(procs), kind, rng)
        counts[kind] += landed
        done = [kind if landed else f"{kind} (the launch had ended)"]
    # the rest of the round's processes (a racing launcher, orphaned workers) get a moment,
    # then are killed too, so that every round leaves unfinished jobs behind
    leftover = settle(procs, grace=rng.uniform(0.0, 3.0) if kind else 60.0 + 5 * max_delay)
    counts["kill_all"] += leftover
    done += ["kill_all (what was left)"] * bool(leftover)
    for corruption in CORRUPTIONS:
        if corruption in faults and rng.random() < 0.5:
            job = corrupt(jobs, corruption, rng, avoid=set(hits))
            if job is not None:
                counts[corruption] += 1
                hits.setdefault(job.name, []).append(corruption)
                done.append(f"{corruption} {job.name}")
    finished = sum((j.dir / DONE).exists() for j in jobs)
    return f"{' + '.join(launchers)}: {', '.join(done)}; {finished}/{len(jobs)} jobs done"


def finish(sweep: Path, out: Path, jobs: list[Job], tries: int = 3) -> int:
    """Relaunch until every job is done; the number of launches it took."""
    for attempt in range(1, tries + 1):
        launch(sweep, out, "local").wait()
        if all((j.dir / DONE).exists() for j in jobs):
            return attempt
    return tries


def records(job_dir: Path) -> list[dict]:
    out = []
    if (job_dir / RESULTS).exists():
        for line in (job_dir / RESULTS).read_bytes().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            rec.pop("wall_time", None)
            out.append(rec)
    return out


PROBLEMS = ("records lost", "records duplicated", "records unlike the reference's",
            "runs differing from the reference", "jobs not done", "jobs finished more than once")


def check(jobs: list[Job], ref: dict[str, list[dict]]) -> tuple[Counter, list[str]]:
    """The counts of each kind of problem, and one line per job that has any."""
    result, lines = Counter(), []
    for job in jobs:
        before = sum(result.values())
        got, want = records(job.dir), ref[job.name]
        steps, expected = [r["step"] for r in got], [r["step"] for r in want]
        result["records lost"] += len(set(expected) - set(steps))
        repeated = len(steps) - len(set(steps))
        out_of_order = sum(a > b for a, b in zip(steps, steps[1:]))
        result["records duplicated"] += repeated + out_of_order
        by_step = {r["step"]: r for r in want}
        unlike = [r["step"] for r in got if r["step"] in by_step and r != by_step[r["step"]]]
        result["records unlike the reference's"] += len(unlike)
        result["runs differing from the reference"] += got != want
        result["jobs not done"] += not (job.dir / DONE).exists()
        log = job.dir / "log.txt"
        result["jobs finished more than once"] += (log.exists()
                                                   and log.read_text().count("final step") > 1)
        if sum(result.values()) > before:
            lines.append(f"{job.name}: steps {steps} (reference {expected}); "
                         f"unlike the reference at steps {unlike or '-'}")
    return result, lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--jobs", type=int, default=50)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--freq", type=int, default=10, help="checkpoint every FREQ steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    p.add_argument("--keep", type=Path, help="work in this directory and keep it")
    p.add_argument("--verbose", action="store_true", help="say what each round did")
    a = p.parse_args()
    faults = {f.strip() for f in a.faults.split(",") if f.strip()}
    if faults - set(FAULTS):
        p.error(f"unknown fault(s) {', '.join(sorted(faults - set(FAULTS)))}")
    rng = random.Random(a.seed)
    root = Path(a.keep or tempfile.mkdtemp(prefix="fault_injection_"))
    root.mkdir(parents=True, exist_ok=True)
    sweep = root / "faults.yaml"
    sweep.write_text(SWEEP.format(seeds=list(range(a.jobs)), steps=a.steps, freq=a.freq))
    try:
        t0 = time.time()
        launch(sweep, root / "reference", "local").wait()
        reference_s = time.time() - t0
        _, ref_jobs = sweep_jobs(sweep, root / "reference")
        ref = {j.name: records(j.dir) for j in ref_jobs}
        if not all((j.dir / DONE).exists() for j in ref_jobs):
            raise SystemExit("the reference sweep did not finish")
        _, jobs = sweep_jobs(sweep, root / "faulty")
        counts: Counter = Counter()
        hits: dict[str, list[str]] = {}
        for _ in range(a.rounds):
            line = one_round(sweep, root / "faulty", jobs, rng, faults, reference_s, counts, hits)
            if a.verbose:
                print(line, flush=True)
        launches = finish(sweep, root / "faulty", jobs)
        result, problems = check(jobs, ref)
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"runs: {len(jobs)} ({a.steps} steps, a record every {a.freq}); reference sweep "
          f"{reference_s:.1f} s; {a.rounds} rounds, then {launches} final launch(es)")
    print("faults injected: " + ", ".join(f"{k} {counts[k]}" for k in FAULTS if k in faults))
    for key in PROBLEMS:
        print(f"{key}: {result[key]}")
    for line in problems:
        name = line.split(":")[0]
        print(f"  {line}; faults on it: {', '.join(hits.get(name, [])) or 'kills only'}")
    return 1 if any(result.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
