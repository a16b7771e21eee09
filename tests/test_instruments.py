"""Instrument registry: grids, resolving powers, source-size LSF and calibrated noise."""

import numpy as np
import pytest

from specsr_keras.instruments import (
    ENCODER_GRID,
    INSTRUMENT_NAMES,
    TARGET_GRID,
    dispersion_axis_sigma,
    get_instrument,
)
from specsr_keras.physics import FWHM_PER_SIGMA


def test_instrument_ids_follow_name_order():
    assert INSTRUMENT_NAMES == ("hst_g141", "euclid_nisp_red", "roman_grism", "mosfire_j",
                                "mosfire_h", "mosfire_k")
    assert [get_instrument(name).instrument_id for name in INSTRUMENT_NAMES] == list(range(6))


@pytest.mark.parametrize("alias, name", [("euclid", "euclid_nisp_red"), ("g141", "hst_g141"),
                                         ("3dhst", "hst_g141"), ("Roman", "roman_grism")])
def test_aliases_resolve_to_canonical_names(alias, name):
    assert get_instrument(alias).name == name


def test_unknown_instrument_is_one_line_value_error():
    with pytest.raises(ValueError, match="unknown instrument 'jwst'") as info:
        get_instrument("jwst")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, start, stop, pixel", [
    ("hst_g141", 10750.0, 17000.0, 46.5), ("euclid_nisp_red", 12060.0, 18920.0, 13.7),
    ("roman_grism", 10000.0, 19300.0, 10.8), ("mosfire_h", 14680.0, 18040.0, 1.63)])
def test_grids_have_quoted_range_and_pixel(name, start, stop, pixel):
    inst = get_instrument(name)
    np.testing.assert_allclose(np.diff(inst.bin_edges), pixel, rtol=1e-9)
    assert inst.bin_edges[0] == start
    assert stop - pixel < inst.bin_edges[-1] <= stop
    np.testing.assert_allclose(inst.wavelength, 0.5 * (inst.bin_edges[1:] + inst.bin_edges[:-1]))


def test_target_and_encoder_grids_follow_contract():
    assert TARGET_GRID.n_pixels == 320 and TARGET_GRID.frame == "rest"
    np.testing.assert_allclose(np.diff(TARGET_GRID.bin_edges), 1.0)
    assert (TARGET_GRID.bin_edges[0], TARGET_GRID.bin_edges[-1]) == (6460.0, 6780.0)
    np.testing.assert_allclose(TARGET_GRID.lsf_sigma(6564.61), 6564.61 / (3600 * FWHM_PER_SIGMA))
    ratios = ENCODER_GRID.bin_edges[1:] / ENCODER_GRID.bin_edges[:-1]
    assert ENCODER_GRID.n_pixels == 512
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)
    np.testing.assert_allclose(ENCODER_GRID.bin_edges[[0, -1]], [10000.0, 19400.0])


def test_resolving_powers_match_quoted_values():
    assert get_instrument("hst_g141").resolving_power(14000.0) == pytest.approx(130.0, rel=1e-6)
    euclid = get_instrument("euclid_nisp_red")
    half_arcsec_source = 0.5 / FWHM_PER_SIGMA
    assert euclid.resolving_power(15500.0, half_arcsec_source) == pytest.approx(450.0, rel=1e-6)
    wave = np.array([10000.0, 15000.0, 19000.0])
    np.testing.assert_allclose(get_instrument("roman").resolving_power(wave), 461.0 * wave / 1e4,
                               rtol=1e-6)
    np.testing.assert_allclose(get_instrument("mosfire_h").resolving_power(wave), 3660.0)


def test_source_size_broadens_slitless_lsf_only():
    euclid, mosfire = get_instrument("euclid"), get_instrument("mosfire_k")
    point = euclid.lsf_sigma(15000.0)
    size = np.array([0.0, 0.3, 1.0])
    expected = np.sqrt(point**2 + (size / 0.3 * 13.7) ** 2)
    np.testing.assert_allclose(euclid.lsf_sigma(15000.0, size), expected, rtol=1e-9)
    np.testing.assert_allclose(mosfire.lsf_sigma(22000.0, size), mosfire.lsf_sigma(22000.0))
    assert euclid.lsf_sigma(np.full((2, 5), 15000.0), size[:2, None]).shape == (2, 5)


def test_line_limits_reproduce_quoted_sensitivities():
    # Euclid: 2e-16 erg/s/cm² at 3.5 sigma for a point source (docs/science.md).
    assert get_instrument("euclid").line_snr(20.0, 15500.0) == pytest.approx(3.5, rel=1e-9)
    # 3D-HST: 1.5e-17 at 3 sigma for point sources (Momcheva et al. 2016).
    assert get_instrument("g141").line_snr(1.5, 14000.0) == pytest.approx(3.0, rel=1e-9)
    euclid = get_instrument("euclid")
    assert euclid.line_snr(20.0, 15500.0, 5.0, 0.4) < 0.7 * euclid.line_snr(20.0, 15500.0)


def test_noise_grows_with_source_size_and_flux():
    euclid = get_instrument("euclid")
    sizes = np.array([0.0, 0.2, 0.5, 1.0])
    assert np.all(np.diff(euclid.noise_sigma(0.0, sizes)) > 0)
    assert euclid.noise_sigma(10.0) > 1.05 * euclid.noise_sigma(0.0)
    assert euclid.noise_sigma(-10.0) == euclid.noise_sigma(0.0)


def test_dispersion_axis_sigma_projects_the_ellipse():
    r_half = np.sqrt(2 * np.log(2))
    assert dispersion_axis_sigma(1.0) == pytest.approx(1.0 / r_half)
    assert dispersion_axis_sigma(1.0, 0.5, np.pi / 2) == pytest.approx(0.5 / r_half)


def test_every_instrument_is_found_by_its_model_id_and_an_unknown_id_is_named():
    from specsr_keras.instruments import INSTRUMENTS, instrument_with_id

    for instrument in INSTRUMENTS.values():
        assert instrument_with_id(instrument.instrument_id) is instrument
    with pytest.raises(ValueError, match="no instrument has id 17"):
        instrument_with_id(17)
