"""evaluation.crossmodal: retrieval, kNN R², anomaly AUROC and generation metrics."""

import numpy as np
import pytest

from specsr_keras.evaluation.crossmodal import (
    anomaly_auroc,
    anomaly_by_class,
    anomaly_by_snr,
    generation_metrics,
    knn_r2,
    mismatched_pairs,
    retrieval_top_k,
    roc_curve,
)


def test_retrieval_of_identical_embeddings_is_perfect_across_batches():
    emb = np.random.default_rng(0).normal(size=(2500, 16))
    assert retrieval_top_k(emb, 2.0 * emb, batch=1000) == {"top1": 1.0, "top5": 1.0}


def test_retrieval_of_shuffled_embeddings_is_chance():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(2000, 16))
    out = retrieval_top_k(emb, emb[rng.permutation(2000)], ks=(1, 100))
    assert out["top1"] < 0.005
    assert out["top100"] == pytest.approx(100 / 2000, abs=0.02)


def test_knn_r2_is_high_for_informative_and_zero_for_random_embeddings():
    rng = np.random.default_rng(2)
    z = rng.uniform(0.8, 1.8, 1500)
    angle = (z - 0.8) * 1.2  # z on an arc of the unit circle, plus weak noise dimensions
    informative = np.c_[np.cos(angle), np.sin(angle), 0.01 * rng.normal(size=(z.size, 6))]
    assert knn_r2(informative, z) > 0.98
    assert abs(knn_r2(rng.normal(size=(z.size, 8)), z)) < 0.15


def test_auroc_of_perfect_inverted_and_tied_scorers():
    labels = np.r_[np.zeros(990, bool), np.ones(10, bool)]
    perfect = anomaly_auroc(labels.astype(float) + np.linspace(0, 0.5, 1000), labels)
    assert perfect["auroc"] == 1.0
    # at 1 % FPR the threshold also flags 9 of 990 normals: precision 10 / 19
    assert perfect["precision_at_1pct_fpr"] == pytest.approx(10 / 19)
    assert anomaly_auroc(-labels.astype(float), labels)["auroc"] == 0.0
    assert anomaly_auroc(np.ones(1000), labels)["auroc"] == 0.5
    assert np.isnan(anomaly_auroc(np.ones(5), np.zeros(5, bool))["auroc"])


def test_roc_curve_ends_at_one_and_skips_nan_scores():
    roc = roc_curve([0.9, 0.8, np.nan, 0.1], [True, False, True, False])
    assert roc["fpr"].tolist() == [0.0, 0.0, 0.5, 1.0]
    assert roc["tpr"].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_generation_metrics_score_n2_intervals_and_references_on_rows_with_truth():
    true_n2 = np.r_[np.linspace(-1.2, -0.2, 9), np.nan]
    p50 = true_n2 + 0.1  # every estimate 0.1 dex high
    p50[0] = np.nan  # no estimate for the first galaxy
    generated = {"n2_p50": p50, "n2_p16": p50 - 0.05, "n2_p84": p50 + 0.05,  # 68 %: misses all
                 "n2_p2_5": p50 - 0.2, "n2_p97_5": p50 + 0.2}  # 95 %: covers all but the first
    out = generation_metrics(generated, true_n2, {"exact": true_n2})
    assert out["n"] == 9 and out["n_estimated"] == 8
    assert out["n2_bias"] == pytest.approx(0.1) and out["n2_nmad"] == pytest.approx(0.0, abs=1e-12)
    assert out["coverage_68"] == 0.0 and out["coverage_95"] == pytest.approx(8 / 9)
    assert out["references"]["exact"] == 0.0 and out["references"]["constant"] > 0.3
    with pytest.raises(ValueError, match="rows"):
        generation_metrics(generated, true_n2[:5])


def test_probes_read_a_quantity_from_an_informative_space_and_not_from_noise():
    from specsr_keras.evaluation.crossmodal import linear_r2, pooled_retrieval, probe_metrics

    rng = np.random.default_rng(3)
    z, mass = rng.uniform(0.8, 1.8, 600), rng.normal(10, 0.5, 600)
    informative = np.c_[z, mass, rng.normal(size=(600, 6)) * 0.01]
    assert linear_r2(informative, z) > 0.98 and abs(linear_r2(rng.normal(size=(600, 8)), z)) < 0.05
    probes = probe_metrics({"spectrum": informative}, {"z": z, "log_mstar": mass, "n2": np.full(600, np.nan)})
    assert set(probes["spectrum"]) == {"z", "log_mstar"} and probes["spectrum"]["log_mstar"]["linear"] > 0.98
    pooled = pooled_retrieval(informative, informative + 1e-4 * rng.normal(size=informative.shape), 256)
    assert pooled["pools"] == 2 and pooled["top1"] > 0.9


def _truth(n: int, agn_rows, ratio: float, artefact_column: bool = True) -> dict:
    truth = {"is_agn": np.zeros(n, bool), "has_broad": np.zeros(n, bool), "is_contaminated": np.zeros(n, bool),
             "ha_flux": np.ones(n), "broad_ha_flux": np.zeros(n), "ha_snr": np.full(n, 12.0),
             "has_artefact": np.zeros(n, bool) if artefact_column else np.full(n, np.nan)}
    truth["is_agn"][agn_rows] = truth["has_broad"][agn_rows] = True
    truth["broad_ha_flux"][agn_rows] = ratio
    return truth


def test_anomaly_by_class_ranks_p_columns_and_measures_their_false_positive_rate():
    n = 400
    truth = _truth(n, slice(0, 40), ratio=10.0, artefact_column=False)  # a set simulated before artefacts
    truth["broad_ha_flux"][:20] = 1.0  # half of the AGN with strong narrow lines
    rng = np.random.default_rng(2)
    p = rng.uniform(size=n)  # uniform for normal galaxies: 1 % below 0.01
    p[:40] = 1e-6  # every AGN found
    out = anomaly_by_class({}, truth, {"anomaly_fpr": p})
    for label in ("broad-line AGN with narrow lines", "broad-line AGN without narrow lines"):
        assert out["anomaly_fpr"][label]["auroc"] == 1.0  # ranked by -log10 p: small p first
        assert out["anomaly_fpr"][label]["n_anomalous"] == 20
    calibration = out["calibration"]["anomaly_fpr"]
    assert calibration["broad-line AGN without narrow lines"] == 1.0
    assert calibration["normal"] == pytest.approx(np.mean(p[40:] < 0.01))
    assert np.isnan(calibration["contamination"]) and np.isnan(calibration["artefact"])  # no such object


def test_anomaly_by_snr_bins_classes_and_normals_by_the_total_halpha_snr():
    n = 600
    truth = _truth(n, slice(0, 100), ratio=1.0)
    truth["ha_snr"][:50] = 8.0  # faint AGN
    truth["ha_snr"][50:100] = truth["ha_snr"][350:450] = 24.0  # bright AGN and normal galaxies
    truth["ha_snr"][100:350] = 4.0
    truth["has_artefact"][550:] = True
    score = np.random.default_rng(4).uniform(size=n)
    score[50:100] += 1.0  # only the bright AGN stand out
    out = anomaly_by_snr(score, truth)["broad-line AGN with narrow lines"]
    assert out[">20"]["n_anomalous"] == 50 and out[">20"]["auroc"] == 1.0
    # faint AGN against the normal galaxies of S/N 5-10 (none): no AUROC
    assert out["5-10"]["n_anomalous"] == 50 and np.isnan(out["5-10"]["auroc"])
    assert out["10-20"]["n_anomalous"] == 0
    assert anomaly_by_snr(score, truth)["artefact"]["10-20"]["n_anomalous"] == 50


def test_mismatched_pairs_are_found_in_an_aligned_space_and_not_in_noise():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(500, 16))
    aligned = mismatched_pairs(image, image + 0.1 * rng.normal(size=image.shape))
    assert aligned["auroc"] > 0.99 and aligned["n_anomalous"] == 500
    assert abs(mismatched_pairs(image, rng.normal(size=image.shape))["auroc"] - 0.5) < 0.05


def test_aperture_photometry_measures_a_source_on_the_sky_in_units_of_its_noise():
    from specsr_keras.measure.photometry import aperture_asinh_magnitudes, aperture_fluxes

    rng = np.random.default_rng(5)
    y, x = np.mgrid[:64, :64]
    profile = np.exp(-0.5 * ((y - 31.5) ** 2 + (x - 31.5) ** 2) / 3.0**2)
    profile /= profile.sum()  # all of it inside the 16-pixel aperture
    sigma, sky, n = 0.5, 3.0, 300
    noise_of_sum = sigma * np.sqrt(np.sum(np.hypot(y - 31.5, x - 31.5) <= 16))
    flux = np.where(np.arange(n) % 2, 0.0, 500.0)
    images = flux[:, None, None, None] * profile[None, :, :, None] + sky + sigma * rng.normal(size=(n, 64, 64, 1))
    images[:, 0, 0, :] = np.nan  # a bad pixel in the background costs nothing
    measured, noise = aperture_fluxes(images)
    assert np.allclose(noise, noise_of_sum, rtol=0.1)
    for value in (0.0, 500.0):  # the sky subtracted; scatter of the sum + the sky estimate's
        error = (measured[flux == value, 0] - value) / noise_of_sum
        assert abs(np.mean(error)) < 0.2 and 0.9 < np.std(error) < 1.5
    mags = aperture_asinh_magnitudes(images)[:, 0]
    assert np.allclose(np.median(mags[flux > 0]), np.arcsinh(500.0 / (2 * noise_of_sum)), atol=0.05)
    assert np.all(np.isfinite(mags)) and abs(np.median(mags[flux == 0])) < 0.1
    with pytest.raises(ValueError, match="cutouts"):
        aperture_fluxes(images[0])


def test_probe_baselines_score_the_direct_fit_on_every_galaxy_next_to_the_embeddings():
    from specsr_keras.evaluation.crossmodal import (
        DIRECT_FIT_BASELINE,
        CrossModalInputs,
        crossmodal_metrics,
        probe_baselines,
    )

    rng = np.random.default_rng(8)
    n = 500
    z = rng.uniform(0.9, 1.8, n)
    fit = {"z_p50": z + rng.normal(0, 0.003, n), "ha_flux_p50": rng.lognormal(0, 0.5, n),
           "nii_6585_flux_p50": rng.lognormal(-1, 0.5, n), "n2_p50": rng.normal(-0.5, 0.2, n)}
    fit["z_p50"][:10] = np.nan  # failed fits: the median, not a lost row
    features = probe_baselines(lowres_fit=fit)[DIRECT_FIT_BASELINE]
    assert features.shape == (n, 3) and np.all(np.isfinite(features))
    noise = rng.normal(size=(n, 8))
    truth = {"z": z, "n2": np.full(n, np.nan)}
    inputs = CrossModalInputs(spectrum_embeddings=noise, probe_baselines={DIRECT_FIT_BASELINE: features})
    out = crossmodal_metrics(inputs, truth, None)
    assert out["probe_baselines"][DIRECT_FIT_BASELINE]["z"]["linear"] > 0.9
    assert out["probe_baselines"][DIRECT_FIT_BASELINE]["z"]["knn"] > 0.9
    assert out["probes"]["spectrum"]["z"]["knn"] < 0.1 and set(out["probes"]) == {"spectrum"}
