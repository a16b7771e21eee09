"""The flux-conserving resampler and the Gaussian LSF convolution."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsr_keras.resampling import convolve_lsf, resample_flux


def overlap_weights(edges_in, edges_out):
    """Brute-force (L_out, L_in) matrix: overlap of each pair of bins / output width."""
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.maximum(hi - lo, 0.0) / np.diff(edges_out)[:, None]


def test_resampler_conserves_flux():
    rng = np.random.default_rng(0)
    edges_in = np.linspace(10000.0, 20000.0, 2001)
    flux = rng.lognormal(size=(4, 2000))
    edges_out = np.linspace(10000.0, 20000.0, 137)
    out, _ = resample_flux(edges_in, flux, np.ones_like(flux), edges_out)
    total_in = (flux * np.diff(edges_in)).sum(-1)
    np.testing.assert_allclose((out * np.diff(edges_out)).sum(-1), total_in, rtol=1e-3)


def test_resampler_masks_uncovered_output_bins():
    edges_in = np.arange(100.0, 201.0)
    out, ivar = resample_flux(edges_in, np.ones(100), np.ones(100), np.arange(90.0, 215.0, 5.0))
    covered = (np.arange(90.0, 210.0, 5.0) >= 100.0) & (np.arange(95.0, 215.0, 5.0) <= 200.0)
    np.testing.assert_array_equal(ivar > 0, covered)
    np.testing.assert_allclose(out[covered], 1.0)
    assert np.all(out[~covered] == 0.0)


def test_resampler_accepts_per_row_output_edges():
    rng = np.random.default_rng(1)
    edges_in = np.cumsum(rng.uniform(0.5, 2.0, 301)) + 1000.0
    flux, ivar = rng.normal(size=(3, 300)), rng.uniform(0.5, 2.0, (3, 300))
    rest = np.linspace(1010.0, 1300.0, 41)
    per_row = rest * np.array([[1.0], [1.1], [1.2]])
    out, out_ivar = resample_flux(edges_in, flux, ivar, per_row)
    for row in range(3):
        expected, expected_ivar = resample_flux(edges_in, flux[row], ivar[row], per_row[row])
        np.testing.assert_allclose(out[row], expected)
        np.testing.assert_allclose(out_ivar[row], expected_ivar)
    per_row_in, _ = resample_flux(np.stack([edges_in] * 3), flux, None, rest)
    np.testing.assert_allclose(per_row_in, resample_flux(edges_in, flux, None, rest)[0])


def test_resampler_without_ivar_returns_same_flux_and_none():
    edges = np.linspace(0.0, 10.0, 11)
    flux = np.arange(10.0)
    edges_out = np.linspace(1.0, 9.0, 5)
    out, ivar = resample_flux(edges, flux, None, edges_out)
    assert ivar is None
    np.testing.assert_allclose(out, resample_flux(edges, flux, np.ones(10), edges_out)[0])


@st.composite
def grids_and_spectra(draw):
    """Random increasing input bins, flux, ivar (some masked) and output bins inside them."""
    n_in = draw(st.integers(2, 40))
    widths = draw(st.lists(st.floats(0.1, 10.0), min_size=n_in, max_size=n_in))
    edges_in = 1000.0 + np.concatenate([[0.0], np.cumsum(widths)])
    flux = np.array(draw(st.lists(st.floats(-50, 50), min_size=n_in, max_size=n_in)))
    ivar = np.array(draw(st.lists(st.floats(0.01, 100.0), min_size=n_in, max_size=n_in)))
    n_out = draw(st.integers(1, 30))
    cuts = draw(st.lists(st.floats(0.0, 1.0), min_size=n_out + 1, max_size=n_out + 1,
                         unique=True))
    edges_out = edges_in[0] + np.sort(cuts) * (edges_in[-1] - edges_in[0])
    return edges_in, flux, ivar, edges_out


@settings(max_examples=60, deadline=None)
@given(grids_and_spectra())
def test_resampler_matches_exact_overlaps_on_random_grids(case):
    edges_in, flux, ivar, edges_out = case
    if np.any(np.diff(edges_out) <= 1e-9 * edges_out[-1]):
        return
    weights = overlap_weights(edges_in, edges_out)
    out, out_ivar = resample_flux(edges_in, flux, ivar, edges_out)
    np.testing.assert_allclose(out, weights @ flux, rtol=1e-6, atol=1e-6)
    # Conservation: the integral over the output range equals that of the input.
    np.testing.assert_allclose((out * np.diff(edges_out)).sum(),
                               (weights * np.diff(edges_out)[:, None]).sum(0) @ flux,
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(1.0 / out_ivar, (weights**2) @ (1.0 / ivar), rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(grids_and_spectra(), st.data())
def test_resampler_masks_outputs_fed_by_masked_pixels(case, data):
    edges_in, flux, ivar, edges_out = case
    if np.any(np.diff(edges_out) <= 1e-9 * edges_out[-1]):
        return
    bad = data.draw(st.integers(0, flux.size - 1))
    ivar = ivar.copy()
    ivar[bad] = 0.0
    flux = flux.copy()
    flux[bad] = np.nan
    out, out_ivar = resample_flux(edges_in, flux, ivar, edges_out)
    touched = overlap_weights(edges_in, edges_out)[:, bad] > 0
    assert np.all(out_ivar[touched] == 0.0) and np.all(out[touched] == 0.0)
    assert np.all(out_ivar[~touched] > 0.0) and np.all(np.isfinite(out))


def delta_spectra(n_pix=801, centre=400):
    flux = np.zeros((2, n_pix))
    flux[:, centre] = 1.0
    return flux


def moments(wave, flux):
    total = (flux * np.gradient(wave)).sum(-1)
    mean = (flux * np.gradient(wave) * wave).sum(-1) / total
    var = (flux * np.gradient(wave) * (wave - mean[:, None]) ** 2).sum(-1) / total
    return total, mean, var


def test_convolve_lsf_conserves_flux_and_sets_width_fft_path():
    wave = np.linspace(15000.0, 17000.0, 801)  # 2.5 Å pixels
    sigma = np.array([[5.0], [12.0]])
    out = convolve_lsf(wave, delta_spectra(), sigma)
    total, mean, var = moments(wave, out)
    np.testing.assert_allclose(total, 2.5, rtol=1e-3)
    np.testing.assert_allclose(mean, wave[400], atol=1e-6)
    np.testing.assert_allclose(var, sigma[:, 0] ** 2 + 2.5**2 / 12, rtol=1e-3)


def test_convolve_lsf_wavelength_dependent_sigma_conserves_flux():
    rng = np.random.default_rng(2)
    wave = np.geomspace(12000.0, 19000.0, 1500)
    flux = np.zeros((3, 1500))
    flux[:, 200:1300] = rng.lognormal(size=(3, 1100))
    sigma = 3.0 + 4.0 * (wave - 12000.0) / 7000.0  # varies in pixel units: banded path
    out = convolve_lsf(wave, flux, sigma)
    width = np.gradient(wave)
    np.testing.assert_allclose((out * width).sum(-1), (flux * width).sum(-1), rtol=1e-3)


def test_convolve_lsf_banded_and_fft_paths_agree():
    wave = np.linspace(15000.0, 17000.0, 801)
    fft = convolve_lsf(wave, delta_spectra(), 8.0)
    nearly_constant = 8.0 * (1.0 + 0.004 * np.linspace(-1.0, 1.0, 801))  # forces banded path
    banded = convolve_lsf(wave, delta_spectra(), nearly_constant)
    np.testing.assert_allclose(banded, fft, atol=2e-3 * fft.max())


@pytest.mark.parametrize("sigma", [0.0, 1e-3])
def test_convolve_lsf_with_negligible_width_is_identity(sigma):
    flux = np.random.default_rng(3).normal(size=(2, 50))
    np.testing.assert_allclose(convolve_lsf(np.arange(50.0), flux, sigma), flux, atol=1e-9)
