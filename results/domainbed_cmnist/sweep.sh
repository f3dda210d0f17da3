#!/usr/bin/env bash
# The exact commands behind this directory, run from the repo root (commit in README.md).
taskset -c 0 domainbed-sc sweep launch sweeps/cpu/domainbed_cmnist.yaml --output-root /work/runs/domainbed \
    --launcher parallel --workers 1
# The sweep file's selections (training-domain validation, oracle); -90 % is the test environment:
domainbed-sc collect /work/runs/domainbed --metric ood_acc,val_acc --output results/domainbed_cmnist/table.md \
    --plots results/domainbed_cmnist --plot-kinds groups
python scripts/run_cost.py /work/runs/domainbed
