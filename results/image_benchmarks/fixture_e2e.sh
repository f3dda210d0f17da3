#!/usr/bin/env bash
# End-to-end check of the Waterbirds / Spawrious / CelebA pipeline on fixtures: tiny random images
# in each release's real layout (tests/fixtures_images.py), the fixture-scale sweep files beside
# this script, `sweep launch` and `collect`. Proves the loaders, every algorithm of the full
# sweeps, selection and tables run; the accuracies of random images mean nothing.
# Usage (repo root): bash results/image_benchmarks/fixture_e2e.sh [WORK_DIR]
set -euo pipefail
work=${1:-/tmp/domainbed_sc_fixture_e2e}
here=results/image_benchmarks
mkdir -p "$work/data"
PYTHONPATH=tests python - "$work/data" <<'PY'
import sys
from pathlib import Path
from fixtures_images import make_celeba, make_spawrious, make_waterbirds
data = Path(sys.argv[1])
make_waterbirds(data); make_spawrious(data, per_folder=4); make_celeba(data)
PY
for name in waterbirds spawrious celeba; do
  echo "=== $name: $(date -u +%FT%TZ)"
  DOMAINBED_SC_DATA="$work/data" domainbed-sc sweep launch "$here/fixture_sweeps/$name.yaml" \
      --output-root "$work/runs/$name" --launcher parallel --workers 1
  domainbed-sc collect "$work/runs/$name" --output "$here/fixture_$name.md"
done
echo "=== end: $(date -u +%FT%TZ)"
