"""Diffusion core: cosine schedule, v-prediction algebra, weighted loss, DDIM sampler
(against an exact Gaussian denoiser and a trained toy model), classifier-free guidance,
condition dropout, and the sampler inside a TF graph / JAX jit.
"""

import keras
import numpy as np
import pytest
from keras import layers, ops

from specsr_keras.models.diffusion import (
    DiffusionModel,
    GaussianDiffusion,
    add_noise,
    cosine_schedule,
    expand_to,
    noise_from_v,
    v_from_x0,
    velocity,
    weighted_mse,
    x0_from_v,
)
from specsr_keras.models.layers import SinusoidalEmbedding
from specsr_keras.models.samplers import Sampler

pytestmark = pytest.mark.keras

BACKEND = keras.backend.backend()


def test_cosine_schedule_is_variance_preserving_monotone_and_hits_its_endpoints():
    t = np.linspace(0.0, 1.0, 101).astype("float32")
    signal, noise = (ops.convert_to_numpy(r) for r in cosine_schedule(t, 0.02, 0.999))
    assert np.abs(signal**2 + noise**2 - 1.0).max() < 1e-6
    assert signal[0] == pytest.approx(0.999, abs=1e-6)
    assert signal[-1] == pytest.approx(0.02, abs=1e-6)
    assert np.all(np.diff(signal) < 0) and np.all(np.diff(noise) > 0)


def test_v_prediction_algebra_recovers_x0_noise_and_v_exactly():
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((64, 10, 1)).astype("float32")
    eps = rng.standard_normal((64, 10, 1)).astype("float32")
    signal, noise = cosine_schedule(rng.uniform(0.0, 1.0, 64).astype("float32"))
    signal, noise = expand_to(signal, x0), expand_to(noise, x0)
    x_t = add_noise(x0, eps, signal, noise)
    v = velocity(x0, eps, signal, noise)
    assert np.abs(ops.convert_to_numpy(x0_from_v(x_t, v, signal, noise)) - x0).max() < 1e-5
    assert np.abs(ops.convert_to_numpy(noise_from_v(x_t, v, signal, noise)) - eps).max() < 1e-5
    assert np.abs(ops.convert_to_numpy(v_from_x0(x_t, x0, signal, noise) - v)).max() < 2e-4


def test_weighted_mse_ignores_zero_weight_pixels_and_normalises_by_the_weights():
    pred = np.zeros((2, 4, 1), "float32")
    target = np.array([[1, 1, 1e6, 2], [3, 0, 0, 0]], "float32")[..., None]
    weight = np.array([[1, 1, 0, 2], [0.5, 0, 0, 0]], "float32")
    # (1 + 1 + 0 + 2*4 + 0.5*9) / (1 + 1 + 2 + 0.5) = 14.5 / 4.5
    assert float(weighted_mse(pred, target, weight)) == pytest.approx(14.5 / 4.5, rel=1e-6)


def _gaussian_oracle(mean, std):
    """Exact E[v | x_t] for data x0 ~ N(mean, std**2)."""

    def denoise(x_t, t):
        signal, noise = (expand_to(r, x_t) for r in cosine_schedule(t))
        gain = signal * std**2 / (signal**2 * std**2 + noise**2)
        x0 = mean + gain * (x_t - signal * mean)
        eps = (x_t - signal * x0) / noise
        return signal * eps - noise * x0

    return denoise


def _oracle_samples(steps, eta=0.0, sampler="ddim", n=4000):
    chosen = Sampler(sampler, steps, eta=eta)
    x0 = chosen.run(_gaussian_oracle(0.5, 0.3), chosen.draw_noise(n, (1, 1), seed=1), cosine_schedule)
    return ops.convert_to_numpy(x0).ravel()


@pytest.mark.parametrize("eta, steps, spread", [(0.0, 100, 0.025), (1.0, 400, 0.04)])
def test_ddim_with_the_exact_denoiser_converges_to_the_data_gaussian(eta, steps, spread):
    # the ancestral sampler (eta 1) with the exact posterior mean keeps ~97 % of the spread
    # at 400 steps (4e4 draws: 0.292); 1e4 draws: std error 0.7 %
    x0 = _oracle_samples(steps, eta, n=10000)
    assert x0.mean() == pytest.approx(0.5, abs=0.015)
    assert x0.std() == pytest.approx(0.3, rel=spread)


def test_few_step_ddim_underdisperses_and_dpm_solver_keeps_the_spread():
    # first-order DDIM at 10 steps loses ~15 % of the spread (-> over-confident
    # intervals); the second-order DPM-Solver++(2M) on a log-SNR grid keeps it
    assert _oracle_samples(10).std() < 0.27
    x0 = _oracle_samples(10, sampler="dpm++2m")
    assert x0.mean() == pytest.approx(0.5, abs=0.02)
    assert x0.std() == pytest.approx(0.3, rel=0.02)


def _echo_denoiser(length=8, condition_dim=4):
    """v = condition[0] + extra[..., 0] at every pixel: exposes what the denoiser sees."""
    x = keras.Input((length, 1), name="x")
    t = keras.Input((), name="t")
    c = keras.Input((condition_dim,), name="condition")
    e = keras.Input((length, 1), name="extra")
    out = ops.zeros_like(x) + ops.expand_dims(c[:, :1], 1) + e
    return keras.Model({"x": x, "t": t, "condition": c, "extra": e}, out)


def test_classifier_free_guidance_extrapolates_from_the_null_prediction():
    diffusion = GaussianDiffusion(_echo_denoiser(), condition_dim=4, condition_dropout=0.2)
    null = float(ops.convert_to_numpy(diffusion.null_condition)[0])
    x_t = np.zeros((3, 8, 1), "float32")
    t = np.full((3,), 0.5, "float32")
    condition = np.array([[1.0] * 4, [2.0] * 4, [-1.0] * 4], "float32")
    extra = np.full((3, 8, 1), 0.25, "float32")
    v = ops.convert_to_numpy(diffusion.predict_velocity(x_t, t, condition, extra, guidance=3.0))
    # conditional: c0 + 0.25; null: null + 0 (extra dropped with the condition)
    expected = null + 3.0 * (condition[:, 0] + 0.25 - null)
    assert np.abs(v[:, :, 0] - expected[:, None]).max() < 1e-5


def test_condition_dropout_replaces_the_requested_fraction_only_in_training():
    diffusion = GaussianDiffusion(_echo_denoiser(), condition_dim=4, condition_dropout=0.3, seed=5)
    n = 4000
    x0 = np.zeros((n, 8, 1), "float32")
    condition = np.full((n, 4), 10.0, "float32")
    extra = np.ones((n, 8, 1), "float32")
    out = diffusion(x0, condition, extra, training=True)
    v = ops.convert_to_numpy(out["v_pred"])[:, 0, 0]
    dropped = v < 5.0  # kept rows see 10 + 1; dropped rows see null (~0) + 0
    assert dropped.mean() == pytest.approx(0.3, abs=0.03)
    assert np.abs(v[dropped]).max() < 0.2
    v_eval = ops.convert_to_numpy(diffusion(x0, condition, extra, training=False)["v_pred"])
    assert np.all(v_eval == 11.0)


def _mlp_denoiser():
    x = keras.Input((1, 1), name="x")
    t = keras.Input((), name="t")
    h = layers.Concatenate()([layers.Flatten()(x), SinusoidalEmbedding(32)(t)])
    for _ in range(3):
        h = layers.Dense(64, activation="silu")(h)
    return keras.Model({"x": x, "t": t}, layers.Reshape((1, 1))(layers.Dense(1)(h)))


MIXTURE = {"weight_left": 0.3, "means": (-1.0, 1.0), "std": 0.1}


@pytest.fixture(scope="module")
def toy_model():
    """A small MLP diffusion model fitted to 0.3 N(-1, 0.1) + 0.7 N(1, 0.1)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    left = rng.random(8192) < MIXTURE["weight_left"]
    data = np.where(left, *MIXTURE["means"]) + MIXTURE["std"] * rng.standard_normal(8192)
    model = DiffusionModel(_mlp_denoiser(), seed=1)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit({"x": data.reshape(-1, 1, 1).astype("float32")}, batch_size=256, epochs=50, verbose=0)
    return model


@pytest.mark.parametrize("sampler, steps", [("ddim", 30), ("dpm++2m", 10)])
def test_trained_model_reproduces_the_two_gaussian_mixture(toy_model, sampler, steps):
    samples = toy_model.sample({}, num_samples=4000, sampler=Sampler(sampler, steps), seed=3)
    samples = ops.convert_to_numpy(samples).ravel()
    left = samples < 0
    # tolerances: ~4 binomial sigmas on the weight; means/widths to 0.08 / a factor 2
    assert left.mean() == pytest.approx(MIXTURE["weight_left"], abs=0.06)
    assert samples[left].mean() == pytest.approx(-1.0, abs=0.08)
    assert samples[~left].mean() == pytest.approx(1.0, abs=0.08)
    assert 0.05 < samples[left].std() < 0.2 and 0.05 < samples[~left].std() < 0.2


def test_same_seed_gives_the_same_samples_and_another_seed_does_not(toy_model):
    def draw(seed):
        samples = toy_model.sample({}, num_samples=256, sampler=Sampler(steps=4, eta=1.0), seed=seed)
        return ops.convert_to_numpy(samples)

    first = draw(11)
    assert np.array_equal(first, draw(11))
    assert np.abs(first - draw(12)).max() > 0.1


def test_sampler_runs_inside_a_tf_graph_or_jax_jit_and_matches_eager(toy_model):
    def draw():
        return toy_model.sample({}, num_samples=64, sampler=Sampler(steps=5, eta=1.0), seed=7)

    eager = ops.convert_to_numpy(draw())
    if BACKEND == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(draw, autograph=False)  # keras.ops loops need no autograph
        assert "While" in {
            op.type for op in compiled.get_concrete_function().graph.get_operations()
        }
    elif BACKEND == "jax":
        import jax

        compiled = jax.jit(draw)
    else:
        pytest.skip(f"no graph mode check for {BACKEND}")
    assert np.abs(ops.convert_to_numpy(compiled()) - eager).max() < 1e-4


def test_noise_drawn_outside_the_sampler_gives_the_seeded_samples(toy_model):
    sampler = Sampler(steps=4, eta=1.0)
    noise = sampler.draw_noise(64, (1, 1), seed=7)
    seeded = toy_model.sample({}, num_samples=64, sampler=sampler, seed=7)
    given = toy_model.sample({}, num_samples=64, sampler=sampler, noise=noise)
    assert np.array_equal(ops.convert_to_numpy(seeded), ops.convert_to_numpy(given))


def test_mixed_precision_loss_and_samples_keep_the_diffusion_in_float32():
    from specsr_keras.models.preprocessor import STAGE_KEYS, dummy_inputs
    from specsr_keras.models.presets import build_superresolver

    policy = keras.config.dtype_policy().name
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_superresolver("micro", seed=0)
    finally:
        keras.config.set_dtype_policy(policy)
    assert model.denoiser.compute_dtype == "bfloat16" and model.diffusion.compute_dtype == "float32"
    batch = dummy_inputs(STAGE_KEYS["superres"], batch=4)
    outputs = model(batch, training=True)
    assert ops.convert_to_numpy(outputs["v_pred"]).dtype == np.float32
    assert np.isfinite(ops.convert_to_numpy(model.compute_loss(y_pred=outputs)))
    inputs = {k: v for k, v in batch.items() if not k.startswith("hires")}
    from specsr_keras.models.samplers import Sampler

    samples = model.sample(inputs, num_samples=2, sampler=Sampler(steps=2), seed=0)
    assert ops.convert_to_numpy(samples).dtype == np.float32
    assert np.isfinite(ops.convert_to_numpy(samples)).all()
