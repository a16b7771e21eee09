"""The line-model anomaly tests (broad-line likelihood ratio, narrow-model χ², their
combined false-positive rate) on independent synthetic spectra."""

import numpy as np

from specsr_keras.measure.broadline import broad_line_test
from tests.synthetic_lines import C_KMS, REST, euclid_edges, line_spectrum, lsf_sigma_for_r

R = 450.0


def _spectra(n, broad_fwhm_kms=0.0, broad_ratio=0.0, noise=0.1, seed=0):
    """n Euclid-like Hα + [NII] + [SII] spectra (Hα 40, N2 −0.5, σ_v 80 km/s), optionally with a
    broad Hα of broad_ratio × the narrow flux; Gaussian noise of `noise` per pixel (narrow Hα S/N ~ 15)."""
    rng = np.random.default_rng(seed)
    edges = euclid_edges()
    z = rng.uniform(1.0, 1.6, n)
    centre = 0.5 * (edges[1:] + edges[:-1])
    flux = np.empty((n, centre.size))
    for i in range(n):
        flux[i] = line_spectrum(edges, z[i], 40.0, -0.5, 80.0, R, continuum=1.0, sii_flux=6.0)
        if broad_ratio:
            mu = REST["halpha"] * (1 + z[i])
            sigma = np.hypot(mu * broad_fwhm_kms / 2.3548 / C_KMS, lsf_sigma_for_r(mu, R))
            flux[i] += broad_ratio * 40.0 * np.exp(-0.5 * ((centre - mu) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    flux += noise * rng.standard_normal(flux.shape)
    return edges, flux, np.full(flux.shape, noise**-2), lsf_sigma_for_r(centre, R), z


def test_normal_galaxies_are_flagged_at_no_more_than_the_stated_rate():
    edges, flux, ivar, lsf, z = _spectra(400, seed=1)
    test = broad_line_test(edges, flux, ivar, lsf, z)
    assert np.mean(test["broad_line_p"] < 0.01) <= 0.02  # the p-value bounds the false-positive rate
    assert np.mean(test["broad_line_p"] < 0.2) > 0.0  # and is not vacuous (some normal fluctuations)
    # The narrow model's χ² p-value is uniform for normal galaxies; anomaly_fpr bounds the rate.
    assert 0.3 < np.median(test["narrow_model_p"]) < 0.7
    assert np.mean(test["narrow_model_p"] < 0.05) <= 0.08
    assert np.mean(test["anomaly_fpr"] < 0.01) <= 0.02


def test_a_redshift_a_few_1e4_off_keeps_the_rates():
    """The given z (a model's z_p50) is a few 1e-4 off at low S/N: the narrow model refits
    the velocity, so normal galaxies are not flagged for a misplaced line."""
    edges, flux, ivar, lsf, z = _spectra(400, seed=6)
    offset = np.where(np.arange(400) % 2, 1.0, -1.0) * 5e-4 * (1 + z)
    test = broad_line_test(edges, flux, ivar, lsf, z + offset)
    assert np.mean(test["narrow_model_p"] < 0.01) <= 0.025
    assert np.mean(test["anomaly_fpr"] < 0.01) <= 0.02


def test_bonferroni_counts_every_part_and_skips_missing_ones():
    from specsr_keras.measure.stats import bonferroni

    p = np.array([[0.01, np.nan, np.nan, 0.6], [0.5, 0.2, np.nan, 0.7]])
    np.testing.assert_allclose(bonferroni(p), [0.02, 0.4, np.nan, 1.0])


def test_a_feature_no_narrow_line_explains_fails_the_narrow_model():
    """A contaminating zeroth-order-like peak 150 Å redward of Hα, 2x its flux: not a line
    of the narrow model, nor a broad Hα; the narrow-model χ² finds it."""
    edges, flux, ivar, lsf, z = _spectra(50, seed=4)
    centre = 0.5 * (edges[1:] + edges[:-1])
    peak = REST["halpha"] * (1 + z[:, None]) + 150.0
    flux += 80.0 * np.exp(-0.5 * ((centre - peak) / 20.0) ** 2) / (np.sqrt(2 * np.pi) * 20.0)
    test = broad_line_test(edges, flux, ivar, lsf, z)
    assert np.mean(test["narrow_model_p"] < 0.01) > 0.9
    assert np.mean(test["anomaly_fpr"] < 0.01) > 0.9


def test_a_resolved_broad_halpha_is_found_with_its_width():
    edges, flux, ivar, lsf, z = _spectra(100, broad_fwhm_kms=3000.0, broad_ratio=1.5, seed=2)
    test = broad_line_test(edges, flux, ivar, lsf, z)
    # 0.78 measured (broad flux S/N ~ 10; 0.80 without the noise check of each row's pixel scatter)
    assert np.mean(test["broad_line_p"] < 0.01) > 0.7
    assert np.median(test["broad_line_fwhm_kms"]) in (2500.0, 4000.0)
    assert np.mean(test["anomaly_fpr"] < 0.01) > 0.6  # 0.69: the two parts cost a factor 2
    np.testing.assert_allclose(np.median(test["broad_line_flux"]), 60.0, rtol=0.25)


def test_rows_without_a_redshift_or_coverage_are_not_tested():
    edges, flux, ivar, lsf, z = _spectra(3, seed=3)
    z = np.array([np.nan, 5.0, z[2]])  # no z; Hα far off the grid
    test = broad_line_test(edges, flux, ivar, lsf, z)
    assert np.isnan(test["broad_line_dchi2"][:2]).all() and (test["broad_line_p"][:2] == 1).all()
    assert (test["narrow_model_p"][:2] == 1).all() and (test["anomaly_fpr"][:2] == 1).all()
    assert np.isfinite(test["broad_line_dchi2"][2])


def test_an_ivar_that_understates_the_noise_is_measured_and_does_not_flag_normal_galaxies():
    """A pipeline whose errors are 20 % too small (ivar 1.56x too large): under the stated ivar a
    typical normal galaxy's narrow-model χ² is 1.56x its dof (p ~ 1e-7 for ~100 pixels), so
    without the measured noise scale most normal galaxies would be flagged at a stated 1 %."""
    from specsr_keras.measure.broadline import noise_scale

    edges, flux, ivar, lsf, z = _spectra(300, seed=7)
    assert abs(np.median(noise_scale(flux, ivar)) - 1.0) < 0.03  # lines and continuum do not count
    assert np.std(noise_scale(flux, ivar)) < 0.1  # 1.4 / sqrt(pixels)
    np.testing.assert_allclose(np.median(noise_scale(flux, ivar / 1.25**2)), 0.8, rtol=0.03)
    overstated = broad_line_test(edges, flux, ivar / 1.25**2, lsf, z)  # errors too large: ivar used as it is
    assert np.mean(overstated["anomaly_fpr"] < 0.01) == 0.0
    understated = ivar * 1.25**2  # errors 20 % too small
    np.testing.assert_allclose(np.median(noise_scale(flux, understated)), 1.25, rtol=0.03)
    test = broad_line_test(edges, flux, understated, lsf, z)
    np.testing.assert_allclose(test["noise_scale"], noise_scale(flux, understated))
    assert np.mean(test["narrow_model_p"] < 0.01) <= 0.03 and np.mean(test["anomaly_fpr"] < 0.01) <= 0.03
    edges, flux, ivar, lsf, z = _spectra(100, broad_fwhm_kms=3000.0, broad_ratio=1.5, seed=2)
    found = broad_line_test(edges, flux, ivar * 1.25**2, lsf, z)
    assert np.mean(found["broad_line_p"] < 0.01) > 0.6  # the broad line is still found (0.8 with the right ivar)


def test_too_few_pixels_give_no_noise_scale_and_the_ivar_as_it_is():
    from specsr_keras.measure.broadline import noise_scale

    flux, ivar = np.ones((2, 40)), np.ones((2, 40))
    ivar[0, 10:] = 0.0  # 10 usable pixels: 6 triplets
    scale = noise_scale(flux, ivar)
    assert np.isnan(scale[0]) and scale[1] == 0.0  # a noiseless constant row: no scatter


def test_noise_understated_raises_no_false_alarm_and_finds_a_third_underestimate():
    from specsr_keras.measure.broadline import noise_understated

    edges, flux, ivar, lsf, z = _spectra(400, seed=11)
    assert not noise_understated(flux, ivar).any()
    assert np.mean(noise_understated(flux, ivar * 1.25**2)) > 0.4  # at the flag's limit (1.25 over 500 pixels)
    assert np.mean(noise_understated(flux, ivar * 1.5**2)) > 0.99
    assert not noise_understated(flux, ivar / 1.25**2).any()
