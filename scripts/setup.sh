#!/usr/bin/env bash
# Install domainbed_sc into ./.venv and put the real MNIST / FashionMNIST / CIFAR-10 files (and
# whatever else the quickstart sweep reads) into the suite's data dir ($DOMAINBED_SC_DATA,
# default ./data): copied from $DOMAINBED_SC_SHARED (default ../shared/data) where that folder
# holds them, else downloaded through the published, checksum-verified URLs ($DOMAINBED_SC_MIRROR
# replaces them). Idempotent: a second call only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU/CUDA wheels of these releases lie on this project's machines' disks.
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[test,timm,tensorboard]"

DATA=${DOMAINBED_SC_DATA:-$PWD/data}
SHARED=${DOMAINBED_SC_SHARED:-$PWD/../shared/data}
# the data step (domainbed_sc/datasets/files.py): one line saying what to copy where if it fails
.venv/bin/domainbed-sc download --data-dir "$DATA" --local-copy "$SHARED" \
    --for sweeps/quickstart.yaml mnist fashion_mnist cifar10
echo "setup: ready (venv .venv, data dir $DATA)" >&2
