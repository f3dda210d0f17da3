#!/usr/bin/env bash
# The exact commands behind this directory, run from the repo root (commit in README.md).
# CMNIST (Table 2, Table 4): four reduced sweep files into one output root, each pinned to one
# core as on the shared 2-core VM (resumable: run again to continue).
for f in chroma_vae_cmnist chroma_vae_cmnist_erm chroma_vae_cmnist_beta chroma_vae_cmnist_jtt; do
  taskset -c 1 domainbed-sc sweep launch sweeps/cpu/$f.yaml --output-root /work/runs/chroma \
      --launcher parallel --workers 1
done
domainbed-sc collect /work/runs/chroma --ci --metric id_acc,ood_acc,wga --output results/chroma_vae/table_cmnist.md
python scripts/run_cost.py /work/runs/chroma
# MF-Dominoes (Table 5): the seed-0 runs of the previous session (see README.md)
domainbed-sc collect /work/runs/mfd/mf_dominoes_ERM* /work/runs/mfd_short --metric id_acc,ood_acc,wga \
    --output results/chroma_vae/table_mf_dominoes.md
