#!/usr/bin/env bash
# The small MNIST-CIFAR sweep behind table.md: ERM vs DL (dl_lambda 1.25), N in {1, 8, 64},
# trial seeds 0 and 1 with data_seed = trial seed, 1 epoch each (the thesis trains 10; this is a
# CPU-sized smoke version).  Runs go to $RUNS (outside the repo); finished runs are skipped.
# Usage: results/dl_mnist_cifar_small/sweep.sh [ALGORITHM ...]   (default: ERM DL)
set -euo pipefail
RUNS=${RUNS:-/tmp/dl_mnist_cifar_small_runs}
HP='{"optimizer":"adam","lr":0.005,"batch_size":64}'
for alg in ${*:-ERM DL}; do
  hp=$HP
  [ "$alg" = DL ] && hp='{"optimizer":"adam","lr":0.005,"batch_size":64,"dl_lambda":1.25}'
  for n in 1 8 64; do
    for seed in 0 1; do
      domainbed-sc train --dataset mnist_cifar --dataset-args "{\"n_backgrounds\": $n}" \
        --algorithm "$alg" --hparams "$hp" --trial-seed "$seed" --data-seed "$seed" \
        --epochs 1 --output-root "$RUNS" --quiet
    done
  done
done
