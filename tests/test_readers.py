"""Readers of 3D-HST, MOSDEF, KBSS, Euclid SIR spectra and FITS cutouts, and bad inputs."""

import astropy.units as u
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from specsr_keras.data.readers import (
    detect_format,
    kbss,
    read_cutout,
    read_spectra,
    read_spectrum,
    threedhst,
)
from specsr_keras.data.records import (
    FLUX_UNIT,
    SpecsrInputError,
    Spectrum,
    air_to_vacuum,
    ivar_from_sigma,
    make_spectrum,
    vacuum_to_air,
)
from tests.fixtures_formats import (
    euclid_object,
    grism_wavelengths,
    smooth_flux,
    truncate,
    write_cutout_files,
    write_cutout_mef,
    write_euclid,
    write_kbss,
    write_mosdef,
    write_threedhst,
)

CGS_TO_FLUX_UNIT = 1e17


def _threedhst(tmp_path, **kwargs):
    wave = kwargs.pop("wave", grism_wavelengths())
    flambda = smooth_flux(wave)
    return write_threedhst(tmp_path, wave, flambda, np.full(wave.size, 0.2), **kwargs)


def _mosdef(tmp_path, n=30, **kwargs):
    flux = kwargs.pop("flux", 1e-18 * smooth_flux(np.arange(n)))
    sigma = kwargs.pop("sigma", np.full(n, 1e-19))
    return write_mosdef(tmp_path, flux, sigma, **kwargs)


def _error_message(call, *args, **kwargs) -> str:
    with pytest.raises(SpecsrInputError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- records ---------------------------------------------------------------------------

def test_flux_unit_is_1e_minus_17_cgs():
    assert (u.erg / u.s / u.cm**2 / u.AA).to(FLUX_UNIT) == pytest.approx(1e17, rel=1e-12)


def test_input_error_is_one_line_with_path_and_optional_row():
    assert str(SpecsrInputError("a/b.fits", "bad\nthing")) == "a/b.fits: bad thing"
    assert str(SpecsrInputError("cat.fits", "no flux", row=7)) == "cat.fits: row 7: no flux"


@pytest.mark.parametrize("air, vacuum", [(5006.843, 5008.240), (6583.45, 6585.27),
                                         (6562.80, 6564.61)])
def test_air_to_vacuum_matches_known_lines(air, vacuum):
    assert air_to_vacuum(air) == pytest.approx(vacuum, abs=0.01)


def test_air_vacuum_round_trip_in_the_near_infrared():
    vacuum = np.linspace(9000.0, 25000.0, 50)
    np.testing.assert_allclose(air_to_vacuum(vacuum_to_air(vacuum)), vacuum, atol=1e-4)


@pytest.mark.parametrize("flux, wave", [(np.ones((2, 3)), np.arange(6.0)),
                                        (np.ones(5), np.arange(4.0))])
def test_spectrum_rejects_bad_shapes(flux, wave):
    with pytest.raises(ValueError):
        Spectrum(wave, flux, np.ones_like(flux))


_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, 12, elements=_floats), hnp.arrays(np.float64, 12, elements=_floats))
def test_spectrum_never_keeps_nan_flux_or_negative_ivar_unmasked(flux, ivar):
    spec = Spectrum(np.arange(12.0) + 1e4, flux, ivar)
    good = ~spec.mask
    assert np.all(np.isfinite(spec.flux))
    assert np.all(spec.ivar[spec.mask] == 0)
    assert np.all(np.isfinite(spec.ivar[good]) & (spec.ivar[good] > 0))
    assert np.all(spec.flux[good] == flux[good])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, 12, elements=_floats), hnp.arrays(np.float64, 12, elements=_floats))
def test_reader_path_masks_nonfinite_flux_and_nonpositive_errors(flux, sigma):
    spec = make_spectrum("x.fits", wavelength=np.arange(12.0) + 1.0, wavelength_unit=u.um,
                         flux=flux, flux_scale=1e17, ivar=ivar_from_sigma(sigma))
    bad_input = ~np.isfinite(flux) | ~np.isfinite(sigma) | ~(sigma > 0)
    assert np.all(spec.mask[bad_input])
    assert np.all(np.isfinite(spec.flux)) and np.all(spec.ivar >= 0)
    assert np.all(spec.ivar[spec.mask] == 0)


# --- 3D-HST ----------------------------------------------------------------------------

def test_threedhst_reader_recovers_flambda_and_errors(tmp_path):
    wave = grism_wavelengths()
    flambda, sigma = smooth_flux(wave), np.linspace(0.1, 0.3, wave.size)
    sensitivity = np.linspace(150.0, 400.0, wave.size)
    contam = np.linspace(0.0, 50.0, wave.size)
    path = write_threedhst(tmp_path, wave, flambda, sigma, contam=contam,
                           sensitivity=sensitivity)
    spec = read_spectrum(path)
    np.testing.assert_array_equal(spec.wavelength, wave)
    np.testing.assert_allclose(spec.flux, flambda, rtol=1e-12)
    np.testing.assert_allclose(spec.ivar, 1.0 / sigma**2, rtol=1e-12)
    np.testing.assert_allclose(spec.meta["contam"], contam / sensitivity, rtol=1e-12)
    assert (spec.object_id, spec.instrument) == ("43386", "hst_g141")
    assert spec.meta["ra"] == pytest.approx(53.1) and not spec.mask.any()


def test_threedhst_masks_pixels_without_sensitivity(tmp_path):
    sensitivity = np.full(grism_wavelengths().size, 200.0)
    sensitivity[:3] = 0.0
    spec = read_spectrum(_threedhst(tmp_path, sensitivity=sensitivity))
    assert spec.mask.tolist()[:4] == [True, True, True, False]
    assert np.all(spec.ivar[:3] == 0) and np.all(np.isfinite(spec.flux))


def test_micron_wavelengths_are_converted_to_angstrom(tmp_path):
    wave = grism_wavelengths()
    spec = read_spectrum(_threedhst(tmp_path, wave=wave / 1e4, wave_unit="um"))
    np.testing.assert_allclose(spec.wavelength, wave, rtol=1e-12)


def test_missing_column_error_names_file_and_column(tmp_path):
    path = _threedhst(tmp_path, drop=("sensitivity",))
    message = _error_message(read_spectrum, path, format="threedhst")
    assert message.startswith(str(path)) and "'sensitivity'" in message


def test_nonmonotonic_wavelengths_raise_naming_file(tmp_path):
    wave = grism_wavelengths()
    wave[[10, 11]] = wave[[11, 10]]
    path = _threedhst(tmp_path, wave=wave)
    message = _error_message(threedhst.read_spectrum, path)
    assert str(path) in message and "not strictly increasing" in message


# --- MOSDEF ----------------------------------------------------------------------------

def test_mosdef_reader_recovers_linear_wcs_and_flux(tmp_path):
    flux, sigma = 1e-18 * smooth_flux(np.arange(30)), np.linspace(1e-19, 3e-19, 30)
    path = write_mosdef(tmp_path, flux, sigma, crval1=15000.0, cdelt1=2.0, crpix1=3.0)
    spec = read_spectrum(path)
    np.testing.assert_array_equal(spec.wavelength, 15000.0 + (np.arange(30) - 2.0) * 2.0)
    np.testing.assert_allclose(spec.flux, flux * CGS_TO_FLUX_UNIT, rtol=1e-12)
    np.testing.assert_allclose(spec.ivar, (sigma * CGS_TO_FLUX_UNIT) ** -2, rtol=1e-12)
    assert (spec.instrument, spec.object_id, spec.meta["mask"]) == ("mosfire_h", "12345",
                                                                     "co3_01")


@pytest.mark.parametrize("keyword", [{"AIRORVAC": "air"}, {"WAVTYPE": "AIR"},
                                     {"CTYPE1": "AWAV"}])
def test_air_wavelengths_are_converted_to_vacuum(tmp_path, keyword):
    spec = read_spectrum(_mosdef(tmp_path, crval1=6583.45, cdelt1=1.0, header=keyword))
    assert spec.wavelength[0] == pytest.approx(6585.27, abs=0.01)


def test_decreasing_linear_wcs_is_reversed(tmp_path):
    flux = 1e-18 * np.arange(1.0, 31.0)
    spec = read_spectrum(_mosdef(tmp_path, flux=flux, crval1=16000.0, cdelt1=-2.0))
    assert spec.wavelength[0] == pytest.approx(16000.0 - 29 * 2.0)
    assert spec.flux[0] == pytest.approx(3.0) and np.all(np.diff(spec.wavelength) > 0)


def test_nan_and_inf_flux_become_masked_pixels(tmp_path):
    flux = 1e-18 * np.ones(30)
    flux[2], flux[5] = np.nan, np.inf
    spec = read_spectrum(_mosdef(tmp_path, flux=flux))
    assert np.flatnonzero(spec.mask).tolist() == [2, 5]
    assert np.all(np.isfinite(spec.flux)) and np.all(spec.ivar[[2, 5]] == 0)


def test_zero_and_negative_errors_become_masked_pixels(tmp_path):
    sigma = np.full(30, 1e-19)
    sigma[3], sigma[4] = 0.0, -1e-19
    spec = read_spectrum(_mosdef(tmp_path, sigma=sigma))
    assert np.flatnonzero(spec.mask).tolist() == [3, 4]


@pytest.mark.parametrize("unit", ["furlongs", "Jy"])
def test_unknown_wavelength_unit_is_refused(tmp_path, unit):
    message = _error_message(read_spectrum, _mosdef(tmp_path, header={"CUNIT1": unit}))
    assert repr(unit) in message and "CUNIT1" in message


def test_mosdef_band_without_instrument_is_refused(tmp_path):
    message = _error_message(read_spectrum, _mosdef(tmp_path, header={"FILTNM": "Y"}))
    assert "'Y'" in message


# --- KBSS ------------------------------------------------------------------------------

def test_kbss_reader_pairs_flux_with_error_file(tmp_path):
    flux, sigma = 1e-18 * smooth_flux(np.arange(25)), np.full(25, 2e-19)
    path = write_kbss(tmp_path, flux, sigma, crval1=14500.0, cdelt1=1.63)
    spec = read_spectrum(path)
    np.testing.assert_array_equal(spec.wavelength, 14500.0 + 1.63 * np.arange(25))
    np.testing.assert_allclose(spec.flux, flux * CGS_TO_FLUX_UNIT, rtol=1e-12)
    np.testing.assert_allclose(spec.ivar, (2e-19 * CGS_TO_FLUX_UNIT) ** -2, rtol=1e-12)
    assert (spec.object_id, spec.instrument) == ("Q2343-BX610", "mosfire_h")
    assert spec.meta["error_path"].endswith("Q2343-BX610_H_esig.fits")


def test_kbss_missing_error_file_is_named(tmp_path):
    path = write_kbss(tmp_path, np.ones(10), np.ones(10))
    (tmp_path / "Q2343-BX610_H_esig.fits").unlink()
    message = _error_message(kbss.read_spectrum, path)
    assert str(path) in message and "Q2343-BX610_H_esig.fits" in message


# --- Euclid SIR ------------------------------------------------------------------------

def test_euclid_file_gives_records_and_quarantine_reasons(tmp_path):
    wave = 12000.0 + 13.4 * np.arange(20)
    signal, var = smooth_flux(wave), np.full(20, 0.04)
    mask, ndith = np.zeros(20, np.int32), np.full(20, 4, np.int16)
    mask[[1, 2, 3]] = [1, 64, 2]  # odd and >= 64 are bad, 2 is fine
    ndith[4], var[5], var[6] = 0, 0.0, -0.1
    shuffled = wave.copy()
    shuffled[[7, 8]] = shuffled[[8, 7]]
    path = write_euclid(tmp_path, [
        euclid_object(1001, wave, signal, var, mask=mask, ndith=ndith, fscale=1e-16),
        euclid_object(1002, wave, signal, var, drop=("SIGNAL",)),
        euclid_object(1003, shuffled, signal, var),
    ])
    records, rejects = read_spectra(path)
    assert [label for label, _ in rejects] == ["1002", "1003"]
    assert "'SIGNAL'" in rejects[0][1] and "not strictly increasing" in rejects[1][1]
    spec = records[0]
    assert (spec.object_id, spec.instrument) == ("1001", "euclid_nisp_red")
    assert np.flatnonzero(spec.mask).tolist() == [1, 2, 4, 5, 6]
    scale = 1e-16 * CGS_TO_FLUX_UNIT
    np.testing.assert_allclose(spec.flux, signal.astype(np.float32).astype(float) * scale,
                               rtol=1e-12)
    good = ~spec.mask
    np.testing.assert_allclose(spec.ivar[good], 1.0 / (np.float32(0.04) * scale**2), rtol=1e-6)
    np.testing.assert_allclose(spec.wavelength, wave, rtol=1e-7)


def test_read_spectrum_refuses_a_multi_object_file(tmp_path):
    wave = 12000.0 + 13.4 * np.arange(20)
    objects = [euclid_object(i, wave, np.ones(20), np.ones(20)) for i in (1, 2)]
    message = _error_message(read_spectrum, write_euclid(tmp_path, objects))
    assert "found 2" in message


# --- detection and broken files --------------------------------------------------------

def test_format_is_detected_from_each_fixture(tmp_path):
    wave = 12000.0 + 13.4 * np.arange(20)
    paths = {
        "threedhst": _threedhst(tmp_path),
        "mosdef": _mosdef(tmp_path),
        "kbss": write_kbss(tmp_path, np.ones(10), np.ones(10)),
        "euclid_sir": write_euclid(tmp_path, [euclid_object(1, wave, wave, wave)]),
    }
    assert {name: detect_format(path) for name, path in paths.items()} == {
        name: name for name in paths}


def test_truncated_fits_error_names_file(tmp_path):
    path = truncate(_threedhst(tmp_path, name="cut.fits"), keep_fraction=0.7)
    message = _error_message(read_spectrum, path)
    assert message.startswith(str(path)) and "truncated" in message


@pytest.mark.parametrize("content, problem", [(b"", "empty file"),
                                              (b"not a fits file" * 300, "not a readable FITS")])
def test_empty_or_garbage_file_error_names_file(tmp_path, content, problem):
    path = tmp_path / "broken.fits"
    path.write_bytes(content)
    message = _error_message(read_spectrum, path, format="mosdef")
    assert message.startswith(str(path)) and problem in message


# --- cutouts ---------------------------------------------------------------------------

def test_cutout_from_multi_extension_file(tmp_path):
    data = np.random.default_rng(0).normal(size=(8, 10, 3))
    bands = ["F606W", "F814W", "F160W"]
    cutout = read_cutout(write_cutout_mef(tmp_path, data, bands, ra=53.1, dec=-27.8))
    np.testing.assert_allclose(cutout.data, data.astype(np.float32))
    assert cutout.bands == tuple(bands) and cutout.object_id == "cutout_12345"
    assert cutout.pixel_scale_arcsec == pytest.approx(0.06, rel=1e-9)
    assert (cutout.meta["ra"], cutout.meta["dec"]) == (pytest.approx(53.1, abs=1e-9),
                                                       pytest.approx(-27.8, abs=1e-9))


def test_cutout_from_one_file_per_band_in_requested_order(tmp_path):
    data = np.random.default_rng(1).normal(size=(6, 6, 2))
    data[0, 0, 1] = np.nan
    paths = write_cutout_files(tmp_path, data, ["F606W", "F160W"])
    cutout = read_cutout(paths, bands=["F160W", "F606W"])
    assert cutout.bands == ("F160W", "F606W") and cutout.meta["nonfinite_pixels"] == 1
    assert cutout.data[0, 0, 0] == 0.0
    np.testing.assert_allclose(cutout.data[1:, :, 1], data[1:, :, 0].astype(np.float32))


def test_cutout_bands_with_different_pixel_scales_are_refused(tmp_path):
    data = np.zeros((6, 6, 2))
    paths = write_cutout_files(tmp_path, data, ["F606W", "F160W"], pixel_scales=[0.06, 0.12])
    message = _error_message(read_cutout, paths)
    assert "cutout_F160W.fits" in message and "pixel scale" in message
