"""Chroma-VAE's Table 2 rows from its runs' final (stage-2) records: the z1-classifier (stage 1's
linear head on mu1, logged as ``extra.chroma_z1_acc``) beside the z2-classifier (the kNN on mu2,
the model the record's metrics score), on D_in (test_in) and D_out (test_out), mean ± std over
seeds, grouped by beta. Usage: python results/chroma_vae/z1_z2.py RUN_ROOT
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def final_record(path: Path) -> dict:
    return json.loads([line for line in path.read_text().splitlines() if line.strip()][-1])


def cell(values: list[float]) -> str:
    pct = [100 * v for v in values]
    spread = f" ± {statistics.stdev(pct):.1f}" if len(pct) > 1 else ""
    return f"{statistics.mean(pct):.1f}{spread}"


def main(root: str) -> None:
    rows: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(Path(root).glob("*/results.jsonl")):
        rec = final_record(path)
        if rec["args"]["algorithm"] != "ChromaVAE" or rec.get("stage") != rec.get("num_stages"):
            continue
        beta = rec["hparams"]["chroma_beta"]
        for split in ("test_in", "test_out"):
            rows[beta][f"z1 {split}"].append(rec["extra"]["chroma_z1_acc"][split])
            rows[beta][f"z2 {split}"].append(rec["metrics"][split]["acc"])
        rows[beta]["shift z1"].append(rec["extra"]["chroma_colour_shift_z1"])
        rows[beta]["shift z2"].append(rec["extra"]["chroma_colour_shift_z2"])
    cols = ["z1 test_in", "z1 test_out", "z2 test_in", "z2 test_out"]
    print("| beta | n | " + " | ".join(f"{c} (%)" for c in cols) + " | colour shift z1 | colour shift z2 |")
    print("|---" * (len(cols) + 4) + "|")
    for beta, r in sorted(rows.items()):
        shifts = [f"{statistics.mean(r[k]):.3f}" for k in ("shift z1", "shift z2")]
        print(f"| {beta:g} | {len(r['z1 test_in'])} | " + " | ".join(cell(r[c]) for c in cols)
              + " | " + " | ".join(shifts) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
