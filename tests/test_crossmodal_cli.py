"""specsr embed / similar / anomalies / generate on a tiny untrained run and tiny catalogs."""

import h5py
import numpy as np
import pytest
from astropy.table import Table
from typer.testing import CliRunner

from cli.main import app
from specsr_keras.crossmodal.anomalies import anomaly_table, robust_standardise
from specsr_keras.crossmodal.neighbours import NeighbourIndex, knn_mean_distance
from specsr_keras.crossmodal.store import EmbeddingSet, read_embeddings

pytestmark = pytest.mark.keras
runner = CliRunner()
N_ROWS, NAN_ROW = 6, 2


def _invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run layout holding an untrained tiny aligner and super-resolver (the image-to-spectrum
    generator is the super-resolver given the image alone)."""
    from specsr_keras.models import presets
    from specsr_keras.models.preprocessor import STAGE_KEYS, dummy_inputs

    run = tmp_path_factory.mktemp("run")
    (run / "models").mkdir()
    aligner = presets.build_aligner("tiny")
    superres = presets.build_superresolver("tiny", spectrum_embedder=aligner.spectrum_embedder(),
                                           image_embedder=aligner.image_embedder(), seed=3)
    for name, model in (("contrastive", aligner), ("superres", superres)):
        model(dummy_inputs(STAGE_KEYS[name]))
        model.save(run / "models" / f"{name}.keras")
    return run


@pytest.fixture(scope="module")
def image_catalog(tmp_path_factory):
    """N_ROWS Gaussian-blob cutouts (64, 64, 4) [nJy]; row NAN_ROW is all NaN."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:64, :64]
    images = []
    for i in range(N_ROWS):
        blob = np.exp(-((x - 32) ** 2 + (y - 32) ** 2) / (2 * (2 + i) ** 2))
        images.append(blob[..., None] * np.array([1, 2, 3, 4]) * (1 + i)
                      + rng.normal(0, 0.01, (64, 64, 4)))
    images = np.array(images, np.float32)
    images[NAN_ROW] = np.nan
    path = tmp_path_factory.mktemp("cat") / "images.fits"
    Table({"object_id": [f"g{i}" for i in range(N_ROWS)],
           "z_prior": np.where(np.arange(N_ROWS) == 4, np.nan, 1.2),
           "image": images}).write(path)
    return path


@pytest.fixture(scope="module")
def image_index(run_dir, image_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "images.h5"
    _invoke("embed", image_catalog, "--model", run_dir, "--modality", "image", "--out", out,
            "--chunk-rows", 4)
    return out


def test_embed_quarantines_the_nan_cutout_and_accounts_for_every_row(image_index):
    with h5py.File(image_index) as handle:
        ids = handle["ids"].asstr()[:]
        emb = handle["embedding"][:]
        reasons = handle["quarantine_reasons"].asstr()[:]
        assert handle.attrs["modality"] == "image"
        assert list(handle["quarantine_ids"].asstr()[:]) == [f"g{NAN_ROW}"]
    assert len(ids) + len(reasons) == N_ROWS
    assert reasons[0].startswith("non_finite_image")
    assert emb.shape == (N_ROWS - 1, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_embed_images_api_matches_the_embedding_file(run_dir, image_catalog, image_index):
    import specsr_keras

    images = np.asarray(Table.read(image_catalog)["image"])[[0, 1]]
    direct = specsr_keras.embed_images(images, run_dir)
    stored = read_embeddings(image_index).embedding[:2]
    np.testing.assert_allclose(direct, stored, atol=1e-5)


def test_embed_spectra_gives_unit_vectors_and_rejects_a_wrong_grid(run_dir):
    from specsr_keras import embed_spectra
    from specsr_keras.instruments import get_instrument

    n_pix = get_instrument("euclid_nisp_red").grid.n_pixels
    rng = np.random.default_rng(0)
    flux = 1.0 + rng.normal(0, 0.1, (3, n_pix))
    emb = embed_spectra(flux, np.full(flux.shape, 100.0), None, "euclid_nisp_red", run_dir)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="grid"):
        embed_spectra(flux[:, :10], flux[:, :10], None, "euclid_nisp_red", run_dir)


def test_similar_ranks_the_object_itself_first_across_modalities(image_index, tmp_path):
    png = tmp_path / "mosaic.png"
    result = _invoke("similar", "--index", image_index, "--query", "g0", "--k", 3,
                     "--cross-modal", image_index, "--png", png)
    rows = [line for line in result.output.splitlines() if "g0" in line and "│" in line]
    assert rows and rows[0].split("│")[3].strip() == "g0"
    assert float(rows[0].split("│")[4]) == pytest.approx(1.0, abs=1e-4)
    assert png.stat().st_size > 1000


def test_faiss_and_sklearn_neighbours_agree():
    rng = np.random.default_rng(3)
    data, queries = rng.normal(size=(500, 16)), rng.normal(size=(20, 16))
    pos_f, sim_f = NeighbourIndex(data, backend="faiss").search(queries, 5)
    pos_s, sim_s = NeighbourIndex(data, backend="sklearn").search(queries, 5)
    np.testing.assert_array_equal(pos_f, pos_s)
    np.testing.assert_allclose(sim_f, sim_s, atol=1e-5)


def test_isolated_point_has_the_largest_knn_distance():
    rng = np.random.default_rng(4)
    cluster = np.array([1.0, 0, 0, 0]) + rng.normal(0, 0.05, (100, 4))
    data = np.vstack([cluster, [[0, 0, 0, 1.0]]])
    distance = knn_mean_distance(data, k=5)
    assert np.argmax(distance) == 100
    assert distance[100] == pytest.approx(0.9, abs=0.05)  # its 5 nearest: cos ~ 2σ = 0.1


def test_robust_standardise_uses_median_and_mad():
    z = robust_standardise([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    assert z[2] == pytest.approx(0.0)
    assert z[3] == pytest.approx(1 / 1.4826, rel=1e-6)
    assert np.isnan(z[-1])


def _write_set(path, ids, emb, modality):
    with h5py.File(path, "w") as handle:
        handle["ids"] = np.array(ids, dtype=object).astype(h5py.string_dtype())
        handle["rows"] = np.arange(len(ids))
        handle["embedding"] = emb.astype(np.float32)
        handle.attrs.update(modality=modality, catalog="")


def test_anomalies_rank_planted_cross_modal_mismatches_first(tmp_path):
    rng = np.random.default_rng(5)
    n, planted = 300, [7, 150, 299]
    image = rng.normal(size=(n, 16))
    spectrum = image + rng.normal(0, 0.2, (n, 16))
    spectrum[planted] = rng.normal(size=(3, 16))
    ids = [f"o{i}" for i in range(n)]
    _write_set(tmp_path / "img.h5", ids, image, "image")
    _write_set(tmp_path / "spec.h5", ids, spectrum, "spectrum")
    out = tmp_path / "anom"
    _invoke("anomalies", "--index", tmp_path / "img.h5", "--spectra-index",
            tmp_path / "spec.h5", "--top", 10, "--out", out)
    table = Table.read(out / "anomalies.fits")
    planted_ids = {f"o{i}" for i in planted}
    by_disagreement = table[np.argsort(table["p_disagreement"])]
    assert set(by_disagreement["object_id"][:3]) == planted_ids
    assert np.all(by_disagreement["p_disagreement"][:3] == np.array([1, 2, 3]) / n)
    assert by_disagreement["z_disagreement"][2] > 5.0
    # Bonferroni over the three parts (density extremes of the random cloud rank among them);
    # the mean standardised score puts the mismatches first.
    row = {r["object_id"]: r for r in table}
    assert sorted(row[i]["anomaly_fpr"] for i in planted_ids) == pytest.approx([0.01, 0.02, 0.03])
    assert np.all(np.diff(table["anomaly_fpr"]) >= 0)
    assert set(table[np.argsort(-table["score"])]["object_id"][:3]) == planted_ids
    assert len(Table.read(out / "anomalies_top.csv")) == 10
    assert (out / "gallery.png").stat().st_size > 1000
    assert (out / "score_histogram.png").stat().st_size > 1000
    # infer's line-model false-positive rate joins as a fourth part.
    Table({"object_id": ["o3", "o4"], "anomaly_fpr": [1e-6, 0.5]}).write(tmp_path / "results.fits")
    _invoke("anomalies", "--index", tmp_path / "img.h5", "--spectra-index", tmp_path / "spec.h5",
            "--results", tmp_path / "results.fits", "--out", out)
    table = Table.read(out / "anomalies.fits")
    assert table["object_id"][0] == "o3" and table["anomaly_fpr"][0] == pytest.approx(4e-6)
    assert np.isnan(np.ma.filled(table["p_lines"], np.nan)[table["object_id"] == "o5"][0])
    for bad, message in (({"object_id": ["o3"]}, "anomaly_fpr"),
                         ({"object_id": ["x1", "x2"], "anomaly_fpr": [0.1, 0.2]}, "no object_id matches"),
                         ({"object_id": ["o3", "o3"], "anomaly_fpr": [0.1, 0.2]}, "appears 2 times")):
        Table(bad).write(tmp_path / "bad.fits", overwrite=True)
        result = runner.invoke(app, ["anomalies", "--index", str(tmp_path / "img.h5"), "--results",
                                     str(tmp_path / "bad.fits"), "--out", str(out)])
        assert result.exit_code != 0 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_upper_tail_share_is_the_empirical_false_positive_rate():
    from specsr_keras.crossmodal.anomalies import upper_tail_share

    share = upper_tail_share([1.0, 3.0, 3.0, 2.0, np.nan])
    np.testing.assert_allclose(share, [1.0, 0.5, 0.5, 0.75, np.nan])  # ties share the larger rate


def test_anomaly_table_keeps_objects_found_in_one_index_only():
    emb = np.eye(4)
    a = EmbeddingSet(np.array(["a", "b", "c"]), np.arange(3), emb[:3], {"modality": "image"},
                     np.zeros(0, str), np.zeros(0, str))
    b = EmbeddingSet(np.array(["b", "d"]), np.arange(2), emb[[1, 3]], {"modality": "spectrum"},
                     np.zeros(0, str), np.zeros(0, str))
    table = anomaly_table(a, b, k=1)
    assert sorted(table["object_id"]) == ["a", "b", "c", "d"]
    row = {r["object_id"]: r for r in table}
    assert row["b"]["disagreement"] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(row["a"]["disagreement"])


def test_generate_quarantines_the_nan_cutout_and_resumes(run_dir, image_catalog, tmp_path):
    from specsr_keras.measure.flags import QualityFlag

    out = tmp_path / "gen"
    args = ("generate", image_catalog, "--model", run_dir, "--out", out, "--samples", 2,
            "--chunk-rows", N_ROWS)
    _invoke(*args)
    results = Table.read(out / "results.fits", mask_invalid=False)
    quarantine = Table.read(out / "quarantine.fits")
    assert len(results) + len(quarantine) == N_ROWS
    assert list(quarantine["object_id"]) == [f"g{NAN_ROW}"]
    assert str(quarantine["reason"][0]).startswith("non_finite_image")
    assert np.all(results["flags"] & QualityFlag.NO_FLUX_SCALE)
    no_prior = results[results["object_id"] == "g4"][0]
    assert no_prior["flags"] & QualityFlag.NO_Z_PRIOR and np.isnan(no_prior["z_p50"])
    assert results["sr_mean"].shape == (N_ROWS - 1, 320)
    again = _invoke(*args)
    assert "0 / 1 / 1" in again.output  # chunks run / skipped / total


def test_similar_with_an_unknown_id_fails_with_one_line(tmp_path):
    _write_set(tmp_path / "img.h5", ["a", "b"], np.eye(2), "image")
    result = runner.invoke(app, ["similar", "--index", str(tmp_path / "img.h5"),
                                 "--query", "zzz"])
    assert result.exit_code == 1
    assert "'zzz' is not in the image index (2 objects)" in result.output


def test_evaluate_embeds_and_generates_from_the_images_of_the_first_set(run_dir, tmp_path):
    import json

    from specsr_keras.data.shards import write_shards
    from specsr_keras.simulate import dataset_metadata, simulate_galaxies

    n = 12
    data = tmp_path / "heldout"
    manifest, attrs = dataset_metadata("euclid", 5)
    write_shards(data, [simulate_galaxies(n, "euclid", seed=5)], manifest, attrs=attrs)
    out = tmp_path / "report"
    # the headline set (Euclid) is the second: its rows are embedded and generated, not the first set's
    g141 = tmp_path / "g141"
    manifest, attrs = dataset_metadata("g141", 6)
    write_shards(g141, [simulate_galaxies(7, "g141", seed=6)], manifest, attrs=attrs)
    _invoke("evaluate", "--model", "baseline", "--data", f"{g141},{data}", "--out", out,
            "--embeddings-from", run_dir, "--withhold", "mass")
    crossmodal = json.loads((out / "metrics.json").read_text())["crossmodal"]
    assert crossmodal["generation"]["n"] == n and crossmodal["probes"]["image"]
    assert crossmodal["generation"]["inputs"] == "its amplitude, z prior"  # the mass withheld here too
    # the embeddings' probes come with the simple baselines of each modality, on the same rows
    assert set(crossmodal["probe_baselines"]) == {"image baseline: aperture photometry",
                                                  "spectrum baseline: direct low-res fit"}
    assert "log_sfr" in crossmodal["probes"]["image"]
    report = (out / "report.md").read_text()
    assert "Spectra generated from images" in report and "| spectrum baseline: direct low-res fit |" in report
    refused = runner.invoke(app, ["evaluate", "--model", "baseline", "--data", str(data), "--out", str(out),
                                  "--embeddings-from", str(run_dir), "--withhold", "image"])
    assert refused.exit_code == 1 and "withhold" in refused.output


def test_image_rows_carry_the_catalogue_mass_to_the_generator(image_catalog, tmp_path):
    from specsr_keras.inference.catalog import open_catalog
    from specsr_keras.inference.images import prepare_image_rows

    table = Table.read(image_catalog)
    table["lmass"] = np.arange(N_ROWS) + 9.0  # an alias of log_mstar_catalog
    path = tmp_path / "with_mass.fits"
    table.write(path)
    prepared = prepare_image_rows(open_catalog(path, modality="image").read(0, N_ROWS))
    kept = [row for row in range(N_ROWS) if row != NAN_ROW]  # the NaN cutout is quarantined
    np.testing.assert_array_equal(prepared.batch["log_mstar_catalog"], np.arange(N_ROWS)[kept] + 9.0)
    without = prepare_image_rows(open_catalog(image_catalog, modality="image").read(0, N_ROWS))
    assert np.isnan(without.batch["log_mstar_catalog"]).all()
