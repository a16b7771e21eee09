"""`specsr train` end to end on tiny data: every stage, saved models, resume after kill -9."""

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

from specsr_keras.data.shards import write_shards
from specsr_keras.simulate import dataset_metadata, simulate_galaxies
from specsr_keras.training.config import TrainConfig
from specsr_keras.training.pipeline import train_run

pytestmark = pytest.mark.keras

TINY_STEPS = dict(model_preset="micro", batch_size=16, checkpoint_every=2, warmup_steps=1, autoencoder_steps=2,
                  contrastive_steps=2, superres_steps=2, generator_steps=2, val_fraction=0.25)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    manifest, attrs = dataset_metadata("euclid_nisp_red", 5)
    write_shards(out, iter([simulate_galaxies(64, "euclid_nisp_red", seed=5)]), manifest,
                 shard_size=64, attrs=attrs)
    return out


def test_all_stages_train_save_and_validate(shard_dir, tmp_path):
    config = TrainConfig(data=str(shard_dir), val_examples=8, val_samples=2, val_ddim_steps=2, **TINY_STEPS)
    summary = train_run(config, tmp_path / "run")
    assert set(summary["stages"]) == {"spectrum_autoencoder", "image_autoencoder", "contrastive",
                                      "superres", "generator"}
    assert all(np.isfinite(s["final_loss"]) for s in summary["stages"].values())
    validation = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert 0.0 <= validation["retrieval_top1"] <= 1.0
    assert sum(b["count"] for b in validation["n2_by_snr"].values()) == 8
    model = keras.saving.load_model(tmp_path / "run" / "models" / "superres.keras", safe_mode=True)
    assert model.count_params() > 1000


def _train_command(run_dir, shard_dir):
    options = {**TINY_STEPS, "contrastive_steps": 8, "val_examples": 0, "stages": "contrastive"}
    args = [sys.executable, "-m", "cli.main", "train", str(run_dir), "--data", str(shard_dir)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


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
