"""Samplers: reverse diffusion from noise to x0, optionally guided by a linear observation.

A `Sampler` knows nothing of the network (diffusers-style): `run(denoise, noise, schedule,
data)` takes the v-prediction function, the noise it needs (`draw_noise`, all drawn before
the loop so a compiled function or a serving graph can run the loop on given noise), the
signal/noise schedule and, optionally, `LinearData`. Its settings are saved with the model
(`get_config`) and written into the SavedModel metadata from the same object.

Data consistency (`LinearData`). In whitened units the observation is y = B x0 + e,
e ~ N(0, I) (B = the instrument's forward operator times sqrt(ivar) per pixel; masked pixels
are zero rows). At each step the denoiser's clean estimate x̂0 ≈ E[x0 | x_t] is treated as
the mean of a Gaussian p(x0 | x_t) with covariance P_t and conditioned on y in closed form:

    S = B P_t Bᵀ + I,   x̃0 = x̂0 + P_t Bᵀ S⁻¹ (y - B x̂0)

(an m × m solve per sample, m the observed pixels). With `posterior_draws` a sample
x0 ~ N(x̃0, P_t - P_t Bᵀ S⁻¹ B P_t) is drawn instead by perturbation (draw u ~ N(0, P_t),
e ~ N(0, I); x0 = x̂0 + u + P_t Bᵀ S⁻¹ (y - B(x̂0 + u) - e)). The update to the next time
uses x̃0 and ε̃ = (x_t - α_t x̃0) / σ_t. With `eta` = 1 and posterior draws this is an
ancestral sampler that is exact for a Gaussian prior with the exact P_t, at any number of
steps (tests/test_samplers.py). For a learned prior P_t is that of a Gaussian with
the population covariance of x0, U diag(λ) Uᵀ (from the training set; `LinearData`):
P_t = U diag(s λ σ² / (α² s λ + σ²)) Uᵀ, exact when the prior is that Gaussian; it pulls
hard toward the data at high noise and fades as t -> 0 (DiffPIR, Zhu et al. 2023; ΠGDM,
Song et al. 2023 with a population covariance in place of the denoiser's Jacobian). The
eigenbasis makes the step cheap: one m x m solve per object and step, shared by its K
samples. With `noise_check` the data step's sigma is the ivar's x max(1, noise_scale), the
spectrum's measured pixel-to-pixel scatter (`spectral.noise`): a pipeline that under-states
its errors does not make the posterior over-confident; an honest ivar is barely changed
(noise_scale 1 ± 0.06 over 500 pixels).

Samplers: "ddim" (Song et al. 2021; eta 0 deterministic, 1 ancestral) and "dpm++2m"
(DPM-Solver++(2M), Lu et al. 2022; deterministic, second order, time steps uniform in
log SNR). Both make steps + 1 network calls: the last one at t = 0 returns the x0 estimate.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from specsr_keras.instruments import resolve_instrument_name

register = keras.saving.register_keras_serializable(package="specsr")

SAMPLERS = ("ddim", "dpm++2m")


def logsnr_uniform_times(steps, min_signal_rate=0.02, max_signal_rate=0.999):
    """steps + 1 times from 1 to 0, uniform in log(signal / noise) (numpy, static)."""
    start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
    logsnr = np.linspace(-math.log(math.tan(end)), -math.log(math.tan(start)), steps + 1)
    times = (np.arctan(np.exp(-logsnr)) - start) / (end - start)
    return np.clip(times, 0.0, 1.0).astype("float32")


@dataclass(frozen=True)
class LinearData:
    """Linear Gaussian observations of B objects, each sampled K times, whitened.

    operator (B, m, n): W A, W = diag(sqrt(ivar)) (zero rows = pixels not observed);
    observed (B, m): W y; basis (n, r), eigenvalues (r,): the prior covariance of x0 as
    U diag(λ) Uᵀ (U = I and λ = per-pixel variances for independent pixels); samples K:
    sample i of the sampler's N = B K belongs to object i // K.
    """

    operator: object
    observed: object
    basis: object
    eigenvalues: object
    samples: int
    prior_scale: float = 1.0

    @property
    def projected(self):
        """W A U (B, m, r): the operator in the prior's eigenbasis."""
        return ops.einsum("bmn,nr->bmr", self.operator, self.basis)


def tweedie_variance(eigenvalues, signal_rate, noise_rate, prior_scale=1.0):
    """Eigenvalues (r,) of P_t = Cov[x0 | x_t] for a Gaussian prior of eigenvalues λ:
    s λ σ² / (α² s λ + σ²) (s = prior_scale)."""
    variance = ops.cast(eigenvalues, "float32") * prior_scale
    return variance * ops.square(noise_rate) / (ops.square(signal_rate) * variance + ops.square(noise_rate))


def data_consistency(x0, data: LinearData, signal_rate, noise_rate, projected=None, draw_x=None, draw_y=None):
    """x̃0 (N, n): the clean estimates x0 (N, n) conditioned on the data (module docstring).

    projected: `data.projected`, computed once per sampling run; draw_x (N, r), draw_y
    (N, m): standard normal noise for a posterior draw (None: the conditional mean).
    """
    observed_pixels = data.operator.shape[1]
    projected = data.projected if projected is None else projected
    variance = tweedie_variance(data.eigenvalues, signal_rate, noise_rate, data.prior_scale)  # (r,)
    weighted = projected * variance  # (B, m, r) = W A U diag(p)
    gram = ops.einsum("bmr,bkr->bmk", weighted, projected) + ops.eye(observed_pixels)
    size = data.operator.shape[-1]
    estimate = ops.reshape(x0, (-1, data.samples, size))  # (B, K, n)
    if draw_x is not None:
        draw = ops.reshape(draw_x, (-1, data.samples, draw_x.shape[-1])) * ops.sqrt(variance)
        estimate = estimate + ops.einsum("nr,bkr->bkn", data.basis, draw)
    residual = ops.expand_dims(data.observed, 1) - ops.einsum("bmn,bkn->bkm", data.operator, estimate)
    if draw_y is not None:
        residual = residual - ops.reshape(draw_y, (-1, data.samples, observed_pixels))
    solution = ops.solve(gram, ops.transpose(residual, (0, 2, 1)))  # (B, m, K)
    correction = ops.einsum("nr,bmr,bmk->bkn", data.basis, weighted, solution)
    return ops.reshape(estimate + correction, (-1, size))


@register
class Sampler:
    """Reverse-diffusion settings (saved with a model) and the loop that uses them.

    kind: "ddim" or "dpm++2m"; steps: updates from t=1 to t=0; eta (DDIM only): 0
    deterministic, 1 ancestral; guidance: classifier-free guidance scale (1 = none);
    data_consistency: use `LinearData` when the caller gives it; prior_scale: multiplies
    the prior variance in P_t; posterior_draws: draw x0 from the Gaussian posterior at
    each step instead of taking its mean (needs noise, see `draw_noise`); amortised: a
    conditional model also conditions its denoiser on the observation itself (models that
    have such an input, e.g. `SuperResolver`'s spectrum modality); samples: draws per object
    (K) when a caller does not say; instrument_steps: {instrument name: steps} where an
    instrument needs other than `steps` (e.g. G141, whose windows in units of its low blended
    peak are several times wider than Euclid's), applied by `for_instrument` wherever a
    sampler meets the instrument of its spectra; noise_check: the data step never trusts an
    ivar that states less noise than the pixels show (module doc).
    """

    def __init__(self, kind="ddim", steps=10, eta=0.0, guidance=1.0, data_consistency=True, prior_scale=1.0,
                 posterior_draws=False, amortised=False, samples=8, instrument_steps=None, noise_check=False):
        if kind not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {kind!r}")
        if kind == "dpm++2m" and (eta or posterior_draws):
            raise ValueError("the dpm++2m sampler is deterministic: use eta=0 and no posterior draws")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.kind, self.steps, self.eta = kind, int(steps), float(eta)
        self.guidance, self.data_consistency = float(guidance), bool(data_consistency)
        self.prior_scale, self.posterior_draws = float(prior_scale), bool(posterior_draws)
        self.amortised = bool(amortised)
        self.samples = int(samples)
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.instrument_steps = _instrument_steps(instrument_steps or {})
        self.noise_check = bool(noise_check)

    def get_config(self) -> dict:
        """The settings; instrument_steps and noise_check only where set (older versions load it)."""
        return {"kind": self.kind, "steps": self.steps, "eta": self.eta, "guidance": self.guidance,
                "data_consistency": self.data_consistency, "prior_scale": self.prior_scale,
                "posterior_draws": self.posterior_draws, "amortised": self.amortised, "samples": self.samples,
                **({"instrument_steps": dict(self.instrument_steps)} if self.instrument_steps else {}),
                **({"noise_check": True} if self.noise_check else {})}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def replace(self, **changes) -> Sampler:
        """A copy with some settings changed (None values are ignored); a new `steps` holds for
        every instrument unless `instrument_steps` is given with it."""
        known = sorted({*self.get_config(), "instrument_steps", "noise_check"})
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown sampler setting(s) {unknown}; known: {known}")
        changes = {k: v for k, v in changes.items() if v is not None}
        config = self.get_config()
        if "steps" in changes:
            config.pop("instrument_steps", None)
        return Sampler(**{**config, **changes})

    def for_instrument(self, instrument: str) -> Sampler:
        """The sampler for spectra of `instrument` (a name or alias): its `instrument_steps`
        entry as `steps`, if it has one; the result has no per-instrument steps left."""
        steps = self.instrument_steps.get(resolve_instrument_name(instrument), self.steps)
        return self.replace(steps=steps, instrument_steps={})

    def describe(self) -> str:
        text = f"{self.samples} samples x {self.kind}, {self.steps} steps" + (", amortised" if self.amortised else "")
        text += f", eta {self.eta:g}" if self.eta else ""
        text += f", guidance {self.guidance:g}" if self.guidance != 1.0 else ""
        text += "".join(f", {count} steps on {name}" for name, count in self.instrument_steps.items())
        if self.data_consistency:
            draws = ", posterior draws" if self.posterior_draws else ""
            checked = ", noise-checked" if self.noise_check else ""
            text += f", data-consistent (prior scale {self.prior_scale:g}{draws}{checked})"
        return text

    def __eq__(self, other):
        return isinstance(other, Sampler) and self.get_config() == other.get_config()

    def __repr__(self):
        return f"Sampler({self.get_config()})"

    # --- noise ------------------------------------------------------------------------
    def noise_shapes(self, sample_shape, observed=0) -> dict[str, tuple]:
        """Per-sample shapes of the noise `run` reads (every array gets a leading N axis).

        initial: x_T; step: fresh DDIM noise per update (eta > 0); draw_x, draw_y: the
        posterior-draw noise per call (posterior_draws with `observed` > 0 pixels).
        """
        sample_shape = tuple(sample_shape)
        shapes = {"initial": sample_shape}
        if self.eta:
            shapes["step"] = (self.steps, *sample_shape)
        if self.posterior_draws and self.data_consistency and observed:
            size = int(np.prod(sample_shape))
            shapes["draw_x"] = (self.steps + 1, size)  # in the prior's eigenbasis (r = n)
            shapes["draw_y"] = (self.steps + 1, int(observed))
        return shapes

    def draw_noise(self, count, sample_shape, seed=None, observed=0) -> dict:
        """Standard normal noise for `count` samples from an int seed or SeedGenerator."""
        if seed is None:
            seed = random.randrange(2**31 - 1)
        noise = {}
        for offset, (name, shape) in enumerate(self.noise_shapes(sample_shape, observed).items()):
            key = seed if isinstance(seed, keras.random.SeedGenerator) else int(seed) + offset
            noise[name] = keras.random.normal((count, *shape), seed=key)
        return noise

    # --- the loop ---------------------------------------------------------------------
    def times(self, min_signal_rate=0.02, max_signal_rate=0.999) -> np.ndarray:
        """The steps + 1 diffusion times from 1 to 0 (static)."""
        if self.kind == "dpm++2m":
            return logsnr_uniform_times(self.steps, min_signal_rate, max_signal_rate)
        return np.linspace(1.0, 0.0, self.steps + 1).astype("float32")

    def run(self, denoise, noise: dict, schedule, data: LinearData | None = None, times=None):
        """x0 (N, *sample_shape) from x_T = noise["initial"] in steps + 1 calls of denoise(x_t, t).

        denoise returns v (v-prediction) for x_t (N, ...) and t (N,); schedule(t) ->
        (signal_rate, noise_rate); data: a LinearData on the flattened sample (or None).
        """
        x_t = noise["initial"]
        shape = ops.shape(x_t)
        times = ops.convert_to_tensor(self.times() if times is None else times)
        steps = self.steps
        ones = ops.ones((shape[0],), dtype="float32")
        use_data = data is not None and self.data_consistency
        draws = use_data and "draw_x" in noise
        projected = data.projected if use_data else None

        def clean_estimate(i, x_t, signal_t, noise_t):
            v = denoise(x_t, ones * ops.take(times, i))
            x0 = signal_t * x_t - noise_t * v
            if not use_data:
                return x0
            flat = ops.reshape(x0, (-1, int(np.prod(x0.shape[1:]))))
            draw_x = ops.take(noise["draw_x"], i, axis=1) if draws else None
            draw_y = ops.take(noise["draw_y"], i, axis=1) if draws else None
            flat = data_consistency(flat, data, signal_t, noise_t, projected, draw_x, draw_y)
            return ops.reshape(flat, shape)

        def ddim_step(i, state):
            x_t, _ = state
            t, s = ops.take(times, i), ops.take(times, ops.minimum(i + 1, steps))
            (signal_t, noise_t), (signal_s, noise_s) = schedule(t), schedule(s)
            x0 = clean_estimate(i, x_t, signal_t, noise_t)
            eps = (x_t - signal_t * x0) / noise_t
            if not self.eta:
                return signal_s * x0 + noise_s * eps, x0
            ratio = 1.0 - ops.square(signal_t) / ops.square(signal_s)
            sigma = self.eta * ops.sqrt(ops.maximum(ops.square(noise_s / noise_t) * ratio, 0.0))
            direction = ops.sqrt(ops.maximum(ops.square(noise_s) - ops.square(sigma), 0.0))
            fresh = ops.take(noise["step"], ops.minimum(i, steps - 1), axis=1)
            return signal_s * x0 + direction * eps + sigma * fresh, x0

        def dpm_step(i, state):
            x_t, previous_x0, previous_h = state
            t, s = ops.take(times, i), ops.take(times, ops.minimum(i + 1, steps))
            (signal_t, noise_t), (signal_s, noise_s) = schedule(t), schedule(s)
            h = ops.log(signal_s / noise_s) - ops.log(signal_t / noise_t)
            x0 = clean_estimate(i, x_t, signal_t, noise_t)
            half_inverse_ratio = 0.5 * h / previous_h
            corrected = (1.0 + half_inverse_ratio) * x0 - half_inverse_ratio * previous_x0
            x0_estimate = ops.where(i > 0, corrected, x0)
            x_s = (noise_s / noise_t) * x_t - signal_s * (ops.exp(-h) - 1.0) * x0_estimate
            return x_s, x0, h

        if self.kind == "dpm++2m":
            state = (x_t, ops.zeros_like(x_t), ops.ones(()))
            return ops.fori_loop(0, steps + 1, dpm_step, state)[1]
        return ops.fori_loop(0, steps + 1, ddim_step, (x_t, ops.zeros_like(x_t)))[1]


def _instrument_steps(given) -> dict[str, int]:
    """{canonical instrument name: steps} from {name or alias: steps}, checked."""
    if not isinstance(given, dict):
        raise ValueError(f"instrument_steps must map instrument names to steps, got {given!r}")
    steps = {}
    for name, count in given.items():
        canonical = resolve_instrument_name(name)
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
            raise ValueError(f"steps for {name}: a whole number >= 1, got {count!r}")
        if canonical in steps:
            raise ValueError(f"instrument_steps names {canonical} twice")
        steps[canonical] = int(count)
    return dict(sorted(steps.items()))


def parse_sampler_settings(text: str | None) -> dict | None:
    """'key=value,key=value' -> {key: value} (booleans, ints and floats parsed), checked
    against the `Sampler` settings; 'steps.<instrument>=N' sets that instrument's steps
    (`instrument_steps`); a bare sampler name ('ddim', 'dpm++2m') is the kind; None or "" -> None."""
    if not text:
        return None
    settings = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep and key in SAMPLERS:
            settings["kind"] = key
            continue
        if not sep:
            raise ValueError(f"sampler settings: {item!r} is neither key=value nor one of {SAMPLERS}")
        if key.startswith("steps."):
            settings.setdefault("instrument_steps", {})[key.removeprefix("steps.")] = _setting_value(value)
        else:
            settings[key] = _setting_value(value)
    Sampler().replace(**settings)  # unknown keys or bad values: ValueError now
    return settings


def _setting_value(text: str):
    """A setting's value: a boolean, an int, a float, else the text itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number
