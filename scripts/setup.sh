#!/usr/bin/env bash
# Install domainbed_sc into ./.venv and put the real MNIST / FashionMNIST / CIFAR-10 files into
# the suite's data dir ($DOMAINBED_SC_DATA, default ./data), copied from $DOMAINBED_SC_SHARED
# (default ../shared/data). Idempotent: a second call only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU/CUDA wheels of these releases lie on this project's machines' disks.
python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
python -m pip install -q -e ".[test,timm]"

DATA=${DOMAINBED_SC_DATA:-$PWD/data}
SHARED=${DOMAINBED_SC_SHARED:-$PWD/../shared/data}
mkdir -p "$DATA"
if [ -d "$SHARED" ]; then
    for item in MNIST FashionMNIST cifar10.npz; do
        [ -e "$DATA/$item" ] || cp -r "$SHARED/$item" "$DATA/"
    done
else
    echo "setup: no shared data at $SHARED; get it with: .venv/bin/domainbed-sc download all --data-dir $DATA" >&2
fi
echo "setup: ready (venv .venv, data dir $DATA)" >&2
