"""The shipped model saved_models/specsr: it loads, super-resolves, fine-tunes from, and its
model card is what the committed files say (CI never retrains it)."""


import numpy as np
import pytest

from specsr_keras.inference.predictors import load_predictor
from specsr_keras.ship.model_card import write_model_card
from specsr_keras.ship.shipping import REPORT_FILES
from specsr_keras.simulate import simulate_galaxies
from tests.inference_fixtures import SHIPPED, SHIPPED_SAVEDMODEL


@pytest.fixture(scope="module")
def bright_euclid():
    """Bright Euclid galaxies (expected Hα S/N >= 10) the model never saw (seed 9001), no AGN
    (whose narrow N2 under a broad Hα is another question)."""
    return simulate_galaxies(12, "euclid", seed=9001, min_ha_snr=10.0, agn_fraction=0.0)


def test_shipped_savedmodel_resolves_nii_of_bright_galaxies(bright_euclid):
    predictor = load_predictor(str(SHIPPED_SAVEDMODEL))
    batch = {k: bright_euclid[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior")}
    batch["instrument_id"] = np.full(12, 1)
    batch["source_sigma_arcsec"] = np.full(12, np.nan)
    out = predictor.predict(batch, samples=predictor.samples, seed=0)
    n2_error = out["n2_p50"] - bright_euclid["n2"]
    assert np.median(np.abs(n2_error)) < 0.2  # dex; its held-out NMAD at S/N 10-20 is 0.14
    dz = (out["z_p50"] - bright_euclid["z"]) / (1 + bright_euclid["z"])
    assert np.median(np.abs(dz)) < 5e-4
    assert np.all(out["n2_p16"] <= out["n2_p84"])


def test_shipped_run_initialises_a_fine_tune():  # JAX-trained weights, loaded under the default TF
    import keras

    from specsr_keras.reporting import Reporter
    from specsr_keras.training.pipeline import SpecsrModels, load_run_weights, shared_space_of, wavelength_channel_of

    assert wavelength_channel_of(SHIPPED / "run")  # since specsr/9: the denoiser reads the window's wavelength
    models = SpecsrModels("tiny", seed=0, shared_space=shared_space_of(SHIPPED / "run"),  # specsr/2's aligner
                          wavelength_channel=wavelength_channel_of(SHIPPED / "run"))
    before = [w.copy() for w in models.superres.get_weights()]
    load_run_weights(models, SHIPPED / "run", Reporter())
    shipped = keras.saving.load_model(SHIPPED / "run" / "models" / "superres.keras", compile=False)
    for loaded, reference in zip(models.superres.get_weights(), shipped.get_weights(), strict=True):
        np.testing.assert_array_equal(loaded, reference)
    assert any(not np.array_equal(a, b) for a, b in zip(before, models.superres.get_weights(), strict=True))


def test_model_card_is_generated_from_the_shipped_files(tmp_path):
    reports = sorted(p for p in (SHIPPED / "evaluation").iterdir() if p.is_dir())
    assert reports and all((r / name).is_file() for r in reports for name in REPORT_FILES)
    card = write_model_card(SHIPPED / "run", reports, tmp_path / "MODEL_CARD.md", saved_model=SHIPPED_SAVEDMODEL,
                            title=f"specsr/{SHIPPED_SAVEDMODEL.name}")
    assert card.read_text() == (SHIPPED / "MODEL_CARD.md").read_text()
    assert "## Shared space and anomalies" in card.read_text()  # the reports' cross-modal tables


def test_shipped_savedmodel_passes_serving_check_against_its_shipped_run():
    from specsr_keras.export.serving_check import run_serving_check

    report = run_serving_check(SHIPPED_SAVEDMODEL, n=1)  # fresh TF process; run found via "../run"
    assert report["parity"]["ok"], report["parity"]


def test_shipped_files_fit_the_size_budget():
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 50e6


def test_specsr_infer_runs_the_shipped_savedmodel_with_its_own_defaults(bright_euclid, tmp_path):
    """`specsr infer CAT --model saved_models/specsr/N --out R` works as written in the docs (no
    --samples: the export's K), and its N2 equals what the served signature returns."""
    from astropy.table import Table
    from typer.testing import CliRunner

    from cli.main import app

    rows = {"object_id": [f"g{i}" for i in range(4)], "flux": bright_euclid["lowres_flux"][:4],
            "ivar": bright_euclid["lowres_ivar"][:4], "mask": bright_euclid["lowres_mask"][:4],
            "z_prior": bright_euclid["z_prior"][:4]}
    catalog = tmp_path / "cat.fits"
    table = Table(rows)
    table.meta["INSTRUME"] = "euclid_nisp_red"
    table.write(catalog)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["infer", str(catalog), "--model", str(SHIPPED_SAVEDMODEL), "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = Table.read(out / "results.fits")
    assert len(results) == 4 and np.all(np.isfinite(results["n2_p50"]))
    predictor = load_predictor(str(SHIPPED_SAVEDMODEL))
    batch = {k: bright_euclid[k][:4] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior")}
    batch["instrument_id"] = np.full(4, 1)
    from specsr_keras.inference.runner import chunk_seed

    served = predictor.predict(batch, seed=chunk_seed(0, 0, 0))
    np.testing.assert_allclose(results["n2_p50"], served["n2_p50"], atol=1e-3)  # one N2 per model


def test_data_consistency_brings_the_shipped_models_reduced_chi2_to_about_one():
    """Guidance on vs off on the same trained model: at high S/N the posterior samples agree
    with the observed pixels only when the data-consistency step runs."""
    from specsr_keras.inference.superres_predictor import SuperResolutionPredictor

    bright = simulate_galaxies(16, "euclid", seed=9002, min_ha_snr=20.0, noise_scale=0.2)
    batch = {k: bright[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior")}
    batch["source_sigma_arcsec"] = bright["dispersion_sigma_arcsec"]
    batch["instrument_id"] = np.full(16, 1)
    keras_run = SuperResolutionPredictor.from_path(SHIPPED / "run", "euclid")
    chi2 = {}
    for guided in (True, False):
        predictor = keras_run.with_sampler(keras_run.sampler.replace(data_consistency=guided))
        chi2[guided] = np.median(predictor.generate(batch, seed=0)[0]["reconstruction_chi2"])
    assert 0.6 < chi2[True] <= 1.2 and chi2[False] > 1.3 * chi2[True], chi2  # measured 0.89 and 1.32


def test_infer_reads_each_instruments_rows_on_their_own_grid(tmp_path):
    """A catalogue mixing Euclid and G141 rows through the Keras run: G141 rows go to the model
    retargeted to G141 (its LSF in the forward operator), not resampled onto the Euclid grid."""
    from astropy.table import Table

    from specsr_keras.inference.runner import InferConfig, run_inference
    from specsr_keras.measure.flags import QualityFlag
    from tests.inference_fixtures import write_ragged_parquet

    parts = [simulate_galaxies(3, name, seed=9003, min_ha_snr=10.0) for name in ("euclid", "hst_g141")]
    columns = {"object_id": np.arange(6), "instrument": np.array(["euclid_nisp_red"] * 3 + ["hst_g141"] * 3),
               "flux": [row for part in parts for row in part["lowres_flux"]],
               "ivar": [row for part in parts for row in part["lowres_ivar"]],
               "z_prior": np.concatenate([part["z_prior"] for part in parts])}
    catalog = write_ragged_parquet(tmp_path / "mixed.parquet", columns)
    summary = run_inference(catalog, str(SHIPPED / "run"), tmp_path / "run", InferConfig(samples=4))
    results = Table.read(summary.results, mask_invalid=False)
    assert summary.rows_out == 6 and not np.any(results["flags"] & QualityFlag.RESAMPLED)
    z_true = np.concatenate([part["z"] for part in parts])
    # G141 z scatter at S/N > 10 is NMAD ~1e-3 (1+z) (the shipped G141 report); 4 draws a galaxy
    assert np.all(np.abs(results["z_p50"] - z_true) / (1 + z_true) < 5e-3)


def test_shipping_a_report_again_leaves_no_figure_of_the_earlier_one(tmp_path):
    from specsr_keras.ship.shipping import copy_report

    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    for name in REPORT_FILES:
        (report / name).write_text("first")
    (report / "figures" / "old.png").write_bytes(b"old")
    dest = copy_report(report, tmp_path / "shipped")
    assert (dest / "figures" / "old.png").is_file()
    (report / "figures" / "old.png").unlink()
    (report / "figures" / "new.png").write_bytes(b"new")
    copy_report(report, dest)
    assert sorted(p.name for p in (dest / "figures").iterdir()) == ["new.png"]
