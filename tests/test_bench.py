"""benchmarks/bench.py: the analytic LeNet-5 FLOP count, and a --quick smoke run on real data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
sys.path.insert(0, str(BENCH.parent))
import bench  # noqa: E402


def test_lenet5_flops_counted_by_hand():
    conv1 = 6 * 28 * 28 * (3 * 5 * 5)  # 3x32x32 -> 6x28x28, each output a 3x5x5 dot product
    conv2 = 16 * 10 * 10 * (6 * 5 * 5)  # after 2x2 pooling: 6x14x14 -> 16x10x10
    fc = 400 * 120 + 120 * 84 + 84 * 10  # after pooling: 16x5x5 = 400 features
    macs = bench.count_macs(bench.thesis_network(), bench.INPUT_SHAPE)
    assert macs == conv1 + conv2 + fc == 651_720
    assert bench.train_flops_per_image(macs) == 3 * 2 * 651_720


def test_throughput_arithmetic():
    t = bench.throughput(images=6400, seconds=2.0, flops_per_image=1e6)
    assert t.images_per_s == 3200 and t.gflops == pytest.approx(3.2)
    assert bench.matmul_peak(64, 2) > 0


def test_sections_are_checked():
    assert bench.section_list("cmnist, thesis") == ["cmnist", "thesis"]
    with pytest.raises(Exception, match="unknown section.*nope.*known: core"):
        bench.section_list("cmnist,nope")


@pytest.mark.real_data
def test_quick_bench_runs_end_to_end(real_data_dir, tmp_path):
    out = tmp_path / "bench.json"
    sections = "core,cmnist,thesis,evalbatch,gpu"  # all but the sweeps (minutes even when quick)
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--sections", sections, "--out", str(out),
                           "--data-dir", str(real_data_dir)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for name in ("cmnist", "thesis"):  # less evaluation, same records of the splits tables read
        run = result["protocols"][name]
        assert run["identical_records"] and run["train_n"]["new"] < run["train_n"]["today"]
        assert run["compared_splits"] and run["new"]["wall_s"] > 0 and run["today"]["eval_s"] > 0
    assert set(result["protocols"]["evalbatch"]["best"]) >= {"mnist_cnn", "lenet5"}
    gpu = result["protocols"]["gpu"]
    assert ("skipped" in gpu) != torch.cuda.is_available()
    assert "gpu: skipped" in proc.stdout or "pack 8" in proc.stdout
    assert result["lenet5_macs"] == 651_720
    for key in ("trainer", "packed", "evaluation", "baseline"):
        assert result[key]["images_per_s"] > 0 and result[key]["gflops"] > 0
    assert 0 < result["startup"]["to_first_step_s"] < 120
    assert "images/s" in proc.stdout and "start-up" in proc.stdout
