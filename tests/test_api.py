"""The Python API: specsr_keras.load(model).super_resolve(spectra) and .infer(catalog, out)."""

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Table

import specsr_keras as specsr
from specsr_keras.data.records import Spectrum
from specsr_keras.instruments import get_instrument
from specsr_keras.simulate import simulate_galaxies
from tests.inference_fixtures import simulated_columns, write_table


@pytest.fixture(scope="module")
def galaxies():
    return simulate_galaxies(3, "euclid", seed=5, min_ha_snr=10.0)


def test_super_resolve_returns_one_row_per_spectrum_in_order_with_units(galaxies):
    wave = get_instrument("euclid").wavelength
    spectra = [Spectrum(wave, galaxies["lowres_flux"][i], galaxies["lowres_ivar"][i], object_id=f"g{i}")
               for i in range(3)]
    spectra.insert(1, (wave, np.full(wave.size, np.nan), galaxies["lowres_ivar"][0]))  # unusable
    table = specsr.load("baseline").super_resolve(spectra, z_prior=[galaxies["z_prior"][0], 1.3,
                                                                     *galaxies["z_prior"][1:]])
    assert table["object_id"].tolist() == ["g0", "1", "g1", "g2"]
    assert table["reason"][1].startswith("no_positive_ivar") and np.isnan(table["n2_p50"][1])
    assert table["reason"][[0, 2, 3]].tolist() == ["", "", ""]
    dz = np.abs(table["z_p50"][[0, 2, 3]] - galaxies["z"]) / (1 + galaxies["z"])
    assert np.all(dz < 2e-3)
    assert table["ha_flux_p50"].unit == u.Unit("1e-17 erg / (s cm2)") and table["sr_mean"].shape == (4, 320)


def test_quantities_in_other_units_give_the_same_answer(galaxies):
    wave = get_instrument("euclid").wavelength
    flux, ivar = galaxies["lowres_flux"][0], galaxies["lowres_ivar"][0]
    model = specsr.load("baseline")
    plain = model.super_resolve((wave, flux, ivar), z_prior=galaxies["z_prior"][0])
    converted = model.super_resolve((wave / 1e4 * u.um, flux * 1e-17 * u.erg / u.s / u.cm**2 / u.AA,
                                     ivar * 1e34 * (u.erg / u.s / u.cm**2 / u.AA) ** -2),
                                    z_prior=galaxies["z_prior"][0])
    for name in ("n2_p50", "ha_flux_p16", "z_p84"):
        np.testing.assert_allclose(converted[name], plain[name], rtol=1e-5)


def test_infer_is_the_cli_run(tmp_path):
    catalog = write_table(tmp_path / "c.fits", simulated_columns(5))
    summary = specsr.load("baseline").infer(catalog, tmp_path / "run", chunk_rows=2)
    assert (summary.rows_in, summary.chunks_total) == (5, 3)
    assert len(Table.read(summary.results)) == 5


def test_specutils_round_trip_keeps_every_pixel(galaxies):
    from specsr_keras.data.specutils_adapter import from_specutils, to_specutils

    wave = get_instrument("euclid").wavelength
    mask = np.zeros(wave.size, bool)
    mask[10:13] = True
    record = Spectrum(wave, galaxies["lowres_flux"][0], galaxies["lowres_ivar"][0], mask, object_id="g0")
    back = from_specutils(to_specutils(record))
    for name in ("wavelength", "flux", "ivar", "mask"):
        np.testing.assert_allclose(getattr(back, name), getattr(record, name), rtol=1e-12)
    assert back.object_id == "g0"


def test_a_specutils_spectrum_in_frequency_and_jansky_gives_the_same_answer(galaxies):
    from astropy.nddata import StdDevUncertainty
    from specutils import Spectrum as SpecutilsSpectrum

    wave = get_instrument("euclid").wavelength * u.AA
    flux = galaxies["lowres_flux"][0] * 1e-17 * u.erg / u.s / u.cm**2 / u.AA
    sigma = 1e-17 / np.sqrt(galaxies["lowres_ivar"][0]) * u.erg / u.s / u.cm**2 / u.AA
    to_jy = u.spectral_density(wave)
    frequency = wave.to(u.Hz, equivalencies=u.spectral())[::-1]  # increasing frequency
    spec = SpecutilsSpectrum(spectral_axis=frequency, flux=flux.to(u.Jy, to_jy)[::-1],
                             uncertainty=StdDevUncertainty(sigma.to(u.Jy, to_jy)[::-1]))
    model = specsr.load("baseline")
    plain = model.super_resolve((wave, flux, galaxies["lowres_ivar"][0]), z_prior=galaxies["z_prior"][0])
    converted = model.super_resolve(spec, z_prior=galaxies["z_prior"][0])
    for name in ("n2_p50", "ha_flux_p16", "z_p84"):
        np.testing.assert_allclose(converted[name], plain[name], rtol=1e-5)
    with pytest.raises(ValueError, match="no uncertainty"):
        model.super_resolve(SpecutilsSpectrum(spectral_axis=wave, flux=flux))


def test_super_resolved_windows_come_out_as_specutils_spectra_in_the_observed_frame(galaxies):
    from specsr_keras.instruments import TARGET_GRID

    wave = get_instrument("euclid").wavelength
    table = specsr.load("baseline").super_resolve(
        [(wave, galaxies["lowres_flux"][0], galaxies["lowres_ivar"][0]),
         (wave, np.full(wave.size, np.nan), galaxies["lowres_ivar"][0])], z_prior=galaxies["z_prior"][0])
    window, unused = specsr.super_resolved_spectra(table)
    assert unused is None
    np.testing.assert_allclose(window.spectral_axis.to_value(u.AA),
                               TARGET_GRID.wavelength * (1 + table["sr_z_place"][0]))
    np.testing.assert_allclose(window.flux.value, table["sr_mean"][0])
    np.testing.assert_allclose(window.uncertainty.array, table["sr_std"][0])
    assert window.flux.unit == u.Unit("1e-17 erg / (s cm2 Angstrom)")
