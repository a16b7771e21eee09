#!/usr/bin/env bash
# Benchmarks on a GPU machine (written for one NVIDIA H200): the bf16/fp16/fp32 matmul
# roofline and super-resolution throughput with mixed precision (bench_roofline), speed vs
# DDIM steps with the trained model (bench_ddim_steps) and training step times
# (bench_train, mixed precision). Installs the CUDA builds of TensorFlow and JAX only if
# they do not see the GPU. Writes JSON (+ PNG) to $OUT if set, else benchmarks/results/gpu/;
# copy them to benchmarks/results/gpu/ and run `python -m benchmarks.summarize`.
# Target: >= 1000 super-resolved spectra/s at the default 10 DDIM steps.
#
#   bash benchmarks/gpu.sh            (PY=python3 by default; run from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DEST=${OUT:-benchmarks/results/gpu}
mkdir -p "$DEST"
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH="$PWD"

fail() { echo "gpu.sh: $*" >&2; exit 1; }

command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$DEST/nvidia-smi.txt" \
  || fail "nvidia-smi cannot query the GPU"
cat "$DEST/nvidia-smi.txt"

tf_sees_gpu() { "$PY" -c "import tensorflow as tf, sys; sys.exit(not tf.config.list_physical_devices('GPU'))" 2>/dev/null; }
jax_sees_gpu() { "$PY" -c "import jax, sys; sys.exit(jax.devices()[0].platform != 'gpu')" 2>/dev/null; }

"$PY" -c "import specsr_keras, keras, jax" 2>/dev/null || "$PY" -m pip install -q -e ".[jax]" \
  || fail "pip install -e .[jax] failed (no package index reachable?)"
if ! tf_sees_gpu; then  # tensorflow-cpu (the Linux default dependency) and tensorflow clash
  "$PY" -m pip uninstall -q -y tensorflow-cpu || true
  "$PY" -m pip install -q "tensorflow[and-cuda]" || fail "pip install tensorflow[and-cuda] failed"
fi
jax_sees_gpu || "$PY" -m pip install -q "jax[cuda12]" || fail "pip install jax[cuda12] failed"
tf_sees_gpu || fail "TensorFlow does not see the GPU (CUDA libraries?)"
jax_sees_gpu || fail "JAX does not see the GPU (CUDA libraries?)"

"$PY" -m benchmarks.bench_roofline --policy mixed_bfloat16 --steps 10 --batches 256,4096,16384 \
  --matmul-n 8192 --repeats 3 --out "$DEST/roofline.json"
"$PY" -m benchmarks.bench_roofline --steps 10 --batches 256,4096 --matmul-n 8192 --repeats 3 \
  --out "$DEST/roofline_float32.json"
"$PY" -m benchmarks.bench_ddim_steps --n 2048 --samples 16 --batch 1024 --backend jax \
  --out "$DEST/ddim_steps.json"
"$PY" -m benchmarks.bench_train --policy mixed_bfloat16 --batch 256 --matmul-n 8192 --out "$DEST/train.json"

"$PY" - "$DEST/roofline.json" <<'EOF'
import json, sys
best = json.load(open(sys.argv[1]))["best_sample"]
verdict = "meets" if best["spectra_per_s"] >= 1000 else "MISSES"
print(f"{best['spectra_per_s']:.0f} super-resolved spectra/s ({best['variant']}, batch {best['batch']}, "
      f"10 steps (the default), MFU {best['mfu']:.3f}): {verdict} the 1000/s target")
EOF
