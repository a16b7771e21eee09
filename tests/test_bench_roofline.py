"""The roofline benchmark: MFU arithmetic (fast) and a full run (slow: `make bench`)."""

import argparse

import pytest

from benchmarks.bench_roofline import RESULTS, assemble, compute_dtype, main, mfu, norm_inputs, sample_flops
from specsr_keras.models.presets import build_superresolver


def test_mfu_is_achieved_model_flops_over_the_peak():
    assert mfu(1e9, 10, 2.0, 1e10) == pytest.approx(0.5)


def test_sample_flops_grow_with_steps_by_one_forward_each():
    flops = [sample_flops(10.0, 3.0, steps) for steps in (5, 10, 20, 50)]
    assert flops[0] == 3.0 + 6 * 10.0
    assert all(b > a for a, b in zip(flops, flops[1:], strict=False))
    assert compute_dtype("mixed_bfloat16") == "bfloat16" and compute_dtype("float32") == "float32"


def _run(matmul, forward, sample, **extra):
    return {"device": "cpu", "matmul_flops_per_s": matmul, "parameters": 10, "denoiser_flops": 1e8,
            "embedder_flops": 1e7, "forward_seconds": forward, "sample_seconds": sample, "profile": {}, **extra}


def test_assemble_takes_the_best_backend_peak_and_reports_the_fix():
    runs = {
        "tensorflow": _run({"float32": 1e11, "bfloat16": 2e11}, {"tf_function": {"1": 0.01, "4": 0.02}},
                           {"tf_function": {"1": 0.1, "4": 0.2}, "tf_eager": {"1": 1.0}},
                           savedmodel={"seconds": {"1": 0.5, "4": 0.6}, "parity": {"ok": True}}),
        "jax": _run({"float32": 1.2e11, "bfloat16": 0.9e11}, {"jax_jit": {"1": 0.01, "4": 0.03}},
                    {"jax_jit": {"1": 0.1, "4": 0.25}}),
    }
    args = argparse.Namespace(policy="float32", steps=5, batches="1,4", model=None, preset="tiny")
    report = assemble(runs, args)
    assert report["peak_gflops_per_s"] == {"float32": 120.0, "bfloat16": 200.0}
    per_spectrum = 1e7 + 6 * 1e8
    assert report["sample"]["savedmodel"]["4"]["mfu"] == pytest.approx(per_spectrum * 4 / 0.6 / 1.2e11, rel=1e-3)
    assert report["best_sample"]["variant"] == "tf_function" and report["best_sample"]["batch"] == 4
    assert report["fixes"]["compiled_predictor_sampling"]["tensorflow_batch1"]["speedup"] == 10.0
    assert report["savedmodel"] == {"parity": {"ok": True}}


@pytest.mark.keras
def test_norm_inputs_finds_every_group_norm_of_the_denoiser_once_with_its_input_shape():
    denoiser = build_superresolver("micro", seed=0).denoiser
    shapes = {k: tuple(v.shape[1:]) for k, v in denoiser.input.items()}
    records = norm_inputs(denoiser, shapes)
    blocks = [layer for layer in denoiser.layers if type(layer).__name__ == "ResidualBlock"]
    attention = [layer for layer in denoiser.layers if type(layer).__name__ == "SelfAttention"]
    assert len(records) == 2 * len(blocks) + len(attention) + 1  # + the output norm
    assert len({id(layer) for layer, _ in records}) == len(records)
    assert all(shape[0] == 1 and shape[-1] == layer.gamma.shape[0] for layer, shape in records)


@pytest.mark.slow
def test_roofline_measures_mfu_of_every_path_and_savedmodel_parity():
    report = main([])
    assert RESULTS.is_file()
    assert report["peak_gflops_per_s"]["float32"] > 0 and report["peak_gflops_per_s"]["bfloat16"] > 0
    assert set(report["forward"]) == {"tf_eager", "tf_function", "tf_xla", "jax_jit"}
    assert {"tf_function", "tf_xla", "jax_jit", "savedmodel"} <= set(report["sample"])
    for kind in ("forward", "sample"):
        for variant, per_batch in report[kind].items():
            for batch, rates in per_batch.items():
                assert 0 < rates["mfu"] <= 1, (kind, variant, batch)
    assert report["savedmodel"]["parity"]["ok"]
    for profile in report["profile"].values():
        assert sum(profile["time_fraction"].values()) == pytest.approx(1.0)
    assert report["fixes"]["compiled_predictor_sampling"]
    for backend, norms in report["fixes"]["group_normalization"].items():
        assert norms["norms"] > 0 and norms["max_abs_diff"] < 1e-4, backend  # the same numbers as keras'
