#!/usr/bin/env bash
# The exact commands behind this directory (run from /work/wt/h8 at commit 1957f3d on 2026-12-02).
# Step 1 (run once by hand): per-seed copies of sweeps/cpu/dl_mnist_cifar.yaml, identical but for
# `trial_seeds: [S]`, so that every (N, method) cell gets seed 13 before any gets seed 21. A job's
# dir name depends only on its train arguments, so these copies and the committed file address
# the same job dirs and the last launch below finds the staged jobs done.
#   for s in 13 21 42; do mkdir -p /work/runs/dl_thesis_stages/s$s
#     sed "s/^trial_seeds: .*/trial_seeds: [$s]/" sweeps/cpu/dl_mnist_cifar.yaml \
#       > /work/runs/dl_thesis_stages/s$s/dl_mnist_cifar.yaml; done
# Step 2, started as `nohup nice -n 19 /work/runs/dl_thesis_stages/run.sh > /work/runs/dl_thesis.log 2>&1 &`
# (this file's body below is that run.sh):
cd /work/wt/h8
export PYTHONPATH=$PWD DOMAINBED_SC_DATA=/work/main/data
for s in 13 21 42; do
  echo "=== stage seed $s: $(date -u +%FT%TZ)"
  /work/main/.venv/bin/python -m domainbed_sc sweep launch /work/runs/dl_thesis_stages/s$s/dl_mnist_cifar.yaml \
      --output-root /work/runs/dl_thesis --launcher parallel --workers 2
done
echo "=== full file: $(date -u +%FT%TZ)"
/work/main/.venv/bin/python -m domainbed_sc sweep launch sweeps/cpu/dl_mnist_cifar.yaml \
    --output-root /work/runs/dl_thesis --launcher parallel --workers 2
echo "=== end: $(date -u +%FT%TZ)"
# Step 3, the tables and plots (the committed ones were made at the time given in README.md):
#   domainbed-sc collect /work/runs/dl_thesis --selection last --ci \
#       --output results/dl_thesis/table.md --plots results/dl_thesis --plot-kinds sweep
#   and the same with --exclude-dead --output results/dl_thesis/table_exclude_dead.md (no plots)
