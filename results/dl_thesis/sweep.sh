#!/usr/bin/env bash
# The exact commands behind this directory, run from the repo root (commits and times in README.md).
# 1. Fig. 3 (ERM vs DL, N grid, seeds 13/21/42). The first 22 runs were staged by seed in an
#    earlier session (per-seed copies of the file, identical but for `trial_seeds: [S]`; a job's
#    dir name depends only on its arguments, so they address the same job dirs); this session
#    relaunched the committed file, which skipped the 22 done jobs and ran the other 20:
domainbed-sc sweep launch sweeps/cpu/dl_mnist_cifar.yaml --output-root /work/runs/dl_thesis \
    --launcher parallel --workers 2
# 2. The lambda sweep (Figs. 5-6) and the no-background ablation (Fig. 7), one pinned worker each
#    after step 1; into the same output root, so that ERM and lambda = 1.25 at N = 4, 16 and seeds
#    13, 21 are the Fig. 3 jobs (skipped as done), not reruns:
taskset -c 0 domainbed-sc sweep launch sweeps/cpu/dl_lambda.yaml --output-root /work/runs/dl_thesis \
    --launcher parallel --workers 1
taskset -c 0 domainbed-sc sweep launch sweeps/cpu/dl_no_bg.yaml --output-root /work/runs/dl_thesis \
    --launcher parallel --workers 1
# 3. Tables and plots, each over the jobs of its own sweep file only:
jobs() { domainbed-sc sweep status "$1" --output-root /work/runs/dl_thesis |
         awk '$2 == "done" {print "/work/runs/dl_thesis/" $1}'; }
domainbed-sc collect $(jobs sweeps/cpu/dl_mnist_cifar.yaml) --selection last --ci \
    --output results/dl_thesis/table.md --plots results/dl_thesis --plot-kinds sweep
domainbed-sc collect $(jobs sweeps/cpu/dl_mnist_cifar.yaml) --selection last --ci --exclude-dead \
    --output results/dl_thesis/table_exclude_dead.md
domainbed-sc collect $(jobs sweeps/cpu/dl_lambda.yaml) $(jobs sweeps/cpu/dl_no_bg.yaml) --selection last \
    --ci --output results/dl_thesis/table_ablation.md --plots results/dl_thesis/ablation --plot-kinds sweep
python scripts/run_cost.py $(jobs sweeps/cpu/dl_mnist_cifar.yaml)
