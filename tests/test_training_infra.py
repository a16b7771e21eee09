"""Checkpoints, deterministic batches, config resolution and stage resume on a toy model."""

import time

import keras
import numpy as np
import pytest

from specsr_keras.training.batches import batch_indices, step_batches
from specsr_keras.training.checkpoints import CheckpointManager
from specsr_keras.training.config import TrainConfig, resolve_config, run_config
from specsr_keras.training.stage import evaluate_loss, train_stage

pytestmark = pytest.mark.keras


class NoisyRegressor(keras.Model):
    """Toy model whose loss draws noise from a SeedGenerator, like the diffusion models."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        keras.utils.set_random_seed(11)  # same initial weights in every instance
        self.dense = keras.layers.Dense(1)
        self.seed_generator = keras.random.SeedGenerator(3)

    def call(self, batch, training=False):
        noise = keras.random.normal(keras.ops.shape(batch["x"]), seed=self.seed_generator)
        return self.dense(batch["x"] + 0.1 * noise)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        return keras.ops.mean((y_pred[:, 0] - x["y"]) ** 2)


def _toy_arrays(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    return {"x": x, "y": (x @ np.array([1.0, -2.0, 0.5])).astype("float32")}


def _config(**overrides):
    base = dict(batch_size=16, learning_rate=0.05, warmup_steps=2, checkpoint_every=5, ema_momentum=0.9)
    return TrainConfig(**{**base, **overrides})


def test_batches_are_a_function_of_step_only():
    arrays = _toy_arrays()
    stream = step_batches(arrays, 16, seed=7)
    ten = [next(stream) for _ in range(10)]
    resumed = next(step_batches(arrays, 16, seed=7, start_step=7))
    np.testing.assert_array_equal(resumed["x"], ten[7]["x"])
    assert not np.array_equal(ten[0]["x"], ten[1]["x"])


def test_one_pass_visits_every_example_once():
    seen = np.concatenate([batch_indices(96, 16, 1, s) for s in range(6)])
    assert sorted(seen.tolist()) == list(range(96))


def test_config_precedence_preset_file_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('batch_size = 8\nlearning_rate = 0.1\n')
    config = resolve_config("default", path, learning_rate=0.2, seed=None)
    assert (config.batch_size, config.learning_rate, config.superres_steps) == (8, 0.2, 12000)
    roundtrip = tmp_path / "r.toml"
    roundtrip.write_text(config.to_toml())
    assert resolve_config("quick", roundtrip) == config


def test_resumed_run_keeps_its_saved_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(resolve_config("quick", data="sims/a,sims/b@0.5", batch_size=8).to_toml())
    resumed = run_config(run, "quick", superres_steps=900)
    assert (resumed.data, resumed.batch_size, resumed.superres_steps) == ("sims/a,sims/b@0.5", 8, 900)
    assert run_config(run, "quick", resume=False).data == TrainConfig().data
    assert run_config(tmp_path / "new", "default").superres_steps == 12000


def test_config_rejects_unknown_keys_and_stages(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("batchsize = 8\n")
    with pytest.raises(ValueError, match="batchsize"):
        resolve_config("quick", path)
    with pytest.raises(ValueError, match="warp"):
        resolve_config("quick", stages="autoencoders,warp")


BAD_CONFIGS = [  # (config file text, what the one-line error must name)
    ("batch_size = -5\n", "batch_size = -5: must be >= 1"),
    ("batch_size = 0\n", "batch_size = 0: must be >= 1"),
    ('batch_size = "sixteen"\n', "batch_size = 'sixteen': expected an integer"),
    ("batch_size = 8.5\n", "batch_size = 8.5: expected an integer"),
    ("learning_rate = 0\n", "learning_rate = 0.0: must be > 0.0"),
    ("ema_momentum = 1.0\n", "ema_momentum = 1.0: must be >= 0.0 and < 1.0"),
    ("val_fraction = -0.1\n", "val_fraction = -0.1: must be >= 0.0"),
    ("mixed_precision = 1\n", "mixed_precision = 1: expected true or false"),
    ('model_preset = "huge"\n', "model_preset = 'huge': choose from"),
    ('sampler = "steps=ten"\n', "sampler = 'steps=ten'"),
    ("batch_size = = 3\n", "not valid TOML"),
    ('stages = "warp"\n', "stages = 'warp'"),
]


@pytest.mark.parametrize("text,expected", BAD_CONFIGS)
def test_a_bad_config_file_is_refused_naming_the_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        resolve_config("quick", path)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_command_line_values_are_refused():
    with pytest.raises(ValueError, match="^command line: batch_size = 0: must be >= 1$"):
        resolve_config("quick", batch_size=0)
    assert resolve_config("quick", learning_rate=1).learning_rate == 1.0  # an int is a number


def test_stage_resume_matches_uninterrupted_run(tmp_path):
    arrays = _toy_arrays()
    straight = NoisyRegressor()
    train_stage(straight, arrays, stage="toy", steps=20, config=_config(), run_dir=tmp_path / "a")

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # after the step-10 checkpoint was written
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stage(NoisyRegressor(), arrays, stage="toy", steps=20, config=_config(),
                    run_dir=tmp_path / "b", callbacks=[Kill()])
    # ... whose newest checkpoint is then corrupted: the resume must fall back to step 5.
    manager = CheckpointManager(tmp_path / "b" / "checkpoints" / "toy")
    newest = manager.latest()
    newest.weights_path.write_bytes(b"truncated")
    assert manager.latest().step == 5
    seconds_before = manager.latest().extra["train_seconds"]
    assert seconds_before > 0
    resumed = NoisyRegressor()
    started = time.perf_counter()
    summary = train_stage(resumed, arrays, stage="toy", steps=20, config=_config(), run_dir=tmp_path / "b")
    assert summary["resumed_from"] == 5
    # The stage's training time is the checkpoint's seconds plus this invocation's.
    assert seconds_before < summary["seconds"] <= seconds_before + (time.perf_counter() - started)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    untrained = NoisyRegressor()
    untrained(arrays)
    assert summary["final_loss"] < 0.5 * evaluate_loss(untrained, arrays, batch_size=16)


def test_restore_weights_loads_a_checkpoint_into_a_model_without_an_optimizer(tmp_path):
    arrays = _toy_arrays()
    trained = NoisyRegressor()
    train_stage(trained, arrays, stage="toy", steps=10, config=_config(), run_dir=tmp_path)
    manager = CheckpointManager(tmp_path / "checkpoints" / "toy")
    checkpoint = manager.latest()
    fresh = NoisyRegressor()  # never compiled: only the model's variables are taken
    fresh(arrays)
    manager.restore_weights(fresh, checkpoint)
    with np.load(checkpoint.weights_path) as saved:
        for i, variable in enumerate(fresh.variables):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), saved[f"v{i:05d}"])
    wider = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has shape"):
        manager.restore_weights(wider, checkpoint)
