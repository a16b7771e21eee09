"""Training step time and samples/s of the super-resolver per Keras backend and model preset.

Each (backend, preset) runs in its own child process: the `decoders`-stage set-up of
`training/pipeline.py` (super-resolver with its embedders frozen, the embeddings computed
once per training set by `frozen_embeddings`, compiled with `stage.make_optimizer`: AdamW,
EMA, clipping), then `models.flops.time_train_step` (median `train_on_batch` time on one
batch of `--batch` random examples, after warm-up steps that include the compile). Training
FLOPs per example ~ 3 x the denoiser forward (forward + backward; the embedders do not run
per step); the MFU is against the best matmul rate of
the policy's dtype that the children measured. A preset that does not build or train on
a backend is recorded with its error. Writes benchmarks/results/train.json.

    python -m benchmarks.bench_train [--presets tiny,base] [--backends tensorflow,jax] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from benchmarks.bench_roofline import compute_dtype, matmul_rates, mfu
from benchmarks.common import RESULTS_DIR, machine, run_child, write_report

RESULTS = RESULTS_DIR / "train.json"
# (timed steps, warm-up steps) per preset: base is slow on a CPU.
STEPS = {"micro": (3, 1), "tiny": (5, 2), "base": (3, 1)}


def train_flops(denoiser_flops: float) -> float:
    """FLOPs per training example: denoiser forward + backward (~3 forwards)."""
    return 3 * denoiser_flops


def child(args) -> dict:
    """Step time of one preset in this process's backend."""
    import keras
    import numpy as np

    from specsr_keras.models import presets
    from specsr_keras.models.flops import count_flops, time_train_step
    from specsr_keras.models.preprocessor import STAGE_KEYS, dummy_inputs
    from specsr_keras.training.config import TrainConfig
    from specsr_keras.training.pipeline import frozen_embeddings
    from specsr_keras.training.stage import make_optimizer

    keras.config.set_dtype_policy(args.policy)
    started = time.perf_counter()
    model = presets.build_superresolver(args.preset, seed=0)
    model.spectrum_embedder.trainable = model.image_embedder.trainable = False  # as in the decoders stage
    batch = dummy_inputs(STAGE_KEYS["superres"], args.batch)
    rng = np.random.default_rng(0)
    for key in ("lowres", "lowres_on_target", "hires"):
        batch[key] = rng.normal(size=batch[key].shape).astype(np.float32)
    batch = frozen_embeddings(model, batch)
    model(batch)
    model.compile(optimizer=make_optimizer(TrainConfig(batch_size=args.batch), total_steps=1000))
    build_seconds = time.perf_counter() - started
    steps, warmup = STEPS[args.preset]
    seconds = time_train_step(model, batch, steps=steps, warmup=warmup)
    denoiser = model.denoiser
    shapes = {k: tuple(v.shape[1:]) for k, v in denoiser.input.items()}
    per_example = train_flops(count_flops(denoiser, shapes))
    dtype = compute_dtype(args.policy)
    return {"parameters": model.count_params(), "build_seconds": round(build_seconds, 1),
            "step_seconds": seconds, "samples_per_s": round(args.batch / seconds, 2),
            "train_flops_per_example": per_example, "timed_steps": steps,
            "matmul_flops_per_s": matmul_rates(args.matmul_n, [dtype])[dtype]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,base")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--policy", default="float32", help="Keras dtype policy, e.g. mixed_bfloat16 (GPU).")
    parser.add_argument("--matmul-n", type=int, default=2048, help="Matrix size of the matmul peak.")
    parser.add_argument("--timeout", type=float, default=600, help="Seconds per (backend, preset) child.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: micro preset, batch 4.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.presets, args.batch, args.matmul_n = "micro", 4, 256
    if args.child:
        print(json.dumps(child(args)))
        return {}
    runs = {}
    for backend in args.backends.split(","):
        for preset in args.presets.split(","):
            forwarded = ["--preset", preset, "--batch", str(args.batch), "--policy", args.policy,
                         "--matmul-n", str(args.matmul_n), "--child"]
            try:
                run = run_child("benchmarks.bench_train", forwarded, backend, timeout=args.timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                run = {"error": str(error).splitlines()[-1][:300]}
            runs.setdefault(backend, {})[preset] = run
    done = [run for per_preset in runs.values() for run in per_preset.values() if "error" not in run]
    peak = max((run.pop("matmul_flops_per_s") for run in done), default=float("nan"))
    for backend, per_preset in runs.items():
        for preset, run in per_preset.items():
            if "error" in run:
                print(f"{backend:>10} {preset:>5}: failed: {run['error']}")
                continue
            run["mfu"] = round(mfu(run["train_flops_per_example"], args.batch, run["step_seconds"], peak), 5)
            print(f"{backend:>10} {preset:>5}: {run['step_seconds']:.3f} s/step, {run['samples_per_s']:.1f} "
                  f"samples/s, MFU {run['mfu']:.3f}")
    report = {"benchmark": "super-resolver train step (decoders stage set-up)", "batch": args.batch,
              "policy": args.policy, "peak_gflops_per_s": round(peak / 1e9, 2), "runs": runs, "machine": machine()}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
