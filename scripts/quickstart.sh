#!/usr/bin/env bash
# The README's main job on a fresh machine: install, then a small local sweep (the default
# launcher: one worker per core without a GPU), its table and a report to open in a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DOMAINBED_SC_DATA=${DOMAINBED_SC_DATA:-$PWD/data}
OUT=${1:-runs/quickstart}
.venv/bin/domainbed-sc sweep launch sweeps/quickstart.yaml --output-root "$OUT"
.venv/bin/domainbed-sc collect "$OUT" --html "$OUT/report"
echo
echo "Report (tables, plots, training curves, commands): $(realpath "$OUT/report/index.html")"
echo "What the table shows: at N = 8 ERM's OOD accuracy (unseen backgrounds) collapses far below" \
     "its ID accuracy (it learned the background shortcut) while DL's stays far higher; at N = 64" \
     "(a weak shortcut) ERM's OOD accuracy matches its ID."
