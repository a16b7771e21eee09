"""`specsr evaluate` end to end on tiny simulated held-out sets."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from specsr_keras.data.shards import write_shards
from specsr_keras.evaluation import CrossModalInputs, evaluate
from specsr_keras.simulate import dataset_metadata, simulate_galaxies

FLAT_KEYS = ("nii_ha_bias_dex", "nii_ha_nmad_dex", "nii_ha_slope", "lowres_fit_nii_ha_nmad_dex",
             "faisst_nii_ha_nmad_dex", "ceiling_nii_ha_nmad_dex", "ha_flux_frac_nmad",
             "z_bias_specsr", "z_bias_lowres", "coverage_68", "coverage_95", "retrieval_top1",
             "image_z_r2", "spectrum_z_r2", "gen_z_nmad", "anomaly_auroc")


def held_out_set(directory, n, instrument, seed):
    """n simulated galaxies (no images) as shards in directory."""
    batch = simulate_galaxies(n, instrument, seed=seed)
    del batch["image"]
    manifest, attrs = dataset_metadata(instrument, seed)
    write_shards(directory, [batch], manifest, attrs=attrs)
    return directory


@pytest.fixture(scope="module")
def euclid_dir(tmp_path_factory):
    return held_out_set(tmp_path_factory.mktemp("euclid"), 200, "euclid_nisp_red", 9001)


def test_evaluate_baseline_writes_report_html_and_metrics(euclid_dir, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["evaluate", "--model", "baseline", "--data", str(euclid_dir),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(FLAT_KEYS) <= set(metrics)
    assert metrics["model"]["id"] == "baseline"
    assert metrics["data"][0]["count_used"] == 200
    assert metrics["retrieval_top1"] is None and metrics["image_z_r2"] is None
    assert 0.0 <= metrics["anomaly_auroc"] <= 1.0  # the fit's chi2 vs AGN/broad/contaminated
    bins = metrics["bins"]["euclid_nisp_red"]
    assert sum(b["n"] for b in bins["snr"].values()) == 200
    for label, stats in bins["snr"].items():  # model = baseline: specsr IS the low-res fit
        assert stats["n2"]["specsr"] == stats["n2"]["lowres_fit"], label
    low_snr = bins["snr"]["3-5"]["n2"]
    assert low_snr["faisst"]["nmad"] < low_snr["lowres_fit"]["nmad"]  # prior wins at S/N 3-5
    naive, fit = bins["all"]["z"]["centroid"]["bias"], bins["all"]["z"]["lowres_fit"]["bias"]
    assert naive > abs(fit)  # Martens et al. 2019: ignoring [NII] biases z redward
    report = (out / "report.md").read_text()
    assert "model `baseline`" in report and "does NOT beat" in report
    assert "not computed" in report
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_evaluate_two_instruments_with_crossmodal_inputs(euclid_dir, tmp_path):
    g141_dir = held_out_set(tmp_path / "g141", 40, "hst_g141", 9002)
    rng = np.random.default_rng(0)
    n = 60
    embeddings = rng.normal(size=(n, 8))
    metrics = evaluate("baseline", [g141_dir, euclid_dir], tmp_path / "out", max_examples=n,
                       crossmodal=CrossModalInputs(image_embeddings=embeddings,
                                                   spectrum_embeddings=embeddings,
                                                   generated_z=np.full(n, np.nan)))
    assert metrics["headline_set"] == "euclid_nisp_red"
    assert set(metrics["bins"]) == {"hst_g141", "euclid_nisp_red"}
    assert metrics["retrieval_top1"] == 1.0
    assert metrics["image_z_r2"] < 0.5  # random embeddings carry no redshift
    assert metrics["crossmodal"]["generation"]["outlier_fraction"] == 1.0
    assert [d["count_used"] for d in metrics["data"]] == [40, n]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Set `hst_g141`" in report and "image_to_spectrum" in report
