#!/usr/bin/env bash
# The exact commands behind this directory, run from the repo root (commit in README.md).
# Launch (resumable: run it again to continue), pinned to one core as on the shared 2-core VM:
taskset -c 1 domainbed-sc sweep launch sweeps/cpu/rcl_mnist_mp.yaml --output-root /work/runs/rcl \
    --launcher parallel --workers 1
# Tables (the sweep file's selections: best_val_acc and early_stop_val_acc) and cost:
domainbed-sc collect /work/runs/rcl --metric val_acc,ood_acc,wga --ci --output results/rcl_mnist_mp/table.md \
    --html results/rcl_mnist_mp/report
python scripts/run_cost.py /work/runs/rcl
