"""spectral/: the one keras.ops implementation of resampling, LSF, the window placement, the
instrument's forward operator and the line measurement, on both backends, against float64
numpy oracles written here (exact overlaps, the simulator's noiseless low-res spectra)."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtr

from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.models.preprocessor import clean_pixels, hires_inputs, lowres_inputs
from specsr_keras.simulate import population as P
from specsr_keras.simulate import simulate_galaxies
from specsr_keras.simulate import spectra as S
from specsr_keras.spectral import window as W
from specsr_keras.spectral.band import band_geometry, blur_rebin, convolve_uniform, resample_flux
from specsr_keras.spectral.lines import measure_windows

pytestmark = pytest.mark.keras
EUCLID = get_instrument("euclid")


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def overlap_weights(edges_in, edges_out):
    """Brute-force (L_out, L_in) float64 matrix: overlap of each pair of bins / output width."""
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.maximum(hi - lo, 0.0) / np.diff(edges_out)[:, None]


def blurred_box_oracle(edges_out, edges_in, sigma, n_sub=400):
    """Float64 (L_out, L_in): each input box blurred by N(0, sigma), averaged over output pixels
    by fine quadrature (the definition the kernel's closed form must match)."""
    weights = np.zeros((edges_out.size - 1, edges_in.size - 1))
    for j, (p, q) in enumerate(zip(edges_out[:-1], edges_out[1:], strict=True)):
        t = p + (np.arange(n_sub) + 0.5) / n_sub * (q - p)
        weights[j] = np.mean(ndtr((t[:, None] - edges_in[None, :-1]) / sigma)
                             - ndtr((t[:, None] - edges_in[None, 1:]) / sigma), axis=0)
    return weights


def test_resampler_conserves_flux():
    rng = np.random.default_rng(0)
    edges_in = np.linspace(10000.0, 20000.0, 2001)
    flux = rng.lognormal(size=(4, 2000))
    edges_out = np.linspace(10000.0, 20000.0, 137)
    out, _ = resample_flux(edges_in, flux, np.ones_like(flux), edges_out)
    total_in = (flux * np.diff(edges_in)).sum(-1)
    np.testing.assert_allclose((out * np.diff(edges_out)).sum(-1), total_in, rtol=1e-5)


def test_resampler_masks_uncovered_output_bins():
    edges_in = np.arange(100.0, 201.0)
    out, ivar = resample_flux(edges_in, np.ones(100), np.ones(100), np.arange(90.0, 215.0, 5.0))
    covered = (np.arange(90.0, 210.0, 5.0) >= 100.0) & (np.arange(95.0, 215.0, 5.0) <= 200.0)
    np.testing.assert_array_equal(ivar > 0, covered)
    np.testing.assert_allclose(out[covered], 1.0, rtol=1e-6)
    assert np.all(out[~covered] == 0.0)


def test_resampler_accepts_per_row_edges_and_no_ivar():
    rng = np.random.default_rng(1)
    edges_in = np.cumsum(rng.uniform(0.5, 2.0, 301)) + 1000.0
    flux, ivar = rng.normal(size=(3, 300)), rng.uniform(0.5, 2.0, (3, 300))
    rest = np.linspace(1010.0, 1300.0, 41)
    per_row = rest * np.array([[1.0], [1.1], [1.2]])
    out, out_ivar = resample_flux(edges_in, flux, ivar, per_row)
    for row in range(3):
        expected, expected_ivar = resample_flux(edges_in, flux[row], ivar[row], per_row[row])
        np.testing.assert_allclose(out[row], expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(out_ivar[row], expected_ivar, rtol=1e-6)
    per_row_in, none = resample_flux(np.stack([edges_in] * 3), flux, None, rest)
    assert none is None
    np.testing.assert_allclose(per_row_in, resample_flux(edges_in, flux, None, rest)[0], rtol=1e-6, atol=1e-7)


@st.composite
def grids_and_spectra(draw):
    """Random increasing input bins, flux, ivar and output bins inside them."""
    n_in = draw(st.integers(2, 40))
    widths = draw(st.lists(st.floats(0.1, 10.0), min_size=n_in, max_size=n_in))
    edges_in = 1000.0 + np.concatenate([[0.0], np.cumsum(widths)])
    flux = np.array(draw(st.lists(st.floats(-50, 50), min_size=n_in, max_size=n_in)))
    ivar = np.array(draw(st.lists(st.floats(0.01, 100.0), min_size=n_in, max_size=n_in)))
    n_out = draw(st.integers(1, 30))
    cuts = draw(st.lists(st.floats(0.0, 1.0), min_size=n_out + 1, max_size=n_out + 1, unique=True))
    edges_out = edges_in[0] + np.sort(cuts) * (edges_in[-1] - edges_in[0])
    return edges_in, flux, ivar, edges_out


@settings(max_examples=40, deadline=None)
@given(grids_and_spectra())
def test_resampler_matches_exact_overlaps_on_random_grids(case):
    edges_in, flux, ivar, edges_out = case
    if np.any(np.diff(edges_out) <= 1e-6 * edges_out[-1]):
        return
    weights = overlap_weights(edges_in, edges_out)
    out, out_ivar = resample_flux(edges_in, flux, ivar, edges_out)
    np.testing.assert_allclose(out, weights @ flux, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(1.0 / out_ivar, (weights**2) @ (1.0 / ivar), rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(grids_and_spectra(), st.data())
def test_resampler_masks_outputs_fed_by_masked_pixels(case, data):
    edges_in, flux, ivar, edges_out = case
    if np.any(np.diff(edges_out) <= 1e-6 * edges_out[-1]):
        return
    bad = data.draw(st.integers(0, flux.size - 1))
    ivar, flux = ivar.copy(), flux.copy()
    ivar[bad], flux[bad] = 0.0, np.nan
    out, out_ivar = resample_flux(edges_in, flux, ivar, edges_out)
    touched = overlap_weights(edges_in, edges_out)[:, bad] > 1e-9
    assert np.all(out_ivar[touched] == 0.0) and np.all(out[touched] == 0.0)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("sigma", [0.7, 4.0, 15.0])
def test_blur_kernel_matches_the_blurred_box_by_quadrature(sigma):
    rng = np.random.default_rng(2)
    edges_in = 500.0 + np.cumsum(np.r_[0.0, rng.uniform(0.5, 3.0, 80)])
    edges_out = np.linspace(edges_in[10], edges_in[-10], 25)
    band = band_geometry(edges_in, edges_out, reach=8 * sigma)
    flux = rng.normal(size=(1, 80))
    got = _np(blur_rebin(band, flux, np.array([sigma])))[0]
    expected = blurred_box_oracle(edges_out, edges_in, sigma) @ flux[0]
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(flux).max())


def test_fft_convolution_equals_the_band_kernel_and_conserves_flux():
    step = 1.5
    edges = np.arange(0, 3000 + step / 2, step)
    x = np.random.default_rng(0).normal(size=(3, edges.size - 1)).astype(np.float32)
    x[:, :300] = x[:, -300:] = 0
    sigma = np.array([2.0, 7.0, 20.0])
    fft = _np(convolve_uniform(x, step, sigma))
    band = _np(blur_rebin(band_geometry(edges, edges, 6 * 20), x, sigma))
    np.testing.assert_allclose(fft, band, atol=1e-5 * np.abs(band).max())
    np.testing.assert_allclose(fft.sum(-1), x.sum(-1), rtol=1e-4, atol=1e-3)


def test_window_coordinates_are_exact_to_1e_4_rest_angstrom():
    z = np.random.default_rng(1).uniform(0.85, 1.78, 64).astype(np.float32)
    pixels = W.window_pixels(EUCLID, z)
    index, edges, on = _np(pixels.index).astype(int), _np(pixels.edges), _np(pixels.on_grid) > 0
    reference = np.concatenate([EUCLID.bin_edges[index], EUCLID.bin_edges[index[:, -1:] + 1]], 1) \
        / (1 + z.astype(np.float64)[:, None]) - W.WINDOW_START
    on_edges = np.concatenate([on, on[:, -1:]], 1)
    assert np.abs(reference - edges)[on_edges].max() < 1e-4  # float32 observed Å alone: ~1e-3
    # the window lies inside the returned pixels
    assert np.all(edges[:, 0] <= 0.0) and np.all(edges[:, -1] >= W.WINDOW_BINS)


def test_to_window_matches_the_float64_resampler():
    rng = np.random.default_rng(3)
    z = rng.uniform(0.85, 1.78, 32).astype(np.float32)
    n = EUCLID.grid.n_pixels
    flux = rng.normal(size=(32, n)).astype(np.float32)
    ivar = rng.uniform(0.5, 2, (32, n)).astype(np.float32)
    ivar[:, 200:210] = 0
    got_flux, got_ivar = (_np(a) for a in W.to_window(flux, ivar, W.window_pixels(EUCLID, z)))
    edges_out = TARGET_GRID.bin_edges[None] * (1 + z.astype(np.float64)[:, None])
    weights = [overlap_weights(EUCLID.bin_edges, e) for e in edges_out]
    expected = np.stack([w @ f for w, f in zip(weights, flux.astype(np.float64), strict=True)])
    valid = got_ivar > 0
    np.testing.assert_allclose(got_flux[valid], expected[valid], atol=3e-4)
    expected_valid = np.stack([(np.abs(w.sum(1) - 1) < 1e-6) & ((w[:, 200:210] > 0).sum(1) == 0) for w in weights])
    assert (valid != expected_valid).sum() <= 2  # bins at the edge of coverage, within 1e-4 of full


@pytest.mark.parametrize("name, max_median_sigma", [("euclid", 0.01), ("roman", 0.01), ("g141", 0.05)])
def test_forward_operator_reproduces_the_simulators_noiseless_spectra(name, max_median_sigma):
    """A x_truth (the R=3600 target seen through the instrument) = the simulator's noiseless
    low-res spectrum, pixel by pixel, in units of the noise."""
    instrument = get_instrument(name)
    pop = P.draw_population(96, instrument, np.random.default_rng(3), P.SimulationOptions(contamination_fraction=0.0))
    lines = S.line_components(pop)
    model = S.lowres_spectra(pop, lines, instrument, np.random.default_rng(0), 0.0, noise_scale=1e-9)
    noise = instrument.noise_sigma(model["lowres_flux"].astype(float), pop["dispersion_sigma_arcsec"][:, None])
    hires = S.hires_spectra(pop, lines, 1.0)["hires_flux"]
    observation = W.observe(instrument, model["lowres_flux"], 1.0 / noise**2, pop["z"].astype(np.float32),
                            pop["dispersion_sigma_arcsec"])
    predicted = _np(observation.predict(keras.ops.convert_to_tensor(hires)))
    ivar = _np(observation.ivar)
    residual = (_np(observation.flux) - predicted) * np.sqrt(ivar)
    used = ivar > 0
    assert used.sum(axis=1).min() >= (8 if name == "g141" else 40)
    assert np.median(np.abs(residual[used])) < max_median_sigma
    assert np.percentile(np.abs(residual[used]), 99) < (0.5 if name == "g141" else 0.05)


def test_forward_operator_keeps_a_flat_spectrum_flat_and_counts_pixels():
    z = np.array([1.0, 1.5], np.float32)
    pixels = W.window_pixels(EUCLID, z)
    operator = W.forward_operator(pixels, W.blur_sigma_rest(EUCLID, z))
    seen = _np(keras.ops.einsum("bmi,bi->bm", operator, np.full((2, 320), 3.0, np.float32)))
    on = _np(pixels.on_grid) > 0
    np.testing.assert_allclose(seen[on], 3.0, rtol=1e-5)  # the window's ends extend as constants
    n = EUCLID.grid.n_pixels
    ivar = np.ones((2, n), np.float32)
    observation = W.observe(EUCLID, np.zeros((2, n), np.float32), ivar, z)
    count = _np(observation.count)
    expected = [((EUCLID.bin_edges[:-1] >= 6460 * (1 + zz)) & (EUCLID.bin_edges[1:] <= 6780 * (1 + zz))).sum()
                for zz in z.astype(np.float64)]
    np.testing.assert_array_equal(count, expected)
    assert np.all(_np(observation.count_between(6540.0, 6595.0)) >= 3)


def test_shift_window_conserves_flux_and_moves_lines():
    window = np.zeros((1, 320), np.float32)
    window[0, 150] = 1.0
    moved, ivar = W.shift_window(window, np.ones_like(window), np.float32([1.2]), np.float32([1.19]))
    moved = _np(moved)[0]
    assert moved.sum() * 2.19 == pytest.approx(2.2, abs=1e-5)  # flux per observed Å: bins of (1 + z) Å
    expected_centre = (6460 + 150.5) * 2.2 / 2.19 - 6460  # the line's rest position at the new placement
    assert (moved * (np.arange(320) + 0.5)).sum() / moved.sum() == pytest.approx(expected_centre, abs=0.01)
    assert _np(ivar)[0, 0] == 0 and _np(ivar)[0, -1] > 0  # the window moved red: its blue end is uncovered


@pytest.fixture(scope="module")
def galaxies():
    return simulate_galaxies(48, "euclid", seed=5)


def test_preprocessing_handles_missing_priors_and_fully_masked_rows(galaxies):
    flux, ivar = galaxies["lowres_flux"][:3].copy(), galaxies["lowres_ivar"][:3]
    mask = galaxies["lowres_mask"][:3].copy()
    flux[0, :20] = np.nan
    mask[2] = True  # everything masked
    inputs = lowres_inputs(flux, ivar, mask, EUCLID, np.array([np.nan, 1.2, -3.0], np.float32))
    for key, value in inputs.items():
        assert np.all(np.isfinite(_np(value))), key
    assert _np(inputs["lowres_weight"])[2].max() == 0.0 and _np(inputs["scale"])[2] == 1.0
    z = _np(inputs["z_place"])
    assert z[1] == pytest.approx(1.2) and z[0] == z[2] and 1.0 < z[0] < 1.6  # band centre
    cleaned_flux, cleaned_ivar = (_np(a) for a in clean_pixels(flux, ivar, mask))
    assert np.all(cleaned_ivar[0, :20] == 0) and np.all(cleaned_flux[0, :20] == 0)


def test_line_measurement_recovers_the_noiseless_truth(galaxies):
    n = len(galaxies["z"])
    placed = _np(hires_inputs(galaxies["hires_flux"], galaxies["hires_mask"], galaxies["z"].astype(np.float32),
                              galaxies["z_prior"].astype(np.float32), np.ones(n, np.float32))["hires"])
    lines = {k: _np(v)[:, 0] for k, v in measure_windows(placed[:, None, :], galaxies["z_prior"]).items()}
    narrow = ~galaxies["has_broad"]
    assert abs(np.median(lines["ha_flux"][narrow] / galaxies["ha_flux"][narrow] - 1.0)) < 0.01
    assert np.median(np.abs(lines["n2"] - galaxies["n2"])[narrow]) < 0.01
    assert np.median(np.abs(lines["z"] - galaxies["z"]) / (1 + galaxies["z"])) < 2e-5
    assert lines["ok"].mean() == 1.0


def test_observation_chi2_of_the_truth_is_about_one_per_pixel(galaxies):
    n = len(galaxies["z"])
    z_prior = galaxies["z_prior"].astype(np.float32)
    placed = _np(hires_inputs(galaxies["hires_flux"], galaxies["hires_mask"], galaxies["z"].astype(np.float32),
                              z_prior, np.ones(n, np.float32))["hires"])
    flux, ivar = clean_pixels(galaxies["lowres_flux"], galaxies["lowres_ivar"], galaxies["lowres_mask"])
    observation = W.observe(EUCLID, flux, ivar, z_prior, galaxies["dispersion_sigma_arcsec"])
    covered = placed.any(axis=1)
    reduced = _np(observation.chi2(keras.ops.convert_to_tensor(placed.astype(np.float32)))) / _np(observation.count)
    assert 0.7 < np.median(reduced[covered]) < 1.4  # the truth explains the data within the noise


def test_noise_scale_is_the_median_second_difference_of_the_usable_pixels():
    """spectral.noise against a numpy oracle: odd and even counts of usable triplets, masked
    and non-finite pixels, rows with too few triplets (NaN -> inflation 1)."""
    from specsr_keras.spectral.noise import noise_inflation, noise_scale

    rng = np.random.default_rng(3)
    ivar = rng.uniform(0.5, 4.0, (5, 300))
    flux = rng.normal(size=(5, 300)) / np.sqrt(ivar) * np.array([[1.0], [1.3], [0.7], [1.0], [1.0]])
    ivar[1, 150] = 0.0  # removes three triplets: an even count (296) becomes odd
    flux[2, 10] = np.nan
    ivar[3, 21:] = 0.0  # 21 pixels: 17 triplets, too few
    scale, count = (_np(a) for a in noise_scale(flux.astype(np.float32), ivar.astype(np.float32)))
    usable = (ivar > 0) & np.isfinite(flux)
    whitened = np.where(usable, np.nan_to_num(flux) * np.sqrt(ivar), 0.0)
    triplet = usable[:, 2:-2] & usable[:, :-4] & usable[:, 4:]
    second = np.abs(2 * whitened[:, 2:-2] - whitened[:, :-4] - whitened[:, 4:])
    for row in (0, 1, 2, 4):
        expected = 1.4826 / np.sqrt(6.0) * np.median(second[row][triplet[row]])
        assert scale[row] == pytest.approx(expected, rel=1e-5) and count[row] == triplet[row].sum()
    assert count[0] % 2 == 0 and count[1] % 2 == 1
    assert np.isnan(scale[3]) and count[3] == 17
    assert 0.85 < scale[0] < 1.15 and 1.1 < scale[1] < 1.5 and 0.55 < scale[2] < 0.85
    inflation = _np(noise_inflation(scale.astype(np.float32)))
    np.testing.assert_allclose(inflation, [max(1.0, scale[0]), scale[1], 1.0, 1.0, max(1.0, scale[4])], rtol=1e-6)


def test_preprocessing_measures_how_much_the_ivar_understates_the_noise(galaxies):
    flux, ivar, mask = galaxies["lowres_flux"], galaxies["lowres_ivar"], galaxies["lowres_mask"]
    z = galaxies["z_prior"].astype(np.float32)
    from specsr_keras.models.preprocessor import SpectrumPreprocessor

    preprocess = SpectrumPreprocessor(EUCLID.name)
    honest = _np(preprocess({"lowres_flux": flux, "lowres_ivar": ivar, "lowres_mask": mask, "z_prior": z})[0]
                 ["noise_inflation"])
    understated = _np(preprocess({"lowres_flux": flux, "lowres_ivar": ivar * 2.25, "lowres_mask": mask,
                                  "z_prior": z})[0]["noise_inflation"])  # sigma 1.5x too small
    assert np.all(honest >= 1.0) and np.median(honest) < 1.06
    np.testing.assert_allclose(np.median(understated), 1.5, rtol=0.04)
