#!/usr/bin/env bash
# The exact commands behind this directory, run from the repo root (commit in README.md).
taskset -c 0 domainbed-sc sweep launch sweeps/cpu/ex2l_cmnist.yaml --output-root /work/runs/ex2l \
    --launcher parallel --workers 1
# eX2L's criterion, (AA + WGA) / 2 on validation, with its early-stopping replay (the file's patience):
domainbed-sc collect /work/runs/ex2l --metric ood_acc,wga,val_acc,val_wga --output results/ex2l_cmnist_cpu/table.md \
    --plots results/ex2l_cmnist_cpu --plot-kinds groups
python scripts/run_cost.py /work/runs/ex2l
