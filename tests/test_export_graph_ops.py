"""models/graph_ops.py: the in-graph resampler, preprocessing, line estimator and chi2."""

import keras
import numpy as np
import pytest

from specsr_keras.inference.superres_predictor import forward_model_chi2
from specsr_keras.instruments import ENCODER_GRID, TARGET_GRID, get_instrument
from specsr_keras.measure.intervals import predictive_percentiles
from specsr_keras.models import graph_ops
from specsr_keras.models.preprocessor import hires_inputs, lowres_inputs
from specsr_keras.resampling import resample_flux
from specsr_keras.simulate import simulate_galaxies

pytestmark = pytest.mark.keras

EUCLID = get_instrument("euclid")


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def galaxies():
    return simulate_galaxies(24, "euclid", seed=3)


def _random_rows(rng, rows, pixels, masked=0.05):
    flux = rng.normal(1.0, 2.0, (rows, pixels)).astype(np.float32)
    ivar = rng.uniform(0.1, 3.0, (rows, pixels)).astype(np.float32)
    ivar[rng.random((rows, pixels)) < masked] = 0.0
    return flux, ivar


# Observed wavelengths need float64 in the graph: TensorFlow (the export backend) has it,
# JAX without jax_enable_x64 silently computes in float32 (~1e-3 Å errors).
needs_float64 = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="float64 wavelength arithmetic needs the TensorFlow backend (the export backend)",
)


@needs_float64
def test_graph_resampler_equals_numpy_resampler():
    rng = np.random.default_rng(1)
    flux, ivar = _random_rows(rng, 9, EUCLID.bin_edges.size - 1)
    z = rng.uniform(0.8, 1.8, 9)
    windows = TARGET_GRID.bin_edges[None] * (1 + z[:, None])
    for edges_out in (ENCODER_GRID.bin_edges, windows):  # shared and per-row output edges
        expected_flux, expected_ivar = resample_flux(EUCLID.bin_edges, flux, ivar, edges_out)
        got_flux, got_ivar = map(
            _np, graph_ops.resample_flux(EUCLID.bin_edges, flux, ivar, edges_out)
        )
        np.testing.assert_allclose(got_flux, expected_flux, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_ivar, expected_ivar, rtol=1e-5, atol=1e-5)
        assert ((got_ivar > 0) == (expected_ivar > 0)).all()
    # Per-row input edges onto a shared grid (the re-observation direction).
    hires = rng.normal(1.0, 1.0, (9, 320))
    expected, covered = resample_flux(
        windows,
        hires,
        np.ones_like(hires),
        np.broadcast_to(EUCLID.bin_edges, (9, EUCLID.bin_edges.size)),
    )
    got, got_covered = map(
        _np, graph_ops.resample_flux(windows, hires, np.ones_like(hires), EUCLID.bin_edges)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (covered > 0).sum() > 100 and ((got_covered > 0) == (covered > 0)).all()


@needs_float64
def test_graph_model_inputs_equal_preprocessor(galaxies):
    z = galaxies["z_prior"].astype(np.float32)
    expected = lowres_inputs(
        galaxies["lowres_flux"],
        galaxies["lowres_ivar"],
        galaxies["lowres_mask"],
        EUCLID,
        z.astype(np.float64),
    )
    got = graph_ops.lowres_model_inputs(
        galaxies["lowres_flux"],
        galaxies["lowres_ivar"],
        galaxies["lowres_mask"].astype(np.float32),
        z,
        EUCLID,
    )
    for key in ("lowres", "lowres_weight", "lowres_on_target", "lowres_on_target_weight", "scale"):
        np.testing.assert_allclose(_np(got[key]), expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_bad_pixels_and_missing_prior_never_give_nan():
    rng = np.random.default_rng(2)
    flux, ivar = _random_rows(rng, 3, EUCLID.bin_edges.size - 1)
    flux[0, :40] = np.nan
    ivar[1, 10:20] = np.nan
    mask = np.zeros_like(flux)
    mask[2] = 1.0  # everything masked
    z_place = graph_ops.placement_redshift(np.array([np.nan, 1.2, -3.0], np.float32), EUCLID)
    inputs = graph_ops.lowres_model_inputs(flux, ivar, mask, z_place, EUCLID)
    for key, value in inputs.items():
        assert np.all(np.isfinite(_np(value))), key
    assert _np(inputs["lowres_weight"])[2].max() == 0.0 and _np(inputs["scale"])[2] == 1.0
    z = _np(z_place)
    assert z[1] == pytest.approx(1.2) and z[0] == z[2] and 1.0 < z[0] < 1.6  # band centre


def test_line_estimator_recovers_noiseless_truth(galaxies):
    n = len(galaxies["z"])
    placed = hires_inputs(
        galaxies["hires_flux"],
        galaxies["hires_mask"],
        galaxies["z"],
        galaxies["z_prior"],
        np.ones(n),
    )["hires"]  # physical: scale 1
    lines = {
        k: _np(v)[:, 0]
        for k, v in graph_ops.measure_lines(
            placed[:, None, :], galaxies["z_prior"], np.ones(n)
        ).items()
    }
    ha = lines["ha_flux"] / galaxies["ha_flux"] - 1.0
    assert abs(np.median(ha)) < 0.04
    assert np.median(np.abs(lines["n2"] - galaxies["n2"])) < 0.03
    assert np.median(np.abs(lines["z"] - galaxies["z"]) / (1 + galaxies["z"])) < 3e-5


def test_reobservation_chi2_matches_numpy_forward_model(galaxies):
    n = len(galaxies["z"])
    placed = hires_inputs(
        galaxies["hires_flux"],
        galaxies["hires_mask"],
        galaxies["z"],
        galaxies["z_prior"],
        np.ones(n),
    )["hires"]
    batch = {k: galaxies[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask")}
    expected = forward_model_chi2(placed.astype(float), galaxies["z_prior"], batch, EUCLID.name)
    flux, ivar = graph_ops.clean_lowres(
        batch["lowres_flux"], batch["lowres_ivar"], batch["lowres_mask"]
    )
    got = _np(graph_ops.reobserve_chi2(placed, galaxies["z_prior"], flux, ivar, EUCLID))
    np.testing.assert_allclose(got, expected, rtol=0.03)
    assert 0.5 < np.median(got) < 1.5  # the truth explains the data


@pytest.mark.parametrize("k", [7, 8])
def test_predictive_percentiles_match_numpy(k):
    x = np.random.default_rng(4).normal(size=(5, k)).astype(np.float32)
    got = graph_ops.predictive_percentiles(x, [2.5, 16.0, 50.0, 84.0], axis=1)
    np.testing.assert_allclose(
        np.stack([_np(g) for g in got]),
        np.stack(predictive_percentiles(x, [2.5, 16, 50, 84], axis=1)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_cross_modal_disagreement_is_one_minus_cosine():
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    b = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(_np(graph_ops.cross_modal_disagreement(a, b)), [0.0, 1.0], atol=1e-6)
