"""Catalog opening, chunked reading in every format, and validation onto the model grid."""

import numpy as np
import pytest

from specsr_keras.data.records import SpecsrInputError
from specsr_keras.inference.catalog import open_catalog, prepare_rows
from specsr_keras.instruments import get_instrument
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.spectral.band import edges_from_centres
from tests.fixtures_formats import truncate, write_threedhst
from tests.inference_fixtures import (
    BAD_ROWS,
    EUCLID,
    FLAGGED_ROWS,
    bad_row_mix,
    simulated_columns,
    write_ragged_parquet,
    write_table,
)


@pytest.fixture(scope="module")
def columns():
    return simulated_columns(12, seed=1)


@pytest.mark.parametrize("suffix", [".fits", ".h5", ".parquet"])
def test_every_table_format_reads_the_same_rows_in_chunks(tmp_path, columns, suffix):
    catalog = open_catalog(write_table(tmp_path / f"cat{suffix}", columns))
    assert (catalog.n_units, catalog.instrument) == (12, EUCLID)
    raw = catalog.read(5, 9)
    np.testing.assert_array_equal(raw.row, [5, 6, 7, 8])
    np.testing.assert_array_equal(raw.object_id, columns["object_id"][5:9].astype(str))
    np.testing.assert_array_equal(raw.flux, columns["flux"][5:9])
    np.testing.assert_array_equal(raw.mask, columns["mask"][5:9])
    np.testing.assert_allclose(raw.z_prior, columns["z_prior"][5:9], rtol=1e-12)
    assert len(catalog.read(8, 100).row) == 4  # the last chunk stops at the end


def test_parquet_chunks_spanning_row_groups_keep_every_row_once(tmp_path, columns):
    path = write_ragged_parquet(tmp_path / "cat.parquet",
                                {"object_id": columns["object_id"], "flux": list(columns["flux"]),
                                 "ivar": list(columns["ivar"])}, row_group_size=5)
    catalog = open_catalog(path)
    rows = np.concatenate([catalog.read(start, start + 4).row for start in range(0, 12, 4)])
    np.testing.assert_array_equal(rows, np.arange(12))
    np.testing.assert_array_equal(catalog.read(3, 7).flux, columns["flux"][3:7])


def test_bad_row_mix_quarantines_exactly_the_bad_rows(tmp_path):
    catalog = open_catalog(write_ragged_parquet(tmp_path / "bad.parquet", bad_row_mix()))
    prepared = prepare_rows(catalog.read(0, 20), EUCLID)
    reasons = {row: reason.split(":")[0] for row, _, reason in prepared.quarantine}
    assert reasons == BAD_ROWS
    batch = prepared.batch
    assert sorted(batch["row"].tolist()) == sorted(set(range(20)) - set(BAD_ROWS))
    assert len(batch["row"]) + len(prepared.quarantine) == 20
    for row, flag in FLAGGED_ROWS.items():
        assert batch["flags"][batch["row"] == row][0] & QualityFlag[flag]
    assert np.isnan(batch["z_prior"][batch["row"] == 15][0])
    clean = ~np.isin(batch["row"], list(FLAGGED_ROWS))
    assert np.all(batch["flags"][clean] == 0)
    # The masked pixels of row 11 are masked with ivar 0.
    row11 = batch["row"] == 11
    assert batch["lowres_mask"][row11, 100] and batch["lowres_ivar"][row11, 200] == 0


def test_spectra_on_another_grid_are_resampled_conserving_flux(tmp_path, columns):
    euclid = get_instrument(EUCLID)
    fine = np.arange(12500.0, 18500.0, 5.0)  # 5 Å pixels, inside the Euclid range
    flux = np.interp(fine, euclid.wavelength, columns["flux"][0].astype(float))
    table = {"object_id": [1, 2], "flux": np.stack([flux, flux]),
             "ivar": np.full((2, fine.size), 4.0), "wavelength": np.stack([fine, fine])}
    raw = open_catalog(write_table(tmp_path / "fine.fits", table)).read(0, 2)
    batch = prepare_rows(raw, EUCLID).batch
    assert np.all(batch["flags"] & QualityFlag.RESAMPLED)
    covered = ~batch["lowres_mask"][0]
    edges = euclid.bin_edges
    inside = (fine >= edges[:-1][covered].min()) & (fine <= edges[1:][covered].max())
    total_in = np.sum(flux[inside] * np.diff(edges_from_centres(fine))[inside])
    total_out = np.sum(batch["lowres_flux"][0][covered] * np.diff(edges)[covered])
    assert total_out == pytest.approx(total_in, rel=0.01)
    assert covered.sum() > 400  # most of the grid is inside the input range


def test_directory_mode_quarantines_unreadable_files_and_reads_the_rest(tmp_path):
    wave = np.arange(12000.0, 17000.0, 46.5)
    for index in range(3):
        write_threedhst(tmp_path, wave, np.full(wave.size, 1.0 + index), np.full(wave.size, 0.1),
                        name=f"obj_{index}.1D.fits")
    truncate(write_threedhst(tmp_path, wave, np.ones(wave.size), np.full(wave.size, 0.1),
                             name="obj_3.1D.fits"))
    (tmp_path / "obj_4.1D.fits").write_text("not a FITS file")
    catalog = open_catalog(tmp_path)
    assert (catalog.kind, catalog.n_units) == ("files", 5)
    assert open_catalog(tmp_path / "obj_[0-2].1D.fits").n_units == 3  # a glob
    prepared = prepare_rows(catalog.read(0, 5), EUCLID)
    assert [(row, reason.split(":")[0]) for row, _, reason in prepared.quarantine] == \
        [(3, "unreadable_file"), (4, "unreadable_file")]
    assert prepared.batch["row"].tolist() == [0, 1, 2]
    assert np.all(prepared.batch["flags"] & QualityFlag.RESAMPLED)
    g141 = get_instrument("hst_g141").instrument_id
    assert prepared.batch["instrument_id"].tolist() == [g141] * 3


def test_an_empty_catalog_is_a_one_line_error(tmp_path, columns):
    empty = {name: values[:0] for name, values in columns.items()}
    with pytest.raises(SpecsrInputError, match="empty"):
        open_catalog(write_table(tmp_path / "empty.fits", empty))
    with pytest.raises(SpecsrInputError, match="no spectrum files"):
        open_catalog(tmp_path / "nothing*.fits")


def test_missing_required_columns_are_named(tmp_path, columns):
    path = write_table(tmp_path / "noivar.parquet",
                       {"object_id": columns["object_id"], "flux": columns["flux"]})
    with pytest.raises(SpecsrInputError, match=r"missing required column\(s\): ivar") as error:
        open_catalog(path)
    assert "\n" not in str(error.value)


def test_rows_of_wrong_length_without_a_grid_are_quarantined(tmp_path, columns):
    short = {"object_id": columns["object_id"][:3], "flux": columns["flux"][:3, :480],
             "ivar": columns["ivar"][:3, :480]}
    prepared = prepare_rows(open_catalog(write_table(tmp_path / "s.fits", short)).read(0, 3),
                            EUCLID)
    assert len(prepared.batch["row"]) == 0
    assert all("wrong_grid_length: 480 pixels" in r for _, _, r in prepared.quarantine)


def test_hdf5_with_one_dataset_per_column_and_no_optional_columns(tmp_path, columns):
    import h5py

    with h5py.File(tmp_path / "shard.h5", "w") as handle:
        handle["object_id"] = np.array([f"gal-{i}" for i in range(12)], dtype=object).astype("S")
        handle["lowres_flux"] = columns["flux"]
        handle["lowres_ivar"] = columns["ivar"]
        handle["wavelength_grid"] = get_instrument(EUCLID).wavelength  # not a per-row column
        handle.attrs["instrument"] = "euclid"
    catalog = open_catalog(tmp_path / "shard.h5")
    assert set(catalog.columns) == {"object_id", "flux", "ivar"} and catalog.n_units == 12
    batch = prepare_rows(catalog.read(2, 6), EUCLID).batch
    assert batch["object_id"].tolist() == ["gal-2", "gal-3", "gal-4", "gal-5"]
    assert np.all(np.isnan(batch["z_prior"])) and np.all(batch["flags"] == 0)
    usable = columns["ivar"][2:6] > 0  # masked pixels (cosmics) carry flux 0
    np.testing.assert_array_equal(batch["lowres_flux"][usable], columns["flux"][2:6][usable])


def test_fits_variable_length_rows_are_read_per_row(tmp_path, columns):
    from astropy.io import fits

    flux = [columns["flux"][0], columns["flux"][1][:480], columns["flux"][2]]
    ivar = [columns["ivar"][0], columns["ivar"][1][:480], columns["ivar"][2]]
    hdu = fits.BinTableHDU.from_columns([
        fits.Column(name="id", format="6A", array=np.array(["a", "b", "c"])),
        fits.Column(name="flux", format="PE()", array=np.array(flux, dtype=object)),
        fits.Column(name="ivar", format="PE()", array=np.array(ivar, dtype=object))])
    hdu.header["INSTRUME"] = "euclid"
    hdu.writeto(tmp_path / "vla.fits")
    raw = open_catalog(tmp_path / "vla.fits").read(1, 3)
    assert raw.object_id.tolist() == ["b", "c"]
    np.testing.assert_array_equal(raw.flux[1], columns["flux"][2])
    prepared = prepare_rows(raw, EUCLID)
    assert prepared.batch["row"].tolist() == [2]
    assert [reason.split(":")[0] for _, _, reason in prepared.quarantine] == ["wrong_grid_length"]


@pytest.mark.parametrize("suffix", [".fits", ".h5", ".parquet"])
def test_column_units_are_converted_to_specsr_units(tmp_path, columns, suffix):
    import astropy.units as u
    from astropy.table import Table

    from specsr_keras.units import FLUX_UNIT

    wave = get_instrument(EUCLID).wavelength
    plain = {"object_id": [1, 2], "flux": columns["flux"][:2], "ivar": columns["ivar"][:2],
             "wavelength": np.stack([wave, wave])}
    table = Table(plain)
    table["flux"].unit = FLUX_UNIT * 1e-17  # the same numbers, in units of 1e-34 erg/s/cm2/Å
    table["ivar"].unit = (FLUX_UNIT * 1e-17) ** -2
    table["wavelength"] = table["wavelength"] / 1e4
    table["wavelength"].unit = u.um
    path = tmp_path / f"units{suffix}"
    kwargs = {"path": "catalog", "serialize_meta": True} if suffix == ".h5" else {}
    table.write(path, **kwargs)
    reference = prepare_rows(open_catalog(write_table(tmp_path / "plain.fits", plain)).read(0, 2), EUCLID)
    converted = prepare_rows(open_catalog(path).read(0, 2), EUCLID)
    assert not converted.quarantine
    np.testing.assert_allclose(converted.batch["lowres_flux"], reference.batch["lowres_flux"] * 1e-17, rtol=1e-5)
    np.testing.assert_allclose(converted.batch["lowres_ivar"], reference.batch["lowres_ivar"] * 1e34, rtol=1e-4)


def test_a_unit_that_cannot_be_converted_names_the_column(tmp_path, columns):
    import astropy.units as u
    from astropy.table import Table

    table = Table({"object_id": [1], "flux": columns["flux"][:1], "ivar": columns["ivar"][:1]})
    table["flux"].unit = u.Jy * u.s  # not a flux density per wavelength
    table.write(tmp_path / "bad.fits")
    with pytest.raises(SpecsrInputError, match=r"bad.fits: column 'flux' has unit .* cannot be converted"):
        open_catalog(tmp_path / "bad.fits")
