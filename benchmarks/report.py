"""The tables ``bench.py`` prints from its ``Results`` (``r`` below)."""
from __future__ import annotations

import protocols


def table(r) -> str:
    out = core_table(r) if r.trainer is not None else ""
    if r.sweep_seconds:
        out += "\n\n" + launchers_table(r)
    if r.protocols:
        out += "\n\n" + protocols.tables(r.protocols)
    return out.strip() + f"\n\nload average before {r.load_before}, after {r.load_after}"


def core_table(r) -> str:
    from tabulate import tabulate

    peak, base = r.matmul_gflops, r.baseline.images_per_s
    rows = [["fp32 matmul peak", "", f"{peak:.1f}", "1.00", ""]]
    threads = r.machine["torch_threads"]
    for name, t in ((f"our trainer, 1 run, {threads} threads", r.trainer),
                    ("our trainer, 1 run, 1 thread", r.trainer_1_thread),
                    (f"packed, {r.sizes['pack']} runs (aggregate)", r.packed),
                    ("baseline DataLoader loop", r.baseline)):
        rows.append([f"train: {name}", f"{t.images_per_s:.0f}", f"{t.gflops:.1f}", f"{t.gflops / peak:.3f}",
                     f"{t.images_per_s / base:.2f}"])
    rows.append(["eval: our trainer (all splits)", f"{r.evaluation.images_per_s:.0f}",
                 f"{r.evaluation.gflops:.1f}", f"{r.evaluation.gflops / peak:.3f}", ""])
    out = tabulate(rows, ["", "images/s", "GFLOP/s", "/ peak", "/ baseline"], tablefmt="github")
    out += (f"\n\nLeNet-5: {r.lenet5_macs:,} MACs/image forward; training {r.train_flops_per_image / 1e6:.2f}"
            f" MFLOP/image (3 x 2 x MACs)\n\n")
    s = r.startup
    out += tabulate([["process start -> first step (median)", f"{s['to_first_step_s']:.2f}"],
                     ["python -c pass", f"{s['python_s']:.2f}"], ["python -c 'import torch'", f"{s['import_torch_s']:.2f}"],
                     ["python -c 'import torch._dynamo' (optimizers import it)", f"{s['import_torch_dynamo_s']:.2f}"],
                     ["python -c 'import domainbed_sc.training.trainer'", f"{s['import_trainer_s']:.2f}"]],
                    ["start-up", "seconds"], tablefmt="github")
    return out


def launchers_table(r) -> str:
    from tabulate import tabulate

    base_name = next(k for k in r.sweep_seconds if k.startswith("baseline"))
    base_s = r.sweep_seconds[base_name]
    rows = [[name, f"{sec:.1f}", f"{base_s / sec:.2f}"] for name, sec in r.sweep_seconds.items()]
    return tabulate(rows, [f"sweep: {r.sizes['sweep_runs']} runs x {r.sizes['sweep_steps']} steps",
                           "wall s", "baseline / this"], tablefmt="github")
