"""`specsr evaluate` end to end on tiny simulated held-out sets and on real shards (the
survey of tests/fixtures_formats.py through `specsr build-dataset`), with the domain gap."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from specsr_keras.data.shards import write_shards
from specsr_keras.evaluation import CrossModalInputs, evaluate
from specsr_keras.evaluation.domain_gap import STATISTICS, domain_gap
from specsr_keras.simulate import dataset_metadata, simulate_galaxies
from tests.fixtures_formats import SURVEY_N2

FLAT_KEYS = ("nii_ha_bias_dex", "nii_ha_nmad_dex", "nii_ha_slope", "nii_ha_calibration_slope",
             "lowres_fit_nii_ha_nmad_dex", "faisst_nii_ha_nmad_dex", "ceiling_nii_ha_nmad_dex", "ha_flux_frac_nmad",
             "z_bias_specsr", "z_bias_lowres", "coverage_68", "coverage_95", "retrieval_top1",
             "image_z_r2", "spectrum_z_r2", "gen_n2_nmad_dex", "anomaly_auroc")


def metrics_true_n2(estimates_file):
    from astropy.table import Table

    return np.asarray(Table.read(estimates_file)["true_n2"], np.float64)


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
    assert "model `baseline`" in report and "does not beat its best competitor" in report
    assert "not computed" in report
    assert metrics["evaluation"]["samples"] == 1 and "posterior samples per object: 1;" in report  # the model's own K
    # One statistic per table, each number with its bootstrap interval; coverage by true N2.
    nmad = bins["snr"]["3-5"]["n2"]["specsr"]
    row = next(line for line in report.split("#### NMAD [dex]")[1].splitlines() if line.startswith("| 3-5 |"))
    assert f"| {nmad['nmad']:.3f} [{nmad['nmad_lo']:.3f}, {nmad['nmad_hi']:.3f}] |" in row
    coverage = bins["n2_true"]["<-1.0"]["coverage"]["n2"]["specsr"]
    section = report.split("#### N2 68 % coverage by true N2 [dex]")[1]
    row = next(line for line in section.splitlines() if line.startswith("| <-1.0 |"))
    assert row.split(" | ")[2] == f"{coverage['68']:.2f} [{coverage['68_lo']:.2f}, {coverage['68_hi']:.2f}]"
    assert "data:image/png;base64," in (out / "report.html").read_text()
    from astropy.table import Table

    table = Table.read(out / "estimates_euclid_nisp_red.fits")  # per object, every method
    assert len(table) == 200 and table.meta["INSTRUME"] == "euclid_nisp_red"
    np.testing.assert_array_equal(table["specsr_n2_p50"], table["lowres_fit_n2_p50"])
    errors = np.asarray(table["specsr_n2_p50"] - table["true_n2"])
    assert np.nanmedian(errors) == pytest.approx(bins["all"]["n2"]["specsr"]["bias"])


def test_evaluate_in_batches_without_example_rows_scores_anomaly_classes_by_snr(euclid_dir, tmp_path):
    # batches of 16: the example spectra (one per S/N bin) come with some batches only
    metrics = evaluate("baseline", euclid_dir, tmp_path / "report", batch_size=16)
    by_snr = metrics["crossmodal"]["anomaly_by_snr"]
    assert set(by_snr) == {"broad-line AGN with narrow lines", "broad-line AGN without narrow lines",
                           "outflow (broad wing)", "contamination", "artefact"}
    counts = {label: sum(per[b]["n_anomalous"] for b in per) for label, per in by_snr.items()}
    by_class = metrics["crossmodal"]["anomaly_by_class"]["anomaly_fpr"]
    assert counts == {label: by_class[label]["n_anomalous"] for label in by_snr}
    assert sum(counts.values()) > 0
    assert "by the expected S/N of all Hα" in (tmp_path / "report" / "report.md").read_text()


def test_evaluate_two_instruments_with_crossmodal_inputs(euclid_dir, tmp_path):
    g141_dir = held_out_set(tmp_path / "g141", 40, "hst_g141", 9002)
    rng = np.random.default_rng(0)
    n = 60
    embeddings = rng.normal(size=(n, 8))
    metrics = evaluate("baseline", [g141_dir, euclid_dir], tmp_path / "out", max_examples=n,
                       crossmodal=CrossModalInputs(image_embeddings=embeddings,
                                                   spectrum_embeddings=embeddings,
                                                   generated={name: np.full(n, value) for name, value in (
                                                       ("n2_p50", -0.5), ("n2_p16", -0.8), ("n2_p84", -0.2),
                                                       ("n2_p2_5", -1.2), ("n2_p97_5", 0.0))}))
    assert metrics["headline_set"] == "euclid_nisp_red"
    assert set(metrics["bins"]) == {"hst_g141", "euclid_nisp_red"}
    assert metrics["retrieval_top1"] == 1.0
    assert metrics["image_z_r2"] < 0.5  # random embeddings carry no redshift
    generation = metrics["crossmodal"]["generation"]  # a constant -0.5 dex for every galaxy
    true_n2 = metrics_true_n2(tmp_path / "out" / "estimates_euclid_nisp_red.fits")
    assert generation["n"] == n and generation["n2_bias"] == pytest.approx(np.median(-0.5 - true_n2))
    assert set(generation["references"]) == {"Faisst (catalogue M*)", "constant"}
    assert metrics["gen_n2_nmad_dex"] == generation["n2_nmad"]
    assert [d["count_used"] for d in metrics["data"]] == [40, n]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Set `hst_g141`" in report and "image_to_spectrum" in report
    assert (tmp_path / "out" / "figures" / "shared_space_pca.png").exists() and "principal components" in report


def test_principal_components_find_the_dominant_direction():
    from specsr_keras.evaluation.plots import principal_components

    rng = np.random.default_rng(1)
    direction = np.array([3.0, 4.0, 0.0, 0.0]) / 5.0
    embeddings = rng.normal(size=(2000, 1)) * 5.0 * direction + rng.normal(size=(2000, 4))
    coords, share = principal_components(embeddings)
    assert coords.shape == (2000, 2)
    assert share[0] == pytest.approx(26.0 / 29.0, abs=0.02)  # variance 25 + 1 of 25 + 4
    assert abs(np.corrcoef(coords[:, 0], embeddings @ direction)[0, 1]) > 0.99


@pytest.fixture(scope="module")
def g141_sim_dir(tmp_path_factory):
    return held_out_set(tmp_path_factory.mktemp("g141"), 40, "hst_g141", 9003)


def test_evaluate_real_and_simulated_sets_reports_domain_gap(real_shards, g141_sim_dir, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["evaluate", "--model", "baseline", "--data",
                                      f"{real_shards},{g141_sim_dir}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(d["name"], d["kind"], d["line_truth"]) for d in metrics["data"]] == [
        ("hst_g141_real", "real", False), ("hst_g141", "simulated", True)]
    assert metrics["headline_set"] == "hst_g141"  # the set with line truth, though listed second
    assert metrics["nii_ha_nmad_dex"] is not None
    real = metrics["bins"]["hst_g141_real"]["all"]
    assert real["n"] == 5
    assert all(stats["n"] == 0 for stats in real["n2"].values())  # no true N2: skipped
    assert real["z"]["lowres_fit"]["n"] == 5  # redshifts vs the catalogue
    assert real["z"]["ceiling"]["n"] == 2  # the two objects with a MOSFIRE spectrum
    # Default reference: the simulated set of --data; numbers as domain_gap computes them.
    gap = metrics["domain_gap"]
    assert gap["reference"] == str(g141_sim_dir)
    entry = gap["sets"]["hst_g141_real"]
    assert entry["directory"] == str(real_shards)
    expected = domain_gap(g141_sim_dir, real_shards)
    assert set(entry["statistics"]) == set(STATISTICS)
    for name in STATISTICS:
        for key in ("ks", "median_shift"):
            assert entry["statistics"][name][key] == pytest.approx(expected[name][key]), (name, key)
            assert metrics[f"domain_gap_{name}_{key}"] == pytest.approx(expected[name][key])
    assert entry["statistics"]["n2"]["real"]["n"] == 2
    assert entry["statistics"]["n2"]["real"]["median"] == pytest.approx(SURVEY_N2, abs=0.03)
    assert 0.0 < metrics["domain_gap_continuum_slope_ks"] <= 1.0
    assert (out / entry["figure"]).stat().st_size > 1000
    assert not (out / "figures" / "hst_g141_real_n2_vs_truth.png").exists()
    report = (out / "report.md").read_text()
    assert "## Set `hst_g141_real`" in report and "calibration are n/a (skipped)" in report
    assert "## Domain gap: simulated vs real" in report
    assert f"]({entry['figure']})" in report
    assert (out / "report.html").read_text().count("<img") == report.count("![")
    assert "domain gap: simulated reference vs hst_g141_real" in result.output


def test_evaluate_real_set_alone_with_domain_gap_against(real_shards, g141_sim_dir, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["evaluate", "--model", "baseline", "--data", str(real_shards),
                                      "--domain-gap-against", str(g141_sim_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["headline_set"] == "hst_g141_real"
    assert metrics["nii_ha_nmad_dex"] is None and metrics["coverage_68"] is None
    assert metrics["domain_gap"]["reference"] == str(g141_sim_dir)
    assert metrics["domain_gap_n2_ks"] is not None
    report = (out / "report.md").read_text()
    assert "no line truth (real galaxies): the truth-based metrics are n/a" in report
    assert "beats the direct low-res fit" not in report
    assert metrics["anomaly_auroc"] is None  # anomaly labels are simulation truth

    alone = evaluate("baseline", [real_shards, g141_sim_dir, g141_sim_dir], tmp_path / "no_ref",
                     max_examples=5, domain_gap_against=None)
    name = f"hst_g141:{g141_sim_dir.name}"
    assert list(alone["bins"]) == ["hst_g141_real", name, f"{name}_2"]
    assert alone["domain_gap"]["reference"] == str(g141_sim_dir)
    without = evaluate("baseline", real_shards, tmp_path / "real_only")
    assert without["domain_gap"] == {"reference": None, "sets": {}}
    assert without["domain_gap_n2_ks"] is None
    assert "not computed (no simulated reference set" in (tmp_path / "real_only" / "report.md").read_text()


@pytest.mark.parametrize("kind", ["no_real_set", "real_reference"])
def test_evaluate_domain_gap_against_fails_in_one_line(real_shards, g141_sim_dir, tmp_path, kind):
    data, against = {"no_real_set": (g141_sim_dir, g141_sim_dir),
                     "real_reference": (real_shards, real_shards)}[kind]
    result = CliRunner().invoke(app, ["evaluate", "--model", "baseline", "--data", str(data),
                                      "--domain-gap-against", str(against), "--out", str(tmp_path)])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert message.startswith("error: ") and message.count("error") == 1
    assert ("no evaluated set is real" if kind == "no_real_set" else "must be a simulated set") in message
    assert not (tmp_path / "metrics.json").exists()


def test_withheld_inputs_reach_neither_specsr_nor_the_baselines(tmp_path, monkeypatch):
    import specsr_keras.evaluation.heldout as heldout

    batch = simulate_galaxies(30, "euclid_nisp_red", seed=9003)  # with images
    manifest, attrs = dataset_metadata("euclid_nisp_red", 9003)
    write_shards(tmp_path / "set", [batch], manifest, attrs=attrs)
    seen = []

    class Recording:  # the baseline, noting what each batch gives it
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def predict(self, rows, **kwargs):
            seen.append({"image": "image" in rows, "mass": np.isfinite(rows["log_mstar_catalog"]).any()})
            return self.inner.predict(rows, **kwargs)

    original = heldout.predictor_for
    monkeypatch.setattr(heldout, "predictor_for", lambda *args: Recording(original(*args)))
    full = evaluate("baseline", tmp_path / "set", tmp_path / "full")
    alone = evaluate("baseline", tmp_path / "set", tmp_path / "alone", withhold=("mass", "image"))
    assert seen == [{"image": True, "mass": True}, {"image": False, "mass": False}]
    n2_full, n2_alone = (m["bins"]["euclid_nisp_red"]["all"]["n2"] for m in (full, alone))
    assert {"faisst", "fit_faisst"} <= set(n2_full) and not {"faisst", "fit_faisst"} & set(n2_alone)
    assert n2_alone["fit_population"] == n2_full["fit_population"]  # needs no catalogue input
    assert alone["evaluation"]["withheld"] == ["image", "mass"] and full["evaluation"]["withheld"] == []
    assert "Evaluated without the images and the catalogue masses" in (tmp_path / "alone" / "report.md").read_text()
    result = CliRunner().invoke(app, ["evaluate", "--model", "baseline", "--data", str(tmp_path / "set"),
                                      "--out", str(tmp_path / "bad"), "--withhold", "mass,redshift"])
    assert result.exit_code == 1 and "cannot withhold ['redshift']" in " ".join(result.output.split())
