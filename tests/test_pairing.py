"""build-dataset: cross-matching real survey files into shards (data/pairing.py, cli) and the
domain-gap statistics (evaluation/domain_gap.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from specsr_keras.data.pairing import image_to_model_grid
from specsr_keras.data.records import ImageCutout
from specsr_keras.data.shards import load_shards, read_manifest, write_shards
from specsr_keras.instruments import TARGET_GRID, get_instrument
from tests.fixtures_formats import CDELT, COVERAGE, SURVEY_N2, SURVEY_Z


@pytest.fixture(scope="module")
def built(real_shards):
    return real_shards, read_manifest(real_shards), load_shards(real_shards)


def test_build_dataset_counts_pairs_triples_and_unpaired(built):
    _, manifest, _ = built
    report = manifest["report"]
    assert manifest["kind"] == "real" and manifest["count"] == 5
    assert report["files_read"] == {"lowres": 6, "hires": 7, "images": 3}
    assert (report["triples"], report["pairs_hires"], report["pairs_image"],
            report["lowres_only"]) == (1, 1, 1, 2)
    assert [a for a, _ in report["ambiguous"]] == ["105"]
    assert "m5a" in report["ambiguous"][0][1]
    assert sorted(report["unmatched"]) == [["cutout_8", "image cutout_8.fits"],
                                           ["m5b", "hires co3_01.H.m5b.1d.fits"],
                                           ["m7", "hires co3_01.H.m7.1d.fits"]]
    assert manifest["surveys"] == ["cutouts", "mosdef", "threedhst"]


def test_build_dataset_reports_rejects_exactly(built):
    rejects = dict(built[1]["report"]["rejects"])
    assert sorted(rejects) == ["co3_01.H.nocat.1d.fits", "goodss-01-G141_106.1D.fits",
                               "goodss-01-G141_999.1D.fits"]
    assert "truncated or corrupt" in rejects["goodss-01-G141_999.1D.fits"]
    assert "no position" in rejects["co3_01.H.nocat.1d.fits"]
    assert "no redshift" in rejects["goodss-01-G141_106.1D.fits"]


def test_build_dataset_records_provenance_per_example(built):
    data = built[2]
    assert [s.decode() for s in data["source_id"]] == ["101", "102", "103", "104", "105"]
    assert data["hires_file"][1].decode() == "co3_01.H.m2.1d.fits;co3_02.H.m2.1d.fits"
    assert data["image_file"][0].decode() == "cutout_1.fits"
    assert [bool(v) for v in data["has_hires"]] == [True, True, False, False, False]
    assert [bool(v) for v in data["has_image"]] == [True, False, True, False, False]
    np.testing.assert_allclose(data["z"], SURVEY_Z)
    np.testing.assert_allclose(data["z_prior"], SURVEY_Z)
    assert np.isnan(data["log_mstar"]).all() and np.isnan(data["ha_flux"]).all()


def test_hires_masked_exactly_outside_observed_bands(built):
    data = built[2]
    edges = TARGET_GRID.bin_edges * (1 + SURVEY_Z)
    for row, slit in ((0, "m1"), (1, "m2")):
        covered = np.zeros(TARGET_GRID.n_pixels, bool)
        for crval1, n in COVERAGE[slit]:
            lo, hi = crval1 - CDELT / 2, crval1 + CDELT * (n - 0.5)
            covered |= (edges[:-1] >= lo) & (edges[1:] <= hi)
        np.testing.assert_array_equal(data["hires_mask"][row], ~covered)
        assert (data["hires_ivar"][row][~covered] == 0).all()
        assert (data["hires_ivar"][row][covered] > 0).all()
    continuum = covered & (TARGET_GRID.wavelength > 6700)
    np.testing.assert_allclose(data["hires_flux"][1][continuum], 1.0, atol=1e-4)
    assert data["hires_mask"][2:].all()
    assert not data["lowres_mask"].any()
    np.testing.assert_allclose(data["lowres_flux"][0, 0],
                               2.0 + 1e-4 * (get_instrument("hst_g141").wavelength[0] - 14000),
                               rtol=1e-5)


def test_images_resized_with_missing_bands_flagged(built):
    data = built[2]
    assert data["image"].shape == (5, 64, 64, 4)
    np.testing.assert_array_equal(data["image_band_present"][0], [True, False, True, True])
    np.testing.assert_allclose(data["image"][0, 32, 32], [1.0, 0.0, 2.0, 3.0])
    # 0.12"/px -> 0.06"/px: surface brightness per pixel drops by 4.
    np.testing.assert_allclose(data["image"][2, 32, 32], [0.25, 0.5, 0.75, 1.0], rtol=1e-5)
    assert not data["image"][3].any()


def test_image_padding_centres_a_small_cutout():
    cutout = ImageCutout(np.ones((20, 20, 1), np.float32), ("F160W",), 0.06)
    image, present = image_to_model_grid(cutout)
    assert image[:, :, 3].sum() == pytest.approx(400.0)
    assert image[22:42, 22:42, 3].all() and present.tolist() == [False, False, False, True]


def test_load_examples_reads_real_shards_with_zero_weight_where_masked(built):
    from specsr_keras.reporting import Reporter
    from specsr_keras.training.pipeline import load_examples

    out, _, data = built
    inputs, truth = load_examples(str(out), 0, Reporter())
    for name, values in inputs.items():
        if name == "log_mstar":  # no catalogue mass for these galaxies: 0, has_mass 0
            assert (values == 0).all() and not inputs["has_mass"].any()
        assert np.isfinite(values).all(), name
    assert inputs["hires_weight"].shape == (5, TARGET_GRID.n_pixels)
    assert (inputs["hires_weight"][data["hires_mask"]] == 0).all()
    assert (inputs["hires_weight"][~data["hires_mask"]] > 0).all()
    np.testing.assert_array_equal(inputs["hires_valid"], [1, 1, 0, 0, 0])


def test_build_dataset_cli_fails_in_one_line_without_files(tmp_path):
    result = CliRunner().invoke(app, ["build-dataset", "--lowres", "nowhere/*.fits",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert " ".join(result.output.split()) == "error: no file matches --lowres 'nowhere/*.fits'"


def test_build_dataset_refuses_when_no_example_survives(survey, tmp_path):
    from specsr_keras.data.pairing import build_dataset

    root, _ = survey  # no catalogue: no redshift for any low-res spectrum
    with pytest.raises(ValueError, match="no example survived"):
        build_dataset(sorted((root / "lowres").glob("*.1D.fits")), [], [], tmp_path / "out")


def test_domain_gap_compares_simulated_and_real_statistics(built, tmp_path):
    from specsr_keras.evaluation.domain_gap import domain_gap
    from specsr_keras.simulate import dataset_metadata, simulate_galaxies

    manifest, attrs = dataset_metadata("hst_g141", 3, min_ha_snr=0.0)
    write_shards(tmp_path / "sim", [simulate_galaxies(12, "hst_g141", 3, min_ha_snr=0.0)],
                 manifest, attrs=attrs)
    gap = domain_gap(tmp_path / "sim", built[0], plot_path=tmp_path / "gap.png")
    assert set(gap) == {"continuum_slope", "ha_sigma_v_kms", "n2"}
    assert gap["n2"]["real"]["n"] == 2
    assert gap["n2"]["real"]["median"] == pytest.approx(SURVEY_N2, abs=0.03)
    # Low-res continuum of every real file: slope 1e-4 per Å = 1 per µm over its mean.
    mean_flux = 2.0 + 1e-4 * (get_instrument("hst_g141").wavelength.mean() - 14000.0)
    real_slope = gap["continuum_slope"]["real"]
    assert real_slope["n"] == 5 and real_slope["median"] == pytest.approx(1 / mean_flux, rel=1e-3)
    assert gap["continuum_slope"]["simulated"]["n"] == 12
    assert 0.0 <= gap["continuum_slope"]["ks"] <= 1.0
    assert (tmp_path / "gap.png").stat().st_size > 1000
    json.dumps(gap)
