"""`specsr train` end to end on tiny data: every stage, saved models, resume after kill -9, and
sim-to-real fine-tuning (`--init-from`) on real shards built from the survey files of
tests/fixtures_formats.py (conftest `real_shards`), then inference and evaluation on them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from specsr_keras.data.shards import load_shards, write_shards
from specsr_keras.inference.predictors import load_predictor
from specsr_keras.instruments import get_instrument
from specsr_keras.models.preprocessor import STAGE_KEYS
from specsr_keras.reporting import Reporter
from specsr_keras.simulate import dataset_metadata, simulate_galaxies
from specsr_keras.training.batches import stage_arrays
from specsr_keras.training.config import TrainConfig
from specsr_keras.training.pipeline import load_examples, train_run, wavelength_channel_of

TINY_STEPS = dict(model_preset="micro", batch_size=16, checkpoint_every=2, warmup_steps=1, autoencoder_steps=2,
                  contrastive_steps=2, superres_steps=2, val_fraction=0.25)
FINE_TUNE_LR = 1e-4
# Fine-tuning moves a weight by less than ~3 learning rates per step (AdamW, then EMA);
# fresh weights of another seed differ from the simulation run's by O(0.1-1).
MAX_FINE_TUNE_CHANGE = 1e-3
N_REAL = 5


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    manifest, attrs = dataset_metadata("euclid_nisp_red", 5)
    write_shards(out, iter([simulate_galaxies(64, "euclid_nisp_red", seed=5)]), manifest,
                 shard_size=64, attrs=attrs)
    return out


@pytest.fixture(scope="module")
def sim_run(shard_dir, tmp_path_factory):
    """A finished tiny run on the simulated shards: (run directory, summary)."""
    run_dir = tmp_path_factory.mktemp("sim_run")
    config = TrainConfig(data=str(shard_dir), val_examples=8, val_samples=2, val_ddim_steps=2, **TINY_STEPS)
    return run_dir, train_run(config, run_dir)


def _assert_all_stages_trained(summary: dict) -> None:
    assert set(summary["stages"]) == {"spectrum_autoencoder", "image_autoencoder", "contrastive", "superres"}
    assert all(np.isfinite(s["final_loss"]) for s in summary["stages"].values())


@pytest.mark.keras  # both backends train end to end
def test_all_stages_train_save_and_validate(sim_run):
    run_dir, summary = sim_run
    _assert_all_stages_trained(summary)
    assert summary["instrument"] == "euclid_nisp_red"
    validation = json.loads((run_dir / "validation.json").read_text())
    assert 0.0 <= validation["retrieval_top1"] <= 1.0
    assert sum(b["count"] for b in validation["n2_by_snr"].values()) == 8
    model = keras.saving.load_model(run_dir / "models" / "superres.keras", safe_mode=True)
    assert model.count_params() > 1000
    assert wavelength_channel_of(run_dir) and model.denoiser.extra_channels == 3  # a fresh run reads it


def _train_command(run_dir, shard_dir):
    options = {**TINY_STEPS, "contrastive_steps": 8, "val_examples": 0, "stages": "contrastive"}
    args = [sys.executable, "-m", "cli.main", "train", str(run_dir), "--data", str(shard_dir)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


# Default backend only (2 min per backend): the checkpoint/RNG resume logic runs on both
# backends in tests/test_training_infra.py.
def test_kill_9_then_resume_matches_uninterrupted_run(shard_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    straight = tmp_path / "straight"
    subprocess.run(_train_command(straight, shard_dir), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(killed, shard_dir), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = killed / "checkpoints" / "contrastive"
    deadline = time.time() + 300
    while not list(checkpoints.glob("ckpt-00000004.json")) and time.time() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "run.json").exists()
    subprocess.run(_train_command(killed, shard_dir), check=True, env=env, capture_output=True)

    run_a = json.loads((straight / "run.json").read_text())["stages"]["contrastive"]
    run_b = json.loads((killed / "run.json").read_text())["stages"]["contrastive"]
    assert run_b["resumed_from"] >= 4 and run_b["steps"] == run_a["steps"] == 8
    a = keras.saving.load_model(straight / "models" / "contrastive.keras", safe_mode=True)
    b = keras.saving.load_model(killed / "models" / "contrastive.keras", safe_mode=True)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)


# --- sim-to-real fine-tuning (backend-neutral code: default backend only, to keep the suite short) ---

@pytest.fixture(scope="module")
def fine_tuned(sim_run, shard_dir, real_shards, tmp_path_factory):
    """`specsr train FT --init-from SIMRUN --data REAL,SIM@0.25 --stages contrastive,decoders`
    (another seed, small learning rate; the autoencoders keep the simulation weights):
    (run directory, run.json, the --data value)."""
    run_dir = tmp_path_factory.mktemp("fine_tuned")
    data = f"{real_shards},{shard_dir}@0.25"
    options = {**TINY_STEPS, "val_examples": 0, "init_from": sim_run[0], "seed": 1,
               "learning_rate": FINE_TUNE_LR, "stages": "contrastive,decoders"}
    args = ["train", str(run_dir), "--data", data]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run_dir, json.loads((run_dir / "run.json").read_text()), data


def _float_weights(path) -> list[tuple[str, np.ndarray]]:
    """(path, value) of a saved model's float variables, in model order."""
    model = keras.saving.load_model(path, safe_mode=True)
    return [(w.path, keras.ops.convert_to_numpy(w)) for w in model.weights if "float" in str(w.dtype)]


def test_fine_tune_starts_from_the_simulation_run(sim_run, fine_tuned):
    run_dir, summary, _ = fine_tuned
    assert set(summary["stages"]) == {"contrastive", "superres"}
    assert summary["instrument"] == "hst_g141"  # the first --data set's grid
    for name in ("superres", "contrastive"):
        sim, tuned = (_float_weights(run / "models" / f"{name}.keras") for run in (sim_run[0], run_dir))
        assert [v.shape for _, v in sim] == [v.shape for _, v in tuned]
        change = {path: float(np.abs(b - a).max()) for (path, a), (_, b) in zip(sim, tuned, strict=True)
                  if "prior_" not in path}  # the prior covariance is refitted on the fine-tune data
        assert max(change.values()) <= MAX_FINE_TUNE_CHANGE, (name, max(change, key=change.get))
        assert max(change.values()) > 0.0, name  # and fine-tuning did update them
    # 3 of the 5 real examples have no cutout: the contrastive stage leaves them out; the
    # super-resolver keeps them, with the image modality missing
    stages = summary["stages"]
    assert stages["contrastive"]["examples"] < stages["superres"]["examples"]


def test_stages_reading_images_leave_out_examples_without_one():
    inputs = {"image": np.arange(4.0)[:, None], "lowres": np.arange(4.0), "has_image": np.array([1, 0, 1, 1], bool)}
    assert stage_arrays(inputs, ("image", "lowres"))["lowres"].tolist() == [0.0, 2.0, 3.0]
    assert stage_arrays(inputs, ("lowres",))["lowres"].tolist() == [0.0, 1.0, 2.0, 3.0]
    # a stage reading the presence flag itself (the super-resolver) keeps every example
    assert stage_arrays(inputs, ("image", "lowres", "has_image"))["lowres"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_fine_tune_loss_weighs_only_observed_hires_pixels(fine_tuned, real_shards):
    run_dir, _, data = fine_tuned
    inputs, _ = load_examples(data, 1, Reporter())
    real = {key: value[:N_REAL] for key, value in inputs.items()}  # the real set comes first
    observed = ~load_shards(real_shards, fields=["hires_mask"])["hires_mask"]
    assert ((real["hires_weight"] > 0) == observed).all()
    assert real["hires_valid"].tolist() == [1, 1, 0, 0, 0]  # MOSFIRE spectra of rows 0 and 1
    assert 0 < observed[:2].sum() < observed[:2].size  # partly observed: the mask matters

    model = keras.saving.load_model(run_dir / "models" / "superres.keras", safe_mode=True)
    state = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
    batch = {key: real[key][:2] for key in STAGE_KEYS["superres"]}

    def loss(hires):
        for variable, value in zip(model.non_trainable_variables, state, strict=True):
            variable.assign(value)  # the same seeds: the same t, noise and dropped modalities
        x = {**batch, "hires": hires.astype(np.float32)}
        return float(keras.ops.convert_to_numpy(model.compute_loss(x=x, y_pred=model(x))))

    reference = loss(batch["hires"])
    assert np.isfinite(reference) and reference > 0
    assert loss(np.where(observed[:2], batch["hires"], 1e3)) == pytest.approx(reference, rel=1e-6)
    assert loss(np.where(observed[:2], batch["hires"] + 1.0, batch["hires"])) != \
        pytest.approx(reference, rel=1e-3)


def test_fine_tuned_run_predicts_and_evaluates_real_spectra(fine_tuned, shard_dir, real_shards, tmp_path):
    run_dir = fine_tuned[0]
    predictor = load_predictor(str(run_dir))
    assert predictor.instrument == "hst_g141"  # reads the real G141 spectra as they are
    batch = load_shards(real_shards, fields=["lowres_flux", "lowres_ivar", "lowres_mask", "z_prior"])
    batch["instrument_id"] = np.full(N_REAL, get_instrument("hst_g141").instrument_id)
    out = predictor.predict(batch, samples=2, seed=0, save_spectra=True)
    assert out["sr_mean"].shape == (N_REAL, 320) and np.isfinite(out["sr_mean"]).all()
    assert out["n2_p50"].shape == (N_REAL,) and out["flags"].shape == (N_REAL,)
    again = predictor.predict(batch, samples=2, seed=0, save_spectra=True)
    np.testing.assert_array_equal(again["sr_mean"], out["sr_mean"])

    report = tmp_path / "report"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(run_dir), "--data", str(real_shards),
                                      "--domain-gap-against", str(shard_dir), "--samples", "2",
                                      "--out", str(report)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["data"][0]["model_instrument"] == "hst_g141"
    assert metrics["data"][0]["count_used"] == N_REAL
    # an untrained model's samples may all fail a line fit: that object's z is NaN, not counted
    assert 1 <= metrics["bins"]["hst_g141_real"]["all"]["z"]["specsr"]["n"] <= N_REAL
    assert metrics["domain_gap"]["reference"] == str(shard_dir)
    assert metrics["domain_gap_n2_ks"] is not None
