#!/usr/bin/env bash
# The README's main job on a fresh machine: install, then a small local sweep (the default
# launcher: one worker per core without a GPU) and its table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DOMAINBED_SC_DATA=${DOMAINBED_SC_DATA:-$PWD/data}
OUT=${1:-runs/quickstart}
.venv/bin/domainbed-sc sweep launch sweeps/quickstart.yaml --output-root "$OUT"
.venv/bin/domainbed-sc collect "$OUT"
