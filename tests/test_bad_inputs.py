"""The bad-input corpus: damaged or odd catalogues, exports and runs, each with its expected
outcome — a one-line error naming the file (exit 1), a per-row quarantine reason, or a flag.

Every case runs `specsr infer` (baseline model unless said) on the command line in-process and
checks: no traceback, every row in results or quarantine, and the outcome listed in CASES.
Bad training configs are in test_training_infra.py, damaged chunk files of a finished run in
test_inference_runner.py.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from typer.testing import CliRunner

from cli.main import app
from specsr_keras.data.shards import write_shards
from specsr_keras.inference.catalog import RawRows, prepare_rows
from specsr_keras.inference.predictors import BaselinePredictor
from specsr_keras.instruments import get_instrument
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.physics import LINE_REGION_A
from specsr_keras.simulate import dataset_metadata, simulate_galaxies
from specsr_keras.spectral.band import finer_grid_ivar_factor
from tests.inference_fixtures import EUCLID, simulated_columns, write_table
from tests.inference_fixtures import SHIPPED_SAVEDMODEL as SHIPPED

REPO = Path(__file__).resolve().parents[1]
N = 6
runner = CliRunner()


def _parquet(path, columns, instrument=EUCLID):
    arrays = {k: pa.array(list(v) if np.ndim(v) == 2 else v) for k, v in columns.items()}
    pq.write_table(pa.table(arrays).replace_schema_metadata({"INSTRUME": instrument}), path)
    return path


def text_z_prior(tmp):
    columns = simulated_columns(N)
    z = [f"{value:.4f}" for value in columns.pop("z_prior")]
    z[2] = "abc"
    return _parquet(tmp / "textz.parquet", {**columns, "z_prior": np.array(z)})


def text_flux_column(tmp):
    columns = simulated_columns(N)
    columns["flux"] = np.array([" ".join(map(str, row[:3])) for row in columns["flux"]])
    return write_table(tmp / "textflux.fits", columns)


def gzipped(tmp):
    plain = write_table(tmp / "plain.fits", simulated_columns(N))
    with open(plain, "rb") as source, gzip.open(tmp / "cat.fits.gz", "wb") as target:
        shutil.copyfileobj(source, target)
    return tmp / "cat.fits.gz"


def truncated(tmp):
    path = write_table(tmp / "cut.fits", simulated_columns(N))
    path.write_bytes(path.read_bytes()[:2880 * 3])
    return path


def random_bytes(tmp):
    path = tmp / "noise.fits"
    path.write_bytes(np.random.default_rng(1).bytes(20000))
    return path


def duplicate_ids(tmp):
    columns = simulated_columns(N)
    columns["object_id"] = np.array(columns["object_id"])
    columns["object_id"][4] = columns["object_id"][1]
    return write_table(tmp / "dups.fits", columns)


def micron_wavelengths(tmp):
    columns = simulated_columns(N)
    columns["wavelength"] = np.tile(get_instrument(EUCLID).wavelength / 1e4, (N, 1))
    columns["object_id"] = np.asarray(columns["object_id"])
    return write_table(tmp / "microns.fits", columns)


def halpha_masked(tmp):
    columns = simulated_columns(N)
    wave = get_instrument(EUCLID).wavelength
    flux = columns["flux"].astype(np.float64)
    lo, hi = np.asarray(LINE_REGION_A)[:, None] * (1 + columns["z_true"])[None, :]
    flux[:2][(wave[None, :] > lo[:2, None] - 40) & (wave[None, :] < hi[:2, None] + 40)] = np.nan
    columns["flux"] = flux
    return write_table(tmp / "masked.fits", columns)


def unknown_instrument(tmp):
    columns = simulated_columns(N)
    columns["instrument"] = np.array([EUCLID] * (N - 1) + ["jwst_nirspec"])
    return write_table(tmp / "instr.fits", columns)


def g141_rows_for_a_fixed_grid_export(tmp):
    g141 = simulate_galaxies(3, "hst_g141", 2, min_ha_snr=8.0)
    table = {"object_id": np.arange(3), "flux": g141["lowres_flux"], "ivar": g141["lowres_ivar"],
             "z_prior": g141["z_prior"]}
    return write_table(tmp / "g141.fits", table, instrument="hst_g141")


def g141_hdf5_with_serialized_meta(tmp):
    g141 = simulate_galaxies(3, "hst_g141", 2, min_ha_snr=8.0)
    table = Table({"object_id": np.arange(3), "flux": g141["lowres_flux"], "ivar": g141["lowres_ivar"],
                   "z_prior": g141["z_prior"]}, meta={"INSTRUME": "hst_g141"})
    table.write(tmp / "g141.h5", path="catalog", serialize_meta=True)
    return tmp / "g141.h5"


def fluxes_in_cgs_units(tmp):
    """Row 0 in erg/s/cm²/Å (1e-17 of specsr's unit) without a unit: the flux level is
    outside the shipped model's training range."""
    columns = simulated_columns(N)
    columns["flux"][0] *= 1e-17
    columns["ivar"][0] *= 1e34
    return write_table(tmp / "cgs.fits", columns)


# name -> (catalogue builder, --model, expected): "error: <text>" = exit 1 with that text
# on one line; "quarantine: <row>: <reason start>"; "flag: <row>: <FLAG>"; "ok" = all rows out.
CASES = {
    "z_prior text cell": (text_z_prior, "baseline",
                          "quarantine: 2: unparseable_value: z_prior = 'abc' is not a number"),
    "flux column of text": (text_flux_column, "baseline", "error: textflux.fits: column 'flux' (flux) holds text"),
    ".fits.gz catalogue": (gzipped, "baseline", "ok"),
    "truncated FITS": (truncated, "baseline", "error: cut.fits: truncated: the table needs"),
    "random bytes": (random_bytes, "baseline", "error: noise.fits: cannot read the catalog"),
    "duplicate object_id": (duplicate_ids, "baseline", "flag: 4: DUPLICATE_ID"),
    "wavelengths in µm": (micron_wavelengths, "baseline", "quarantine: 0: no_overlap"),
    "Hα in masked pixels": (halpha_masked, "baseline", "flag: 0: LINE_NOT_COVERED"),
    "unknown instrument": (unknown_instrument, "baseline", "quarantine: 5: unknown_instrument: 'jwst_nirspec'"),
    "G141 HDF5 (astropy meta), Euclid baseline": (g141_hdf5_with_serialized_meta, "baseline",
                                                  "noflag: 0: RESAMPLED"),
    "fluxes in erg/s/cm2/A, SavedModel": (fluxes_in_cgs_units, str(SHIPPED), "flag: 0: AMPLITUDE_IGNORED"),
    "fluxes in 1e-17 erg/s/cm2/A, SavedModel": (fluxes_in_cgs_units, str(SHIPPED), "noflag: 1: AMPLITUDE_IGNORED"),
    "G141 rows, Euclid SavedModel": (g141_rows_for_a_fixed_grid_export, str(SHIPPED),
                                     "quarantine: 0: other_instrument: observed with hst_g141"),
}


def _infer(catalog, model, out):
    return runner.invoke(app, ["infer", str(catalog), "--model", model, "--out", str(out)])


@pytest.mark.parametrize("name", CASES)
def test_bad_input_corpus(tmp_path, name):
    build, model, expected = CASES[name]
    catalog = build(tmp_path)
    result = _infer(catalog, model, tmp_path / "run")
    assert "Traceback" not in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit), result.output
    kind, _, detail = expected.partition(": ")
    if kind == "error":
        assert result.exit_code == 1
        text = " ".join(result.output.split())
        assert text.count("error:") == 1 and detail in text, text
        assert str(tmp_path) in text.replace(" ", "") or catalog.name in text
        return
    assert result.exit_code == 0, result.output
    results = Table.read(tmp_path / "run" / "results.fits", mask_invalid=False)
    quarantine = Table.read(tmp_path / "run" / "quarantine.fits")
    assert sorted(results["row"].tolist() + quarantine["row"].tolist()) == list(range(_rows(catalog)))
    if kind == "quarantine":
        row, _, reason = detail.partition(": ")
        reasons = dict(zip(quarantine["row"].tolist(), quarantine["reason"].tolist(), strict=True))
        assert reasons[int(row)].startswith(reason), reasons
    elif kind in ("flag", "noflag"):  # noflag: e.g. read on its own instrument's grid, not resampled
        row, _, flag = detail.partition(": ")
        flags = dict(zip(results["row"].tolist(), results["flags"].tolist(), strict=True))
        assert bool(flags[int(row)] & QualityFlag[flag]) == (kind == "flag")
        if flag == "LINE_NOT_COVERED":  # no measurement where there is no data
            assert np.isnan(results["n2_p50"][results["row"] == int(row)][0])
    else:
        assert len(quarantine) == 0


def _rows(catalog: Path) -> int:
    return 3 if catalog.stem == "g141" else N


def test_the_micron_case_says_why():
    raw = RawRows(row=np.arange(1), object_id=np.array(["a"]), flux=np.ones((1, 100)),
                  ivar=np.ones((1, 100)), wavelength=np.linspace(1.2, 1.9, 100)[None],
                  instrument=np.array([EUCLID]))
    (_, _, reason), = prepare_rows(raw, EUCLID).quarantine
    assert "look like micron" in reason and "give them in Angstrom" in reason


def test_duplicate_rows_are_both_flagged_and_counted(tmp_path):
    result = _infer(duplicate_ids(tmp_path), "baseline", tmp_path / "run")
    assert "rows flagged DUPLICATE_ID" in result.output
    results = Table.read(tmp_path / "run" / "results.fits", mask_invalid=False)
    flagged = results["row"][(results["flags"] & QualityFlag.DUPLICATE_ID) > 0].tolist()
    assert flagged == [1, 4]


def test_g141_spectra_on_the_finer_euclid_grid_keep_calibrated_intervals():
    """Resampling onto a finer grid must not invent information: the direct fit of G141
    spectra put on the Euclid grid (3.5x finer) keeps the z coverage of the native fit; with
    upsampled pixels treated as independent it halved (0.23 vs 0.47, 300 galaxies)."""
    n = 300
    g141 = simulate_galaxies(n, "hst_g141", 5, min_ha_snr=5.0)
    raw = RawRows(row=np.arange(n), object_id=np.arange(n).astype(str),
                  flux=g141["lowres_flux"].astype(float), ivar=g141["lowres_ivar"].astype(float),
                  mask=g141["lowres_mask"], wavelength=np.tile(get_instrument("hst_g141").wavelength, (n, 1)),
                  instrument=np.full(n, "hst_g141"), z_prior=g141["z_prior"].astype(float))

    def z_coverage(grid):
        out = BaselinePredictor(grid).predict(prepare_rows(raw, grid).batch)
        ok = np.isfinite(out["z_p16"])
        return np.mean((g141["z"][ok] >= out["z_p16"][ok]) & (g141["z"][ok] <= out["z_p84"][ok]))

    native, fine = z_coverage("hst_g141"), z_coverage(EUCLID)
    assert abs(fine - native) < 0.06, (fine, native)
    native_ivar = prepare_rows(raw, "hst_g141").batch["lowres_ivar"].sum()
    assert prepare_rows(raw, EUCLID).batch["lowres_ivar"].sum() / native_ivar == pytest.approx(1.0, abs=0.15)


def test_finer_grid_factor_is_one_onto_coarser_grids():
    fine, coarse = np.linspace(0, 100, 101), np.linspace(0, 100, 11)
    np.testing.assert_allclose(finer_grid_ivar_factor(fine, coarse), 1.0)
    np.testing.assert_allclose(finer_grid_ivar_factor(coarse, fine), 0.1)


@pytest.mark.parametrize("damage,expected", [
    ("no_index", "variables/variables.index: missing"),
    ("bad_signatures", "signatures.json: not valid JSON"),
    ("truncated_variables", "not a loadable SavedModel"),
])
def test_a_damaged_savedmodel_is_one_line_naming_it(tmp_path, damage, expected):
    export = tmp_path / "specsr" / "3"
    shutil.copytree(SHIPPED, export, ignore=shutil.ignore_patterns("run", "evaluation"))
    if damage == "no_index":
        (export / "variables" / "variables.index").unlink()
    elif damage == "bad_signatures":
        (export / "signatures.json").write_text("{not json")
    else:
        data = next((export / "variables").glob("variables.data-*"))
        data.write_bytes(data.read_bytes()[:1000])
    catalog = write_table(tmp_path / "c.fits", simulated_columns(2))
    result = _infer(catalog, str(export), tmp_path / "run")
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and text.count("error:") == 1 and expected in text, text
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_disk_full_while_writing_a_chunk_names_it_and_a_rerun_completes(tmp_path, monkeypatch):
    from astropy.io import fits

    catalog = write_table(tmp_path / "c.fits", simulated_columns(N))
    real_writeto = fits.HDUList.writeto

    def full_disk(self, name, *args, **kwargs):
        if "chunk_000001" in str(name):
            Path(name).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return real_writeto(self, name, *args, **kwargs)

    monkeypatch.setattr(fits.HDUList, "writeto", full_disk)
    args = ["infer", str(catalog), "--model", "baseline", "--out", str(tmp_path / "run"), "--chunk-rows", "3"]
    failed = runner.invoke(app, args)
    text = " ".join(failed.output.split())
    assert failed.exit_code == 1 and "chunk_000001.fits: cannot write the chunk" in text, text
    assert not list((tmp_path / "run" / "chunks").glob(".*tmp*"))  # no half-written file
    monkeypatch.setattr(fits.HDUList, "writeto", real_writeto)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert len(Table.read(tmp_path / "run" / "results.fits")) == N


def test_the_flag_table_in_the_docs_lists_every_flag():
    text = (REPO / "docs" / "scale-out.md").read_text()
    for flag in QualityFlag:
        assert f"| {flag.value.bit_length() - 1} | {flag.value} | {flag.name} |" in text, flag.name


@pytest.mark.parametrize("case", ["batch size 0", "no shard directory", "truncated shard"])
def test_bad_training_inputs_stop_before_training_with_one_line(tmp_path, case):
    data = tmp_path / "shards"
    data.mkdir()
    args = {"batch size 0": ["--batch-size", "0"], "no shard directory": ["--data", str(tmp_path / "none")],
            "truncated shard": ["--data", str(data)]}[case]
    if case == "truncated shard":
        manifest, attrs = dataset_metadata(EUCLID, 5)
        write_shards(data, iter([simulate_galaxies(16, EUCLID, seed=5)]), manifest, shard_size=16, attrs=attrs)
        shard = next(data.glob("*.h5"))
        shard.write_bytes(shard.read_bytes()[:100000])
    result = runner.invoke(app, ["train", str(tmp_path / "run"), *args])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and text.count("error:") == 1 and "Traceback" not in result.output, text
    assert {"batch size 0": "batch_size = 0: must be >= 1", "no shard directory": "none/manifest.json: missing",
            "truncated shard": ".h5: unreadable HDF5 shard"}[case] in text
