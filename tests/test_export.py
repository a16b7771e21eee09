"""specsr_keras/export: SavedModel layout, signatures, parity, client, predictor, CLI.

Runs are untrained (`SpecsrModels` weights as initialised): export does not care. The
TF-written run uses the `tiny` preset and is exported in this process; the JAX-written
run is written by a KERAS_BACKEND=jax subprocess started first (it runs while the TF
tests do) with the `micro` preset, because eager JAX compiles every weight initialiser
(~1 min for `tiny` on a shared 2-core CPU), and is exported through the TensorFlow
subprocess path.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from specsr_keras.export import client, export_run
from specsr_keras.export.exporter import write_models_config
from specsr_keras.export.serving_check import (
    _check_outputs,
    check_export,
    parity,
    run_serving_check,
    sample_inputs,
)
from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.models.samplers import Sampler
from specsr_keras.spectral.band import edges_from_centres, resample_flux

pytestmark = pytest.mark.keras
if keras.backend.backend() != "tensorflow":
    pytest.skip("exports are built and loaded under TensorFlow", allow_module_level=True)

import tensorflow as tf  # noqa: E402  (only after the backend check)

STEPS, SAMPLES = 3, 4
SAMPLING = {"steps": STEPS, "samples": SAMPLES}

_WRITE_RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import keras
    from specsr_keras.training.pipeline import SpecsrModels
    out, preset, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    models = SpecsrModels(preset, seed)
    (out / "models").mkdir(parents=True, exist_ok=True)
    for name in ("contrastive", "superres"):
        models.get(name).save(out / "models" / f"{name}.keras")
    run = {"backend": keras.backend.backend(), "preset": preset}
    (out / "run.json").write_text(json.dumps(run))
""")


def _write_run_process(run_dir, backend, preset, seed):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_backend_optimization_level=0",
    )  # fast XLA compiles (CPU)
    return subprocess.Popen(
        [sys.executable, "-c", _WRITE_RUN, str(run_dir), preset, str(seed)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def jax_run_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("jax_run")
    process = _write_run_process(run_dir, "jax", "micro", 1)
    yield run_dir, process
    if process.poll() is None:
        process.kill()


@pytest.fixture(scope="module")
def tf_run(tmp_path_factory, jax_run_process):
    from specsr_keras.training.pipeline import SpecsrModels

    run_dir = tmp_path_factory.mktemp("tf_run")
    models = SpecsrModels("tiny", 0)
    (run_dir / "models").mkdir()
    for name in ("contrastive", "superres"):
        models.get(name).save(run_dir / "models" / f"{name}.keras")
    (run_dir / "run.json").write_text(json.dumps({"backend": "tensorflow", "preset": "tiny"}))
    return run_dir


@pytest.fixture(scope="module")
def exported(tf_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("saved_models")
    summary = export_run(tf_run, name="specsr", version=1, out=out, sampler=SAMPLING)
    return out, summary


@pytest.fixture(scope="module")
def export_dir(exported):
    return exported[0] / "specsr" / "1"


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(str(export_dir))


@pytest.fixture(scope="module")
def signatures(export_dir):
    return client.load_signatures(export_dir)


@pytest.fixture(scope="module")
def inputs(signatures):
    return sample_inputs(signatures, n=3, seed=5)


def _call(loaded, name, arrays):
    function = loaded.signatures[name]
    names = function.structured_input_signature[1]
    out = function(**{k: tf.constant(arrays[k], dtype=names[k].dtype) for k in names})
    return {k: v.numpy() for k, v in out.items()}


def test_export_writes_tf_serving_layout(exported, export_dir, signatures):
    out, summary = exported
    assert summary["subprocess"] is False and summary["backend_trained_on"] == "tensorflow"
    assert (export_dir / "saved_model.pb").is_file() and (export_dir / "variables").is_dir()
    assert not [p for p in (out / "specsr").iterdir() if not p.name.isdigit()]  # no temp dirs left
    meta = signatures["metadata"]
    euclid = get_instrument("euclid")
    assert meta["sampler"]["kind"] == "ddim" and meta["sampler"]["steps"] == STEPS and meta["samples"] == SAMPLES
    assert meta["sampler"]["data_consistency"] is True
    assert meta["instrument"]["instrument"] == "euclid_nisp_red"
    np.testing.assert_allclose(meta["lowres_bin_edges"], euclid.bin_edges)
    flux_spec = signatures["endpoints"]["super_resolve"]["inputs"]["lowres_flux"]
    assert flux_spec["shape"] == [None, euclid.bin_edges.size - 1]
    assert "1e-17" in flux_spec["unit"]
    assert signatures["endpoints"]["super_resolve"]["outputs"]["samples"]["shape"] == [
        None,
        SAMPLES,
        320,
    ]
    assert 1e6 < summary["size_bytes"] < 5e7


def test_existing_version_is_never_overwritten(exported, tf_run, export_dir):
    out, _ = exported
    before = (export_dir / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="never overwritten; use --version 2"):
        export_run(tf_run, name="specsr", version=1, out=out, sampler=SAMPLING)
    assert (export_dir / "saved_model.pb").stat().st_mtime_ns == before
    from cli.main import app

    result = CliRunner().invoke(app, ["export", str(tf_run), "--version", "1", "--out", str(out)])
    assert result.exit_code == 1 and "never overwritten" in result.output
    assert "Traceback" not in result.output


def test_every_signature_matches_signatures_json(loaded, signatures, inputs):
    assert set(loaded.signatures) == set(signatures["endpoints"]) | {"serving_default"}
    results = {}
    for name, spec in signatures["endpoints"].items():
        feed = client.check_inputs(signatures, name, {k: inputs[k] for k in spec["inputs"]})
        results[name] = _call(loaded, name, feed)
        _check_outputs(name, spec["outputs"], results[name], batch=3)
    default = loaded.signatures["serving_default"]  # the same function as super_resolve
    assert set(default.structured_outputs) == set(results["super_resolve"])
    assert default.structured_input_signature == (
        loaded.signatures["super_resolve"].structured_input_signature
    )


def test_super_resolve_matches_keras_superresolver(loaded, signatures, inputs, tf_run):
    feed = client.check_inputs(signatures, "super_resolve", inputs)
    report = parity(signatures, feed, _call(loaded, "super_resolve", feed), run_dir=tf_run)
    assert report["ok"] and report["max_abs_diff_relative_to_scale"] <= 1e-4
    assert report["scale_relative_diff"] < 1e-6


@pytest.mark.parametrize("sampler", [Sampler("ddim", 2, eta=0.7, posterior_draws=True, samples=3, noise_check=True),
                                     Sampler("dpm++2m", 3, samples=3)])
def test_graph_super_resolve_is_the_keras_generate(tf_run, inputs, sampler):
    from specsr_keras.export.exporter import load_models
    from specsr_keras.export.graph import ServingGraph, sampler_noise

    models = load_models(tf_run)
    euclid = get_instrument("euclid")
    graph = ServingGraph(models["superres"], models["contrastive"], euclid, sampler)
    row = {k: v[:2] for k, v in inputs.items()}
    got = graph.super_resolve(*(tf.constant(row[k]) for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior",
                                                                "source_sigma_arcsec", "log_mstar", "seed")))
    raw = {"lowres_flux": row["lowres_flux"], "lowres_ivar": row["lowres_ivar"], "lowres_mask": row["lowres_mask"],
           "z_prior": row["z_prior"], "source_sigma_arcsec": row["source_sigma_arcsec"],
           "log_mstar_catalog": row["log_mstar"]}
    noise = sampler_noise(row["seed"], sampler, 3, (320, 1), graph.preprocessor.observed_pixels)
    expected = models["superres"].generate(raw, 3, sampler, noise=noise, preprocessor=graph.preprocessor)
    np.testing.assert_allclose(got["samples"].numpy(), keras.ops.convert_to_numpy(expected["samples"]), atol=1e-5)
    np.testing.assert_allclose(got["n2"].numpy(), keras.ops.convert_to_numpy(expected["n2"]), atol=1e-4)


def test_rows_depend_on_their_own_seed_only(loaded, inputs):
    both = _call(loaded, "super_resolve", inputs)
    alone = _call(loaded, "super_resolve", {k: v[1:2] for k, v in inputs.items()})
    np.testing.assert_allclose(
        alone["samples"][0], both["samples"][1], atol=1e-4 * both["scale"][1]
    )


def test_nan_and_masked_pixels_give_finite_outputs_or_documented_nans(loaded, export_dir, inputs):
    loaded_dir = export_dir
    bad = {k: np.array(v, copy=True) for k, v in inputs.items()}
    bad["lowres_flux"][0, :50] = np.nan  # NaN flux (masked)
    bad["lowres_mask"][0, :50] = 1.0
    bad["lowres_ivar"][1, :] = 0.0  # no usable pixel at all
    bad["lowres_ivar"][2, 100:120] = np.nan  # NaN ivar
    bad["lowres_flux"][2, 130:140] = np.nan  # NaN flux at unmasked pixels
    bad["z_prior"][1] = np.nan  # no prior
    for name in ("super_resolve", "anomaly_score", "embed_spectrum"):
        outputs = client.load_signatures(loaded_dir)["endpoints"][name]["outputs"]
        for key, value in _call(loaded, name, bad).items():
            assert outputs[key]["nan"] or np.all(np.isfinite(value)), f"{name}/{key}"
        if name == "super_resolve":
            result = _call(loaded, name, bad)
            assert np.isnan(result["reconstruction_chi2"][1]) and result["observed_pixels"][1] == 0


def test_client_round_trip_through_the_signature(loaded, signatures, inputs, tmp_path):
    from tests.fixtures_formats import write_threedhst

    euclid = get_instrument("euclid")
    flux, ivar = inputs["lowres_flux"][0], inputs["lowres_ivar"][0]
    sigma = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), 0.0)
    path = write_threedhst(tmp_path, euclid.wavelength, flux, sigma)
    body = client.spectrum_request(path, signatures, z_prior=float(inputs["z_prior"][0]), seed=7)
    body = json.loads(json.dumps(body))  # what goes over the wire
    assert body["signature_name"] == "super_resolve"
    sent = {k: np.asarray(v) for k, v in body["inputs"].items()}
    good = sent["lowres_mask"][0] == 0
    np.testing.assert_allclose(sent["lowres_flux"][0][good], flux[good], rtol=1e-5, atol=1e-5)
    response = {"outputs": {k: v.tolist() for k, v in _call(loaded, "super_resolve", sent).items()}}
    result = client.super_resolved(
        client.parse_response(json.loads(json.dumps(response)), signatures)
    )[0]
    assert result["flux"].shape == (320,) and result["samples"].shape == (SAMPLES, 320)
    assert result["flux"].unit.is_equivalent("erg / (s cm2 Angstrom)")
    np.testing.assert_allclose(
        result["wavelength"].to_value("Angstrom"),
        TARGET_GRID.wavelength * (1 + result["z_place"]),
        rtol=1e-6,
    )
    assert result["ha_flux_p50"].unit.is_equivalent("erg / (s cm2)")
    rows = client.parse_response(
        {
            "predictions": [
                dict(zip(response["outputs"], v, strict=True))
                for v in zip(*response["outputs"].values(), strict=True)
            ]
        },
        signatures,
    )
    np.testing.assert_allclose(rows["sr_mean"], response["outputs"]["sr_mean"], rtol=1e-6)


def test_client_rejects_bad_requests(signatures, inputs):
    arrays = {
        k: inputs[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior", "source_sigma_arcsec",
                               "log_mstar", "seed")
    }
    with pytest.raises(ValueError, match="grid of 500 pixels"):
        client.request_body(signatures, **{**arrays, "lowres_flux": arrays["lowres_flux"][:, :-3]})
    nan_flux = arrays["lowres_flux"].copy()
    nan_flux[0, arrays["lowres_ivar"][0] > 0] = np.nan
    with pytest.raises(ValueError, match="NaN/inf values at unmasked pixels"):
        client.request_body(signatures, **{**arrays, "lowres_flux": nan_flux})
    with pytest.raises(ValueError, match="unknown signature"):
        client.request_body(signatures, "no_such_signature", **arrays)
    with pytest.raises(ValueError, match="needs inputs image"):
        client.request_body(signatures, "anomaly_score", **arrays)
    with pytest.raises(ValueError, match="does not overlap"):
        from specsr_keras.data.records import Spectrum

        far = Spectrum(np.linspace(4000, 5000, 50), np.ones(50), np.ones(50))
        client.lowres_on_grid(far, signatures)
    body = client.request_body(signatures, **{**arrays, "z_prior": np.float32(1.3), "seed": 0})
    assert body["inputs"]["z_prior"] == [pytest.approx(1.3)] * 3


def test_serving_check_rejects_bad_sample_inputs(export_dir, inputs, tmp_path):
    bad = {k: np.array(v, copy=True) for k, v in inputs.items()}
    bad["lowres_flux"] = bad["lowres_flux"][:, :400]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(ValueError, match=r"lowres_flux has shape \(3, 400\), expected \(3, 500\)"):
        check_export(export_dir, inputs=tmp_path / "bad.npz")


def test_saved_model_predictor_serves_specsr_infer(export_dir, inputs):
    from specsr_keras.export.predictor import SavedModelPredictor
    from specsr_keras.inference.predictors import load_predictor, output_columns

    predictor = load_predictor(str(export_dir))
    assert isinstance(predictor, SavedModelPredictor) and predictor.instrument == "euclid_nisp_red"
    batch = {k: inputs[k] for k in ("lowres_flux", "lowres_ivar")}
    batch["lowres_mask"] = inputs["lowres_mask"] > 0
    batch["z_prior"] = inputs["z_prior"].astype(np.float64)
    batch["instrument_id"] = np.full(3, 1)
    out = predictor.predict(batch, seed=3, save_spectra=True)  # the export's K by default
    assert set(output_columns(predictor, True)) <= set(out)
    assert out["sr_mean"].shape == (3, 320) and np.all(np.isfinite(out["reconstruction_chi2"]))
    again = predictor.predict(batch, samples=SAMPLES, seed=3, save_spectra=True)
    np.testing.assert_array_equal(again["sr_mean"], out["sr_mean"])
    with pytest.raises(ValueError, match="re-export with --samples"):
        predictor.predict(batch, samples=SAMPLES + 1, seed=3, save_spectra=False)
    # served = infer: the columns equal the signature's own percentiles for every object
    feed = {**{k: inputs[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "source_sigma_arcsec")},
            "z_prior": inputs["z_prior"], "log_mstar": np.full(3, np.nan, np.float32),
            "seed": (3 + np.arange(3)).astype(np.int32)}
    served = _call(tf.saved_model.load(str(export_dir)), "super_resolve",
                   dict(feed, source_sigma_arcsec=np.full(3, np.nan, np.float32)))
    for column in ("n2_p50", "n2_p16", "ha_flux_p50", "z_p84"):
        np.testing.assert_allclose(out[column], served[column], rtol=1e-5, atol=1e-5)


def test_jax_written_run_exports_under_tensorflow(jax_run_process, exported):
    run_dir, process = jax_run_process
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    assert json.loads((run_dir / "run.json").read_text())["backend"] == "jax"
    out, _ = exported
    from cli.main import app

    result = CliRunner().invoke(
        app,
        [
            "export",
            str(run_dir),
            "--name",
            "specsr-jax",
            "--version",
            "3",
            "--out",
            str(out),
            "--sampler",
            "dpm++2m,noise_check=true",
            "--steps",
            "2",
            "--samples",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "subprocess" in result.output and "trained on jax" in result.output
    config = (out / "models.config").read_text()
    assert config.count("config {") == 2
    assert 'name: "specsr-jax"' in config and 'base_path: "/models/specsr-jax"' in config
    assert 'name: "specsr"' in config and 'model_platform: "tensorflow"' in config
    assert client.load_signatures(out / "specsr-jax" / "3")["metadata"]["sampler"]["noise_check"] is True
    report = run_serving_check(out / "specsr-jax" / "3", n=1)  # fresh TF process
    assert report["parity"]["ok"] and report["parity"]["max_abs_diff_relative_to_scale"] <= 1e-4
    assert "signature_def['serving_default']" in report["show"]
    assert set(report["signatures"]) == set(
        client.load_signatures(out / "specsr-jax" / "3")["endpoints"]
    )


def test_models_config_is_rebuilt_from_disk(tmp_path):
    (tmp_path / "b" / "2").mkdir(parents=True)
    (tmp_path / "b" / "2" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "a" / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "empty" / "1").mkdir(parents=True)  # no SavedModel: not served
    text = write_models_config(tmp_path).read_text()
    block = '  config {{\n    name: "{0}"\n    base_path: "/models/{0}"\n'
    block += '    model_platform: "tensorflow"\n  }}\n'
    assert text == "model_config_list {\n" + block.format("a") + block.format("b") + "}\n"


def test_serving_check_error_is_one_line(tmp_path, capsys):
    from specsr_keras.export.serving_check import _main

    with pytest.raises(SystemExit) as stopped:
        _main([str(tmp_path)])  # what the fresh process runs
    assert stopped.value.code == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "saved_model.pb: missing" in message


def test_resampled_client_grid_matches_instrument_edges(signatures):
    euclid = get_instrument("euclid")
    np.testing.assert_allclose(client.grid_edges(signatures), euclid.bin_edges)
    np.testing.assert_allclose(edges_from_centres(euclid.wavelength), euclid.bin_edges, rtol=1e-12)
    flux = np.linspace(1, 2, euclid.wavelength.size)
    same, _ = resample_flux(euclid.bin_edges, flux, None, client.grid_edges(signatures))
    np.testing.assert_allclose(same, flux, rtol=1e-6)  # float32 kernel


def test_export_takes_the_models_sampler_and_rejects_unknown_settings(tf_run, tmp_path):
    with pytest.raises(ValueError, match="unknown sampler setting"):
        export_run(tf_run, name="specsr", version=1, out=tmp_path, sampler={"sampler": "euler"})
    with pytest.raises(ValueError, match="sampler must be one of"):
        export_run(tf_run, name="specsr", version=1, out=tmp_path, sampler={"kind": "euler"})
