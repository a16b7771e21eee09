"""Prior-free grism redshifts and the Martens et al. 2019 blending bias."""

import numpy as np
import pytest

from specsr_keras.measure.linefit import fit_halpha_nii
from specsr_keras.measure.redshift import centroid_redshift_ignoring_nii, coarse_redshift
from tests.synthetic_lines import euclid_edges, g141_edges, line_spectrum, lsf_sigma_for_r

C_KMS = 299792.458
# Martens et al. 2019 centroid shifts [km/s] when [NII] is ignored (docs/science.md).
MARTENS_SHIFT_KMS = {-1.2: 42.0, -0.8: 95.0, -0.5: 161.0, -0.3: 217.0}


def _pixel_lsf(edges, resolving_power):
    return lsf_sigma_for_r(0.5 * (edges[1:] + edges[:-1]), resolving_power)


def _noisy(edges, resolving_power, z, n2, noise, seed):
    rng = np.random.default_rng(seed)
    flux = np.array([
        line_spectrum(edges, zi, 100.0, ni, 100.0, resolving_power, continuum=0.3 + 0.2 * zi,
                      continuum_slope=5e-5, oversample=8)
        for zi, ni in zip(z, n2, strict=True)
    ])
    flux += rng.normal(0.0, noise, flux.shape)
    return flux, np.full_like(flux, noise**-2)


def _velocity_offset(z, z_true):
    return (z - z_true) / (1 + z_true) * C_KMS


def test_coarse_redshift_without_prior_on_euclid_spectra():
    rng = np.random.default_rng(1)
    z = rng.uniform(0.9, 1.8, 60)
    edges = euclid_edges()
    flux, ivar = _noisy(edges, 450.0, z, rng.uniform(-1.5, 0.0, 60), noise=0.1, seed=2)
    found = coarse_redshift(edges, flux, ivar, _pixel_lsf(edges, 450.0))
    dv = _velocity_offset(found["z"], z)
    assert found["ok"].all()
    assert np.median(np.abs(dv)) < 50.0
    assert np.max(np.abs(dv)) < 300.0


def test_coarse_redshift_on_g141_is_within_a_pixel():
    rng = np.random.default_rng(3)
    z = rng.uniform(0.7, 1.5, 40)
    edges = g141_edges()
    flux, ivar = _noisy(edges, 130.0, z, rng.uniform(-1.2, -0.2, 40), noise=0.05, seed=4)
    found = coarse_redshift(edges, flux, ivar, _pixel_lsf(edges, 130.0))
    pixel_kms = 46.5 / (6564.61 * (1 + z)) * C_KMS
    assert found["ok"].all()
    assert np.all(np.abs(_velocity_offset(found["z"], z)) < pixel_kms)


def test_coarse_redshift_seeds_the_fit_which_recovers_z_within_its_errors():
    rng = np.random.default_rng(5)
    z = rng.uniform(0.9, 1.8, 40)
    edges = euclid_edges()
    lsf = _pixel_lsf(edges, 450.0)
    flux, ivar = _noisy(edges, 450.0, z, np.full(40, -0.5), noise=0.05, seed=6)
    fit = fit_halpha_nii(edges, flux, ivar, lsf, coarse_redshift(edges, flux, ivar, lsf)["z"])
    pull = (fit["z"] - z) / fit["z_err"]
    assert fit["ok"].all()
    assert np.all(np.abs(pull) < 4.0)


def test_coarse_redshift_flags_masked_and_line_free_rows():
    edges = euclid_edges()
    rng = np.random.default_rng(7)
    flux, ivar = _noisy(edges, 450.0, [1.3], [-0.5], noise=0.1, seed=8)
    noise_only = rng.normal(0.0, 0.1, flux.shape)
    flux = np.vstack([flux, noise_only, flux])
    ivar = np.vstack([ivar, ivar, np.zeros_like(ivar)])
    found = coarse_redshift(edges, flux, ivar, _pixel_lsf(edges, 450.0), min_snr=6.0)
    assert list(found["ok"]) == [True, False, False]
    assert found["reason"][1] in ("low_snr", "no_detection")
    assert found["reason"][2] == "all_masked"
    assert abs(_velocity_offset(found["z"][0], 1.3)) < 100.0


@pytest.mark.parametrize("n2", sorted(MARTENS_SHIFT_KMS))
def test_centroid_ignoring_nii_is_redward_by_the_martens_shift_at_euclid_resolution(n2):
    edges = euclid_edges()
    z = np.array([1.0, 1.3, 1.6])
    flux = np.array([line_spectrum(edges, zi, 100.0, n2, 80.0, 450.0, continuum=0.3) for zi in z])
    naive = centroid_redshift_ignoring_nii(edges, flux, np.full_like(flux, 100.0),
                                           _pixel_lsf(edges, 450.0), z)
    shift = _velocity_offset(naive["z"], z)
    np.testing.assert_allclose(shift, MARTENS_SHIFT_KMS[n2], rtol=0.3)


def test_single_gaussian_fit_shift_depends_on_resolution_while_full_fit_is_unbiased():
    z = np.array([1.1, 1.4])
    shifts = {}
    for name, edges, resolving_power in [("g141", g141_edges(), 130.0),
                                         ("euclid", euclid_edges(), 450.0)]:
        flux = np.array([line_spectrum(edges, zi, 100.0, -0.3, 80.0, resolving_power) for zi in z])
        ivar, lsf = np.full_like(flux, 100.0), _pixel_lsf(edges, resolving_power)
        naive = centroid_redshift_ignoring_nii(edges, flux, ivar, lsf, z, method="gaussian")
        shifts[name] = _velocity_offset(naive["z"], z)
        full = fit_halpha_nii(edges, flux, ivar, lsf, z)
        assert np.all(np.abs(_velocity_offset(full["z"], z)) < 1.0)
    # Unresolved blend (G141): the Gaussian peak sits at the centroid (~215 km/s);
    # partly resolved (Euclid): it follows Hα more, ~140 km/s.
    np.testing.assert_allclose(shifts["g141"], 217.0, rtol=0.1)
    assert np.all((shifts["euclid"] > 100.0) & (shifts["euclid"] < 180.0))
