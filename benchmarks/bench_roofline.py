"""Roofline of super-resolution inference: matmul peak, model FLOPs and MFU per backend.

Measured in one run, each Keras backend in its own child process:
- the dense matmul rate of this machine (N x N; float32, bfloat16, and float16 on a GPU)
  [FLOP/s]: the hardware limit the model is compared with (the best backend's);
- the analytic FLOPs of one denoiser forward and of the spectrum embedder per spectrum
  (`models.flops.count_flops`); one `sample()` call costs embedder + (steps + 1) forwards;
- the time of one denoiser forward (= one DDIM step) and of one whole `sample()` call
  (1 sample per spectrum, `--steps` DDIM steps) per batch, and its MFU (model-FLOP
  utilisation = model FLOP/s / matmul FLOP/s of the compute dtype), for:
  `tf_eager` / `jax_eager` (called eagerly, as the Keras predictor sampled before; JAX for
  `sample()` only, up to batch EAGER_MAX_BATCH), `tf_function` / `jax_jit` (the library's
  compiled path, `SuperResolutionPredictor.draw` for `sample()`),
  `tf_xla` (tf.function(jit_compile=True)) and `savedmodel` (the exported `super_resolve`
  signature: resampling, normalisation and in-graph line measurements included), with
  the SavedModel's parity against the Keras model (`export.serving_check.parity`);
- where the time goes: each Conv, Dense and attention layer of the denoiser timed alone at
  its shape, compiled; "glue" = the rest (group norms, SiLU, FiLM, concatenations);
- the denoiser forward under the mixed_bfloat16 policy (AMX on this CPU) against float32;
- keras' GroupNormalization against specsr's drop-in (`models.layers.GroupNormalization`,
  which every denoiser block uses) on each group norm input shape of the denoiser.
The model is the `--preset` super-resolver, randomly initialised (speed does not depend on
the weights), or `--model` (a run directory or a superres.keras file). Writes
benchmarks/results/roofline.json.

    python -m benchmarks.bench_roofline [--batches 1,32,256] [--steps 5] [--model PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, best_seconds, machine, run_child, write_report

RESULTS = RESULTS_DIR / "roofline.json"
BACKENDS = ("tensorflow", "jax")
PREFIX = {"tensorflow": "tf", "jax": "jax"}
# The library's compiled path (`specsr_keras.compile.compiled`) per backend.
COMPILED = {"tensorflow": "tf_function", "jax": "jax_jit"}
# Eager sampling is timed up to this batch only (the before/after of the compiled path);
# XLA sampling at the largest batch only (it compiles the loop for ~10 s per shape on a CPU).
EAGER_MAX_BATCH = 32
# Per-example input shapes of a spectrum embedder (low-res spectrum on ENCODER_GRID; its amplitude if it reads one).
EMBEDDER_SHAPES = {"spectrum": (512, 2), "instrument": (), "log_amplitude": ()}
LAYER_KINDS = {"Conv1D": "conv", "Conv2D": "conv", "Dense": "dense", "EinsumDense": "attention",
               "MultiHeadAttention": "attention"}


def mfu(flops_per_item: float, items: int, seconds: float, peak_flops_per_s: float) -> float:
    """Model-FLOP utilisation: achieved model FLOP/s over the hardware's peak FLOP/s."""
    return flops_per_item * items / seconds / peak_flops_per_s


def sample_flops(denoiser_flops: float, embedder_flops: float, steps: int) -> float:
    """FLOPs of `sample()` per spectrum: one embedding plus steps + 1 denoiser forwards
    (DDIM and DPM++2M both end with a network call at t = 0)."""
    return embedder_flops + (steps + 1) * denoiser_flops


def compute_dtype(policy: str) -> str:
    """The matmul dtype a Keras dtype policy computes in ("mixed_bfloat16" -> "bfloat16")."""
    return policy.removeprefix("mixed_")


# --- child: one backend ------------------------------------------------------------------

def _to_numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


def _on_gpu() -> bool:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].platform == "gpu"
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def matmul_rates(n: int, dtypes) -> dict[str, float]:
    """Dense N x N matmul rate per dtype [FLOP/s], compiled as the library compiles."""
    import keras

    from specsr_keras.backend.compile import compiled

    matmul = compiled(lambda a, b: keras.ops.matmul(a, b))
    rates = {}
    for dtype in dtypes:
        a = keras.ops.cast(keras.random.normal((n, n), seed=0), dtype)
        rates[dtype] = 2 * n**3 / best_seconds(lambda a=a: _to_numpy(matmul(a, a)), repeats=5)
    return rates


def _superresolver(args, workdir: Path):
    """(SuperResolver, run directory to export or None) for `--model` or the random preset."""
    import keras

    from specsr_keras.models import presets
    from specsr_keras.models.preprocessor import STAGE_KEYS, dummy_inputs

    if args.model:
        path = Path(args.model)
        file = path / "models" / "superres.keras" if path.is_dir() else path
        run_dir = path if (path / "run.json").is_file() else None
        return keras.saving.load_model(file, safe_mode=True), run_dir
    if keras.backend.backend() == "tensorflow" and args.policy == "float32":
        from specsr_keras.export.exporter import MODEL_FILES
        from specsr_keras.training.pipeline import SpecsrModels

        models = SpecsrModels(args.preset, 0)
        run_dir = workdir / "run"
        (run_dir / "models").mkdir(parents=True)
        for name in MODEL_FILES:
            models.get(name).save(run_dir / "models" / f"{name}.keras")
        (run_dir / "run.json").write_text(json.dumps({"backend": "tensorflow", "preset": args.preset}))
        return models.superres, run_dir
    model = presets.build_superresolver(args.preset, seed=0)
    model(dummy_inputs(STAGE_KEYS["superres"]))
    return model, None


def _model_inputs(batch: int) -> dict:
    """Random super-resolver inputs (lowres channels ~ N(0, 1), weights 1) of `batch` rows."""
    import numpy as np

    from specsr_keras.models.preprocessor import STAGE_KEYS, dummy_inputs

    rng = np.random.default_rng(batch)
    keys = [k for k in STAGE_KEYS["superres"] if not k.startswith("hires")]
    inputs = dummy_inputs(keys, batch)
    for key in ("lowres", "lowres_on_target"):
        inputs[key] = rng.normal(size=inputs[key].shape).astype(np.float32)
    return inputs


def _denoiser_inputs(shapes: dict, batch: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(batch)
    return {k: rng.uniform(size=(batch, *s)).astype(np.float32) for k, s in shapes.items()}


def time_forward(denoiser, shapes: dict, batches, repeats: int) -> dict:
    """{variant: {batch: seconds}} of one denoiser forward, compiled and eager."""
    import keras

    from specsr_keras.backend.compile import compiled

    backend = keras.backend.backend()

    def call(x):
        return denoiser(x, training=False)

    variants = {COMPILED[backend]: compiled(call)}
    if backend == "tensorflow":  # eager JAX runs op by op, compiling each: not a real path
        import tensorflow as tf

        variants.update(tf_eager=call, tf_xla=tf.function(call, jit_compile=True))
    out = {}
    for name, function in variants.items():
        out[name] = {}
        for batch in batches:
            x = keras.tree.map_structure(keras.ops.convert_to_tensor, _denoiser_inputs(shapes, batch))
            out[name][str(batch)] = best_seconds(lambda f=function, x=x: _to_numpy(f(x)), repeats)
    return out


def time_sample(model, steps: int, batches, repeats: int) -> dict:
    """{variant: {batch: seconds}} of one `sample()` call of the prior (1 sample per spectrum,
    no observation: the network's cost; the data step is timed by bench_posterior)."""
    import keras

    from specsr_keras.backend.compile import compiled
    from specsr_keras.models.diffusion import as_tensors
    from specsr_keras.models.samplers import Sampler

    backend = keras.backend.backend()
    sampler = Sampler(steps=steps, samples=1, data_consistency=False)

    def eager(inputs):
        return model.sample(inputs, 1, sampler, seed=0)

    draw = compiled(lambda inputs, noise: model.sample(inputs, 1, sampler, noise=noise))

    def compiled_path(inputs):
        rows = len(inputs["z_place"])
        return draw(as_tensors(inputs), sampler.draw_noise(rows, model.denoiser.sample_shape, seed=0))

    variants = {COMPILED[backend]: compiled_path, f"{PREFIX[backend]}_eager": eager}
    if backend == "tensorflow":
        import tensorflow as tf

        variants["tf_xla"] = tf.function(eager, jit_compile=True)
    timed_at = {name: [b for b in batches if b <= EAGER_MAX_BATCH] if name.endswith("_eager")
                else batches[-1:] if name == "tf_xla" else batches for name in variants}
    out = {}
    for name, function in variants.items():
        out[name] = {}
        for batch in timed_at[name]:
            inputs = _model_inputs(batch)
            if name == "tf_xla":
                inputs = as_tensors(inputs)
            out[name][str(batch)] = best_seconds(lambda f=function, x=inputs: _to_numpy(f(x)), repeats)
    return out


def time_savedmodel(run_dir: Path, steps: int, batches, repeats: int, workdir: Path) -> dict:
    """Export `run_dir` (2 samples, `steps` DDIM steps) and time `super_resolve` per batch;
    plus the export time and the parity of its samples with the Keras model."""
    from specsr_keras.export import export_run
    from specsr_keras.export.predictor import SavedModelPredictor
    from specsr_keras.export.serving_check import parity, sample_inputs

    started = time.perf_counter()
    summary = export_run(run_dir, name="bench", version=1, out=workdir / "saved_models",
                         sampler={"steps": steps, "samples": 2})
    export_seconds = time.perf_counter() - started
    predictor = SavedModelPredictor(summary["path"])
    seconds = {}
    for batch in batches:
        feed = sample_inputs(predictor.signatures, n=batch, seed=batch)
        batch_rows = {"lowres_flux": feed["lowres_flux"], "lowres_ivar": feed["lowres_ivar"],
                      "lowres_mask": feed["lowres_mask"]}
        seconds[str(batch)] = best_seconds(
            lambda b=batch_rows, z=feed["z_prior"]: predictor.call_graph(b, z, seed=0), repeats)
    feed = sample_inputs(predictor.signatures, n=4, seed=1)
    rows = {**feed, "log_mstar_catalog": feed["log_mstar"]}  # the catalogue column call_graph reads
    result = predictor.call_graph(rows, feed["z_prior"], seed=int(feed["seed"][0]))
    check = parity(predictor.signatures, feed, result, run_dir)
    return {"seconds": seconds, "export_seconds": round(export_seconds, 1), "parity": check}


def profile(denoiser, shapes: dict, batch: int, total_seconds: float, repeats: int) -> dict:
    """Time per layer kind of one compiled forward at `batch`: every Conv, Dense and
    attention layer timed alone at its recorded shape; glue = total - their sum."""
    import keras
    import numpy as np

    from specsr_keras.backend.compile import compiled
    from specsr_keras.models.flops import layer_flops

    kinds = {kind: {"seconds": 0.0, "flops": 0} for kind in ("conv", "attention", "dense")}
    rng = np.random.default_rng(0)
    for layer, in_shapes, flops in layer_flops(denoiser, shapes):
        kind = kinds[LAYER_KINDS[type(layer).__name__]]
        kind["flops"] += flops
        if isinstance(layer, keras.layers.EinsumDense):
            continue  # timed inside its MultiHeadAttention
        arrays = [keras.ops.convert_to_tensor(rng.normal(size=(batch, *s[1:])).astype(np.float32))
                  for s in in_shapes]
        function = compiled(layer.__call__)
        kind["seconds"] += best_seconds(lambda f=function, a=arrays: _to_numpy(f(*a)), repeats)
    glue = total_seconds - sum(k["seconds"] for k in kinds.values())
    out = {"batch": batch, "total_seconds": total_seconds,
           "seconds": {name: k["seconds"] for name, k in kinds.items()} | {"glue": glue},
           "flops_per_spectrum": {name: k["flops"] for name, k in kinds.items()}}
    out["time_fraction"] = {name: s / total_seconds for name, s in out["seconds"].items()}
    return out


def bfloat16_forward(denoiser, shapes: dict, batch: int, repeats: int) -> dict:
    """The denoiser under the mixed_bfloat16 policy vs float32 (same weights), compiled."""
    import keras
    import numpy as np

    from specsr_keras.backend.compile import compiled

    policy = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        low = type(denoiser).from_config(denoiser.get_config())
    finally:
        keras.config.set_dtype_policy(policy)
    low.set_weights(denoiser.get_weights())
    x = keras.tree.map_structure(keras.ops.convert_to_tensor, _denoiser_inputs(shapes, batch))
    seconds = {}
    outputs = {}
    for name, model in (("float32", denoiser), ("bfloat16", low)):
        function = compiled(lambda x, m=model: m(x, training=False))
        seconds[name] = best_seconds(lambda f=function: _to_numpy(f(x)), repeats)
        outputs[name] = np.asarray(_to_numpy(function(x)), np.float32)
    difference = (outputs["bfloat16"] - outputs["float32"]) / np.std(outputs["float32"])
    return {"batch": batch, "seconds": seconds, "speedup": seconds["float32"] / seconds["bfloat16"],
            "rms_diff_over_std": float(np.sqrt(np.mean(difference**2))),
            "max_abs_diff_over_std": float(np.max(np.abs(difference)))}


def group_normalization_speed(denoiser, shapes: dict, batch: int, repeats: int) -> dict:
    """Keras' GroupNormalization vs specsr's (same weights) on the input shape of each of the
    denoiser's group norms at `batch`, compiled: summed seconds, speed-up, largest difference."""
    import keras
    import numpy as np

    from specsr_keras.backend.compile import compiled

    norms = []
    for layer, in_shape in norm_inputs(denoiser, shapes):
        reference = keras.layers.GroupNormalization(layer.groups, epsilon=layer.epsilon)
        reference.build(in_shape)
        reference.set_weights(layer.get_weights())
        norms.append((reference, layer, (batch, *in_shape[1:])))
    rng = np.random.default_rng(0)
    seconds = {"keras": 0.0, "specsr": 0.0}
    largest = 0.0
    for reference, layer, shape in norms:
        x = keras.ops.convert_to_tensor(rng.normal(1.0, 2.0, size=shape).astype(np.float32))
        outputs = {}
        for name, norm in (("keras", reference), ("specsr", layer)):
            function = compiled(lambda x, n=norm: n(x))
            seconds[name] += best_seconds(lambda f=function, x=x: _to_numpy(f(x)), repeats)
            outputs[name] = np.asarray(_to_numpy(function(x)))
        largest = max(largest, float(np.max(np.abs(outputs["specsr"] - outputs["keras"]))))
    return {"batch": batch, "norms": len(norms), "seconds": seconds,
            "speedup": seconds["keras"] / seconds["specsr"], "max_abs_diff": largest}


def norm_inputs(denoiser, shapes: dict) -> list:
    """[(GroupNormalization layer, its input shape at batch 1)] of the denoiser, in call order."""
    from specsr_keras.models.flops import recorded_calls
    from specsr_keras.models.layers import GroupNormalization

    return recorded_calls(denoiser, shapes, lambda layer: isinstance(layer, GroupNormalization),
                          lambda layer, args, kwargs, output: (layer, tuple(args[0].shape)),
                          call_kwargs={"training": False})


def child(args) -> dict:
    """All measurements of this process's backend (see the module docstring).

    "phase_seconds" records the wall time of each part, compiles included.
    """
    import keras

    import specsr_keras.models  # noqa: F401  (registers the specsr classes)
    from specsr_keras.models.flops import count_flops

    keras.config.set_dtype_policy(args.policy)
    backend = keras.backend.backend()
    batches = [int(b) for b in args.batches.split(",")]
    gpu = _on_gpu()
    phases = {}

    def timed(name, function, *function_args):
        started = time.perf_counter()
        result = function(*function_args)
        phases[name] = round(time.perf_counter() - started, 1)
        print(f"[{backend}] {name}: {phases[name]} s", file=sys.stderr, flush=True)
        return result

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        model, run_dir = timed("build", _superresolver, args, workdir)
        denoiser = model.denoiser
        shapes = {k: tuple(v.shape[1:]) for k, v in denoiser.input.items()}
        dtypes = ["float32", "bfloat16"] + (["float16"] if gpu else [])
        report = {
            "backend": backend, "device": "gpu" if gpu else "cpu",
            "matmul_flops_per_s": timed("matmul", matmul_rates, args.matmul_n, dtypes),
            "parameters": model.count_params(),
            "denoiser_flops": count_flops(denoiser, shapes),
            "embedder_flops": count_flops(model.spectrum_embedder, {k: shape for k, shape in EMBEDDER_SHAPES.items()
                                                                     if k in model.spectrum_embedder.input}),
            "forward_seconds": timed("forward", time_forward, denoiser, shapes, batches, args.repeats),
            "sample_seconds": timed("sample", time_sample, model, args.steps, batches, args.repeats),
        }
        total = report["forward_seconds"][COMPILED[backend]][str(batches[-1])]
        report["profile"] = timed("profile", profile, denoiser, shapes, batches[-1], total, args.repeats)
        if args.policy == "float32":
            report["bfloat16_forward"] = timed("bfloat16", bfloat16_forward, denoiser, shapes, batches[-1],
                                               args.repeats)
            report["group_normalization"] = timed("group_normalization", group_normalization_speed, denoiser,
                                                  shapes, batches[-1], args.repeats)
        if backend == "tensorflow" and run_dir is not None and args.policy == "float32":
            report["savedmodel"] = timed("savedmodel", time_savedmodel, run_dir, args.steps, batches,
                                         args.repeats, workdir)
    report["phase_seconds"] = phases
    return report


# --- parent: all backends, MFU -----------------------------------------------------------

def with_rates(seconds: dict, flops_per_item: float, peak: float) -> dict:
    """{variant: {batch: seconds}} -> per batch {seconds, spectra_per_s, gflops_per_s, mfu}."""
    return {variant: {batch: {"seconds": round(s, 5), "spectra_per_s": round(int(batch) / s, 2),
                              "gflops_per_s": round(flops_per_item * int(batch) / s / 1e9, 3),
                              "mfu": round(mfu(flops_per_item, int(batch), s, peak), 5)}
                      for batch, s in per_batch.items()}
            for variant, per_batch in seconds.items()}


def assemble(runs: dict, args) -> dict:
    """The report from the per-backend child results."""
    dtype = compute_dtype(args.policy)
    peaks = {d: max(r["matmul_flops_per_s"][d] for r in runs.values() if d in r["matmul_flops_per_s"])
             for d in {d for r in runs.values() for d in r["matmul_flops_per_s"]}}
    first = next(iter(runs.values()))
    per_sample = sample_flops(first["denoiser_flops"], first["embedder_flops"], args.steps)
    forward, sample = {}, {}
    for run in runs.values():
        forward |= with_rates(run["forward_seconds"], run["denoiser_flops"], peaks[dtype])
        sample |= with_rates(run["sample_seconds"], per_sample, peaks[dtype])
    if "savedmodel" in runs.get("tensorflow", {}):
        sample |= with_rates({"savedmodel": runs["tensorflow"]["savedmodel"]["seconds"]}, per_sample, peaks[dtype])
    largest = str(max(int(b) for b in args.batches.split(",")))
    best_variant = max((v for v in sample if largest in sample[v]), key=lambda v: sample[v][largest]["mfu"])
    compiled_fix = {}
    for backend, run in runs.items():
        for batch, before_s in run["sample_seconds"].get(f"{PREFIX[backend]}_eager", {}).items():
            after_s = run["sample_seconds"][COMPILED[backend]][batch]
            compiled_fix[f"{backend}_batch{batch}"] = {"before_eager_s": round(before_s, 4),
                                                       "after_compiled_s": round(after_s, 4),
                                                       "speedup": round(before_s / after_s, 2)}
    report = {
        "benchmark": "super-resolution inference roofline (matmul peak, model FLOPs, MFU)",
        "model": {"source": args.model or f"{args.preset} preset, random init", "preset": args.preset,
                  "parameters": first["parameters"], "denoiser_flops": first["denoiser_flops"],
                  "embedder_flops": first["embedder_flops"], "sample_flops_per_spectrum": per_sample},
        "policy": args.policy, "steps": args.steps, "samples_per_spectrum": 1,
        "batches": [int(b) for b in args.batches.split(",")],
        "device": {b: r["device"] for b, r in runs.items()},
        "matmul_gflops_per_s": {b: {d: round(v / 1e9, 2) for d, v in r["matmul_flops_per_s"].items()}
                                for b, r in runs.items()},
        "peak_gflops_per_s": {d: round(v / 1e9, 2) for d, v in peaks.items()},
        "mfu_reference": f"{dtype} matmul peak",
        "forward": forward,
        "sample": sample,
        "best_sample": {"variant": best_variant, "batch": int(largest), **sample[best_variant][largest]},
        "fixes": {
            "compiled_predictor_sampling": compiled_fix,
            "bfloat16_forward": {b: r["bfloat16_forward"] for b, r in runs.items() if "bfloat16_forward" in r},
            "group_normalization": {b: r["group_normalization"] for b, r in runs.items()
                                    if "group_normalization" in r},
        },
        "profile": {b: r["profile"] for b, r in runs.items()},
        "savedmodel": {k: v for k, v in runs.get("tensorflow", {}).get("savedmodel", {}).items()
                       if k != "seconds"},
        "machine": machine(),
    }
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,32,256", help="Comma-separated batch sizes (spectra), ascending.")
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps of the timed sample() calls.")
    parser.add_argument("--preset", default="tiny", help="Model preset when no --model is given.")
    parser.add_argument("--model", help="Run directory or superres.keras (default: random --preset).")
    parser.add_argument("--policy", default="float32", help="Keras dtype policy, e.g. mixed_bfloat16 (GPU).")
    parser.add_argument("--matmul-n", type=int, default=2048, help="Matrix size of the matmul peak.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed calls per measurement (best kept).")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--quick", action="store_true", help="Tiny smoke run: batches 1,4, 2 steps, micro preset.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.steps, args.preset, args.matmul_n, args.repeats = "1,4", 2, "micro", 256, 1
    if args.child:
        print(json.dumps(child(args)))
        return {}
    forwarded = ["--batches", args.batches, "--steps", str(args.steps), "--preset", args.preset,
                 "--policy", args.policy, "--matmul-n", str(args.matmul_n), "--repeats", str(args.repeats),
                 *(["--model", str(Path(args.model).resolve())] if args.model else []), "--child"]
    runs = {backend: run_child("benchmarks.bench_roofline", forwarded, backend)
            for backend in args.backends.split(",")}
    report = assemble(runs, args)
    best = report["best_sample"]
    print(f"peak {report['peak_gflops_per_s']} GFLOP/s; best sample(): {best['variant']} at batch "
          f"{best['batch']}: {best['spectra_per_s']} spectra/s, MFU {best['mfu']:.3f}")
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
