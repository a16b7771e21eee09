"""models/samplers.py: data-consistent reverse diffusion on a linear-Gaussian toy problem with a
known analytic posterior (the decisive correctness test, POSTERIOR.md), on both backends."""

import keras
import numpy as np
import pytest
from keras import ops

from specsr_keras.models.diffusion import cosine_schedule
from specsr_keras.models.samplers import LinearData, Sampler, parse_sampler_settings

pytestmark = pytest.mark.keras

N_DIM, N_OBS, N_SAMPLES = 6, 3, 20000


def toy_problem(noise_sigma, seed=0):
    """Gaussian prior N(mu, cov0) on R^6, a random 3x6 operator A, noise sigma per pixel, one y."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 1.0, N_DIM)
    root = rng.normal(0.0, 0.6, (N_DIM, N_DIM))
    cov0 = root @ root.T + 0.2 * np.eye(N_DIM)
    operator = rng.normal(0.0, 1.0, (N_OBS, N_DIM))
    noise_var = np.full(N_OBS, noise_sigma**2)
    x_true = rng.multivariate_normal(mu, cov0)
    y = operator @ x_true + rng.normal(0.0, noise_sigma, N_OBS)
    gain = cov0 @ operator.T @ np.linalg.inv(operator @ cov0 @ operator.T + np.diag(noise_var))
    post_mean = mu + gain @ (y - operator @ mu)
    post_cov = cov0 - gain @ operator @ cov0
    return mu, cov0, operator, noise_var, y, post_mean, post_cov


def exact_denoiser(mu, cov0):
    """v(x_t, t) of the exact posterior mean E[x0 | x_t] for the Gaussian prior."""
    mu_t = ops.convert_to_tensor(mu.astype(np.float32))
    cov_t = ops.convert_to_tensor(cov0.astype(np.float32))
    eye = ops.eye(N_DIM)

    def denoise(x_t, t):
        signal, noise = cosine_schedule(t[0])
        gain = signal * ops.matmul(cov_t, ops.inv(ops.square(signal) * cov_t + ops.square(noise) * eye))
        x0 = mu_t + ops.matmul(x_t - signal * mu_t, ops.transpose(gain))
        return (signal * x_t - x0) / noise

    return denoise


def run_toy(sampler, noise_sigma, covariance="exact", seed=5):
    """Samples of the toy posterior; covariance "exact" (the prior's) or "diagonal" (its
    diagonal only: the approximation of independent pixels)."""
    mu, cov0, operator, noise_var, y, post_mean, post_cov = toy_problem(noise_sigma)
    whitened = (operator / np.sqrt(noise_var)[:, None]).astype(np.float32)[None]
    observed = (y / np.sqrt(noise_var)).astype(np.float32)[None]
    if covariance == "exact":
        eigenvalues, basis = np.linalg.eigh(cov0)
    else:
        eigenvalues, basis = np.diag(cov0), np.eye(N_DIM)
    data = LinearData(ops.convert_to_tensor(whitened), ops.convert_to_tensor(observed),
                      ops.convert_to_tensor(basis.astype(np.float32)),
                      ops.convert_to_tensor(eigenvalues.astype(np.float32)), samples=N_SAMPLES)
    noise = sampler.draw_noise(N_SAMPLES, (N_DIM,), seed=seed, observed=N_OBS)
    samples = keras.ops.convert_to_numpy(sampler.run(exact_denoiser(mu, cov0), noise, cosine_schedule, data))
    return samples, post_mean, post_cov


@pytest.mark.parametrize("noise_sigma", [3.0, 0.05])  # low and high S/N
@pytest.mark.parametrize("steps", [4, 12])
def test_ancestral_sampler_with_exact_covariance_samples_the_analytic_posterior(noise_sigma, steps):
    sampler = Sampler("ddim", steps=steps, eta=1.0, posterior_draws=True)
    samples, post_mean, post_cov = run_toy(sampler, noise_sigma)
    sd = np.sqrt(np.diag(post_cov))
    # Mean within 4 Monte-Carlo standard errors; covariance within 4 % of the posterior scale.
    np.testing.assert_array_less(np.abs(samples.mean(0) - post_mean), 4 * sd / np.sqrt(N_SAMPLES) + 1e-4)
    scale = np.sqrt(np.outer(np.diag(post_cov), np.diag(post_cov)))
    np.testing.assert_array_less(np.abs(np.cov(samples.T) - post_cov) / scale, 0.04)


def test_without_the_data_step_the_sampler_returns_the_prior_and_ignores_the_data():
    mu, cov0, *_ = toy_problem(1.0)
    sampler = Sampler("ddim", steps=100, data_consistency=False)
    noise = sampler.draw_noise(N_SAMPLES, (N_DIM,), seed=1)
    samples = keras.ops.convert_to_numpy(sampler.run(exact_denoiser(mu, cov0), noise, cosine_schedule))
    np.testing.assert_allclose(samples.mean(0), mu, atol=4 * np.sqrt(np.diag(cov0).max() / N_SAMPLES))
    np.testing.assert_allclose(np.cov(samples.T), cov0, atol=0.05 * np.diag(cov0).max())
    data = LinearData(ops.ones((1, N_OBS, N_DIM)), ops.ones((1, N_OBS)), ops.eye(N_DIM), ops.ones((N_DIM,)), N_SAMPLES)
    ignored = sampler.run(exact_denoiser(mu, cov0), noise, cosine_schedule, data)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ignored), samples)


@pytest.mark.parametrize("noise_sigma", [3.0, 0.05])
def test_prior_covariance_in_its_eigenbasis_beats_independent_pixels(noise_sigma):
    """Why the learned prior's P_t uses the population covariance, not per-pixel variances."""
    sampler = Sampler("ddim", steps=10, eta=1.0, posterior_draws=True)
    errors = {}
    for covariance in ("exact", "diagonal"):
        samples, post_mean, post_cov = run_toy(sampler, noise_sigma, covariance)
        errors[covariance] = np.max(np.abs(samples.mean(0) - post_mean) / np.sqrt(np.diag(post_cov)))
    assert errors["exact"] < 0.05 < 0.2 < errors["diagonal"]


def test_sampler_config_round_trips_and_rejects_bad_settings():
    sampler = Sampler("ddim", steps=7, eta=0.5, prior_scale=2.0, posterior_draws=True, instrument_steps={"g141": 30})
    assert Sampler.from_config(sampler.get_config()) == sampler
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sampler))
    assert restored == sampler
    assert sampler.replace(steps=3).steps == 3 and sampler.replace(steps=None).steps == 7
    with pytest.raises(ValueError, match="deterministic"):
        Sampler("dpm++2m", eta=1.0)
    with pytest.raises(ValueError, match="steps"):
        Sampler(steps=0)
    with pytest.raises(ValueError, match="instrument"):
        Sampler(instrument_steps={"hubble": 30})
    for bad in ({"g141": 0}, {"g141": 2.7}, {"g141": True}, {"g141": 30, "3d-hst": 20}, 3):
        with pytest.raises(ValueError):
            Sampler(instrument_steps=bad)
    assert "instrument_steps" not in Sampler().get_config()  # configs without it load in older versions
    assert "noise_check" not in Sampler().get_config()
    checked = Sampler(noise_check=True)
    assert Sampler.from_config(checked.get_config()) == checked and checked.get_config()["noise_check"] is True
    assert "noise-checked" in checked.describe() and Sampler().replace(noise_check=True) == checked


def test_an_instrument_gets_its_own_steps_and_the_others_the_sampler_s():
    sampler = Sampler(steps=10, eta=1.0, posterior_draws=True, instrument_steps={"3d-hst": 30})
    assert sampler.instrument_steps == {"hst_g141": 30}  # aliases stored by their canonical name
    g141 = sampler.for_instrument("g141")
    assert g141.steps == 30 and g141.instrument_steps == {} and g141.eta == 1.0 and g141.posterior_draws
    assert sampler.for_instrument("euclid").steps == 10
    assert g141.for_instrument("g141") == g141  # resolved once, stays resolved
    assert g141.noise_shapes((320, 1), observed=50)["step"][0] == 30
    assert "30 steps on hst_g141" in sampler.describe()
    assert sampler.replace(steps=20).for_instrument("g141").steps == 20  # a new step count holds everywhere
    assert sampler.replace(eta=0.5).for_instrument("g141").steps == 30


def test_sampler_settings_text_parses_types_and_per_instrument_steps():
    settings = parse_sampler_settings("amortised=true,eta=1,prior_scale=1.5,steps.g141=30,steps.roman=20,"
                                      "noise_check=true")
    assert settings == {"amortised": True, "eta": 1, "prior_scale": 1.5, "noise_check": True,
                        "instrument_steps": {"g141": 30, "roman": 20}}
    assert Sampler().replace(**settings).for_instrument("roman_grism").steps == 20
    assert parse_sampler_settings("") is None
    assert parse_sampler_settings("dpm++2m,steps=20") == {"kind": "dpm++2m", "steps": 20}
    for bad in ("steps", "colour=red", "steps.hubble=3"):
        with pytest.raises(ValueError):
            parse_sampler_settings(bad)
