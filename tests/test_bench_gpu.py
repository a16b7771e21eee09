"""benchmarks/gpu.sh without a GPU (fast), and the CPU paths it calls under mixed precision
(slow: `make bench`)."""

import os
import subprocess

import pytest

from benchmarks import bench_roofline, bench_train
from benchmarks.common import ROOT


def test_gpu_script_fails_in_one_clear_line_without_a_gpu(tmp_path):
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu.sh")]).returncode == 0
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (shim / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == "gpu.sh: nvidia-smi cannot query the GPU"


@pytest.mark.slow
def test_mixed_precision_paths_of_gpu_sh_run_on_the_cpu(tmp_path):
    roofline = bench_roofline.main(["--policy", "mixed_bfloat16", "--preset", "micro", "--batches", "2,4",
                                    "--steps", "2", "--matmul-n", "1024", "--repeats", "1", "--backends", "tensorflow",
                                    "--out", str(tmp_path / "roofline.json")])
    assert roofline["mfu_reference"] == "bfloat16 matmul peak" and 0 < roofline["best_sample"]["mfu"] <= 1
    train = bench_train.main(["--policy", "mixed_bfloat16", "--presets", "micro", "--batch", "4", "--matmul-n", "1024",
                              "--backends", "jax", "--out", str(tmp_path / "train.json")])
    assert train["runs"]["jax"]["micro"]["step_seconds"] > 0
