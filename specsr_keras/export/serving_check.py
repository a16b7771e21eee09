"""`serving-check`: load an export as TF Serving would and check every signature.

`run_serving_check(path)` starts a fresh Python process (KERAS_BACKEND=tensorflow, so
nothing of the caller's state is reused) that runs `check_export(path)`:

1. `tf.saved_model.load(path)` (timed) and a `saved_model_cli show --all`-like summary
   of its signatures;
2. sample inputs: a few galaxies simulated with `simulate_galaxies` on the export's
   instrument (or arrays from an .npz file), checked like a client request
   (`client.check_inputs`: shapes, grid length, NaN flux) — bad inputs stop the check
   with one clear line;
3. every signature called once: output names, dtypes and shapes against
   signatures.json, all values finite, call time;
4. parity: `super_resolve` samples against the Keras `SuperResolver.generate` of the run
   (`models/superres.keras`, loaded in this process under TensorFlow) on the same rows
   with the same per-row noise (`graph.sampler_noise`). The max |difference| relative to
   each object's flux scale must be <= PARITY_TOLERANCE, and the N2 medians must agree to
   N2_PARITY_DEX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from specsr_keras.export.client import check_export_files, check_inputs, load_signatures

PARITY_TOLERANCE = 1e-4
N2_PARITY_DEX = 1e-3


class ServingCheckError(ValueError):
    """A failed serving check (one line)."""


def sample_inputs(signatures: dict, n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Simulated galaxies on the export's instrument grid: every input any signature needs."""
    from specsr_keras.simulate import simulate_galaxies

    instrument = signatures["metadata"]["instrument"]["instrument"]
    batch = simulate_galaxies(n, instrument, seed=seed)
    return {
        "lowres_flux": batch["lowres_flux"],
        "lowres_ivar": batch["lowres_ivar"],
        "lowres_mask": batch["lowres_mask"].astype(np.float32),
        "z_prior": batch["z_prior"].astype(np.float32),
        "source_sigma_arcsec": batch["dispersion_sigma_arcsec"].astype(np.float32),
        "log_mstar": batch["log_mstar_catalog"].astype(np.float32),
        "seed": (seed * 1000 + np.arange(n)).astype(np.int32),
        "image": batch["image"].astype(np.float32),
    }


def describe(loaded) -> str:
    """Signatures of a loaded SavedModel, like `saved_model_cli show --all`."""
    lines = []
    for name, function in sorted(loaded.signatures.items()):
        lines.append(f"signature_def['{name}']:")
        lines.append("  inputs:")
        for key, spec in sorted(function.structured_input_signature[1].items()):
            lines.append(f"    ['{key}'] dtype: {spec.dtype.name} shape: {_shape(spec.shape)}")
        lines.append("  outputs:")
        for key, spec in sorted(function.structured_outputs.items()):
            lines.append(f"    ['{key}'] dtype: {spec.dtype.name} shape: {_shape(spec.shape)}")
    return "\n".join(lines)


def _shape(shape) -> str:
    return "(" + ", ".join("-1" if d is None else str(d) for d in shape.as_list()) + ")"


def check_export(
    path: str | Path,
    *,
    n: int = 4,
    seed: int = 0,
    run_dir: str | Path | None = None,
    inputs: str | Path | None = None,
) -> dict:
    """Run the checks (this process must be on the TensorFlow backend); returns the report."""
    import tensorflow as tf

    path = Path(path)
    try:
        check_export_files(path)
    except FileNotFoundError as exc:
        raise ServingCheckError(str(exc)) from None
    signatures = load_signatures(path)
    started = time.perf_counter()
    loaded = tf.saved_model.load(str(path))
    report = {
        "path": str(path),
        "load_seconds": round(time.perf_counter() - started, 2),
        "show": describe(loaded),
        "signatures": {},
    }
    arrays = dict(np.load(inputs)) if inputs else sample_inputs(signatures, n, seed)
    missing = set(signatures["endpoints"]) - set(loaded.signatures)
    if missing:
        raise ServingCheckError(f"{path}: signatures {', '.join(sorted(missing))} are missing")
    outputs = {}
    for name, spec in signatures["endpoints"].items():
        feed = check_inputs(signatures, name, {k: arrays[k] for k in spec["inputs"] if k in arrays})
        function = loaded.signatures[name]
        function(
            **{k: tf.constant(v) for k, v in feed.items()}
        )  # warm-up (first call builds kernels)
        started = time.perf_counter()
        result = {
            k: v.numpy()
            for k, v in function(**{k: tf.constant(v) for k, v in feed.items()}).items()
        }
        seconds = time.perf_counter() - started
        _check_outputs(name, spec["outputs"], result, len(feed[next(iter(feed))]))
        report["signatures"][name] = {"seconds": round(seconds, 3), "outputs": len(result)}
        outputs[name] = (feed, result)
    default = loaded.signatures.get("serving_default")
    if default is None or set(default.structured_outputs) != set(
        signatures["endpoints"]["super_resolve"]["outputs"]
    ):
        raise ServingCheckError(f"{path}: serving_default is not super_resolve")
    # the export's run: absolute, or relative to the SavedModel (a shipped model's "../run")
    run_dir = run_dir or path / signatures["metadata"]["run"]
    report["parity"] = parity(signatures, *outputs["super_resolve"], run_dir=run_dir)
    return report


def _check_outputs(name: str, spec: dict, result: dict, batch: int) -> None:
    if set(result) != set(spec):
        raise ServingCheckError(
            f"{name}: outputs {sorted(result)} differ from signatures.json {sorted(spec)}"
        )
    for key, io in spec.items():
        value = result[key]
        expected = [batch if s is None else s for s in io["shape"]]
        if list(value.shape) != expected or value.dtype != np.dtype(io["dtype"]):
            raise ServingCheckError(
                f"{name}/{key}: {value.dtype}{list(value.shape)}, "
                f"signatures.json says {io['dtype']}{expected}"
            )
        if not io.get("nan") and not np.all(np.isfinite(value)):
            raise ServingCheckError(f"{name}/{key}: non-finite values")


def parity(signatures: dict, feed: dict, result: dict, run_dir=None) -> dict:
    """Max |SavedModel - Keras| of the super_resolve samples relative to each object's scale."""
    import keras

    import specsr_keras.models  # noqa: F401  (registers the specsr classes)
    from specsr_keras.export.graph import sampler_noise
    from specsr_keras.models.preprocessor import SpectrumPreprocessor
    from specsr_keras.models.samplers import Sampler

    meta = signatures["metadata"]
    run_dir = Path(run_dir or meta["run"])
    model_file = run_dir / "models" / "superres.keras"
    if not model_file.is_file():
        return {"skipped": f"{model_file} not found (pass --run RUN_DIR)"}
    model = keras.saving.load_model(model_file, safe_mode=True)
    sampler = Sampler.from_config(meta["sampler"])
    preprocessor = SpectrumPreprocessor(meta["instrument"]["instrument"])
    raw = {"lowres_flux": feed["lowres_flux"], "lowres_ivar": feed["lowres_ivar"], "lowres_mask": feed["lowres_mask"],
           "z_prior": feed["z_prior"], "source_sigma_arcsec": feed["source_sigma_arcsec"],
           "log_mstar_catalog": feed["log_mstar"]}
    noise = sampler_noise(feed["seed"], sampler, sampler.samples, model.denoiser.sample_shape,
                          preprocessor.observed_pixels)
    keras_out = model.generate(raw, sampler.samples, sampler, noise=noise, preprocessor=preprocessor)
    drawn = keras.ops.convert_to_numpy(keras_out["samples"])
    scale = keras.ops.convert_to_numpy(keras_out["scale"])
    worst = float(np.max(np.abs(drawn - result["samples"]) / scale[:, None, None]))
    n2 = np.median(keras.ops.convert_to_numpy(keras_out["n2"]), axis=1)
    n2_worst = float(np.max(np.abs(n2 - np.median(result["n2"], axis=1))))
    report = {
        "max_abs_diff_relative_to_scale": worst,
        "scale_relative_diff": float(np.max(np.abs(scale - result["scale"]) / scale)),
        "n2_median_max_abs_diff_dex": n2_worst,
        "tolerance": PARITY_TOLERANCE,
        "rows": len(feed["seed"]),
        "ok": worst <= PARITY_TOLERANCE and n2_worst <= N2_PARITY_DEX,
    }
    if not report["ok"]:
        raise ServingCheckError(
            f"super_resolve differs from the Keras model by {worst:.2e} of the flux scale "
            f"(tolerance {PARITY_TOLERANCE:.0e}) and {n2_worst:.2e} dex in N2 (tolerance {N2_PARITY_DEX:.0e})"
        )
    return report


def run_serving_check(
    path: str | Path, *, n: int = 4, seed: int = 0, run_dir=None, inputs=None
) -> dict:
    """check_export in a fresh TensorFlow process; the report (ServingCheckError on failure)."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    options = {
        "n": n,
        "seed": seed,
        "run_dir": None if run_dir is None else str(run_dir),
        "inputs": None if inputs is None else str(inputs),
    }
    command = [
        sys.executable,
        "-m",
        "specsr_keras.export.serving_check",
        str(path),
        json.dumps(options),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not last.startswith("{"):
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ServingCheckError(
            lines[-1] if lines else f"serving check exited with {done.returncode}"
        )
    return json.loads(last)


def _main(argv: list[str]) -> None:
    path, options = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    try:
        report = check_export(path, **options)
    except (ValueError, FileNotFoundError, KeyError) as error:  # one line on stderr, exit 1
        sys.stderr.write(f"{path}: {error}\n")
        sys.exit(1)
    print(json.dumps(report))


if __name__ == "__main__":
    _main(sys.argv[1:])
