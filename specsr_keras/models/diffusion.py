"""Gaussian diffusion with a cosine schedule, v-prediction and a DDIM sampler.

Read top to bottom like the keras.io DDIM example:

1. schedule   `cosine_schedule(t)`: diffusion time t in [0, 1] -> (signal_rate,
   noise_rate) with signal**2 + noise**2 = 1. The angle grows linearly in t from
   arccos(max_signal_rate) to arccos(min_signal_rate).
2. algebra    x_t = signal * x0 + noise * eps,   v = signal * eps - noise * x0,
   hence x0 = signal * x_t - noise * v  and  eps = noise * x_t + signal * v.
3. loss       `weighted_mse(v_pred, v, weight)`: per-pixel weights (0 = masked /
   not observed: those pixels contribute nothing), normalised by the weight sum.
4. sampler    a `samplers.Sampler` (DDIM or DPM-Solver++(2M), steps, eta, guidance, the
   data-consistency step): its loop runs inside one `keras.ops.fori_loop` (traces into
   a TF graph, jits under JAX) on noise drawn before it.
5. guidance   `GaussianDiffusion` (a layer) owns the denoiser, draws t and noise
   with its SeedGenerator, replaces the condition by a learned null vector with
   probability `condition_dropout` during training, and at sampling mixes
   v = v_null + guidance * (v_cond - v_null) (classifier-free guidance).
6. tasks      `DiffusionTask` (a keras.Model): `call` returns {"v_pred", "v_target",
   "weight"}, `compute_loss` turns them into the loss, so plain `model.fit` trains
   it on every backend; subclasses only say what is denoised (`target`) and what
   it is conditioned on (`conditioning`). `DiffusionModel` is the generic one.
"""

import math

import keras
from keras import ops

from specsr_keras.models.samplers import Sampler

register = keras.saving.register_keras_serializable(package="specsr")


# 1. Schedule ---------------------------------------------------------------------------
def cosine_schedule(t, min_signal_rate=0.02, max_signal_rate=0.999):
    """Signal and noise rates at diffusion time t (any shape, in [0, 1])."""
    start_angle = math.acos(max_signal_rate)
    end_angle = math.acos(min_signal_rate)
    angle = start_angle + ops.cast(t, "float32") * (end_angle - start_angle)
    return ops.cos(angle), ops.sin(angle)


# 2. v-prediction algebra ----------------------------------------------------------------
def add_noise(x0, noise, signal_rate, noise_rate):
    return signal_rate * x0 + noise_rate * noise


def velocity(x0, noise, signal_rate, noise_rate):
    return signal_rate * noise - noise_rate * x0


def x0_from_v(x_t, v, signal_rate, noise_rate):
    return signal_rate * x_t - noise_rate * v


def noise_from_v(x_t, v, signal_rate, noise_rate):
    return noise_rate * x_t + signal_rate * v


def v_from_x0(x_t, x0, signal_rate, noise_rate):
    noise = (x_t - signal_rate * x0) / noise_rate
    return velocity(x0, noise, signal_rate, noise_rate)


def expand_to(rates, x):
    """(B,) -> (B, 1, ..., 1) broadcastable against x."""
    return ops.reshape(rates, (-1,) + (1,) * (len(x.shape) - 1))


# 3. Loss --------------------------------------------------------------------------------
def weighted_mse(pred, target, weight):
    """Mean squared error with per-pixel weights (B, *spatial); channels averaged."""
    weight = ops.expand_dims(ops.cast(weight, pred.dtype), -1)
    channels = ops.cast(ops.shape(pred)[-1], pred.dtype)
    total = ops.sum(weight * ops.square(pred - target))
    return total / ops.maximum(ops.sum(weight) * channels, 1e-6)


def diffusion_loss(outputs, sample_weight=None):
    """Loss from a `GaussianDiffusion` output dict; `sample_weight` (B,) optional."""
    weight = outputs["weight"]
    if sample_weight is not None:
        weight = weight * expand_to(ops.cast(sample_weight, weight.dtype), weight)
    return weighted_mse(outputs["v_pred"], outputs["v_target"], weight)


# 4. Samplers: `models/samplers.py` (a `Sampler` object: DDIM or DPM-Solver++(2M), optionally
#    data-consistent), saved with a task and run by `GaussianDiffusion.sample` below.


# 5. Conditional diffusion layer with classifier-free guidance -------------------------
@register
class GaussianDiffusion(keras.layers.Layer):
    """A denoiser (U-Net with inputs x, t[, condition][, extra]) plus the diffusion.

    call(x0, condition, extra, weight, training) draws t ~ U(0, 1) and noise, applies
    condition dropout (training only) and returns {"v_pred", "v_target", "weight"}.
    Pixels of weight 0 are set to 0 in x0, so masked data never reach the network.
    `drop_extra_with_condition`: the dropped examples also lose their extra input
    channels (zeroed), so the null branch is an unconditional prior.
    Mixed precision: the diffusion algebra and the loss stay float32 (this layer's dtype
    defaults to float32); only the denoiser computes in the global policy's dtype.
    """

    def __init__(
        self,
        denoiser,
        condition_dim=0,
        condition_dropout=0.1,
        drop_extra_with_condition=True,
        min_signal_rate=0.02,
        max_signal_rate=0.999,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # see the class docstring
        super().__init__(**kwargs)
        self.denoiser = denoiser
        self.condition_dim = int(condition_dim)
        self.condition_dropout = float(condition_dropout) if condition_dim else 0.0
        self.drop_extra_with_condition = bool(drop_extra_with_condition)
        self.min_signal_rate = float(min_signal_rate)
        self.max_signal_rate = float(max_signal_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.null_condition = None
        if self.condition_dropout > 0:
            self.null_condition = self.add_weight(
                shape=(self.condition_dim,),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="null_condition",
            )
        self.built = True

    def schedule(self, t):
        return cosine_schedule(t, self.min_signal_rate, self.max_signal_rate)

    def call(self, x0, condition=None, extra=None, weight=None, training=None):
        if weight is None:
            weight = ops.ones_like(x0[..., 0])
        x0 = ops.where(ops.expand_dims(weight, -1) > 0, x0, ops.zeros_like(x0))
        batch = ops.shape(x0)[0]
        t = keras.random.uniform((batch,), seed=self.seed_generator)
        noise = keras.random.normal(ops.shape(x0), seed=self.seed_generator)
        signal_rate, noise_rate = (expand_to(r, x0) for r in self.schedule(t))
        x_t = add_noise(x0, noise, signal_rate, noise_rate)
        if training and self.condition_dropout > 0:
            keep = keras.random.uniform((batch,), seed=self.seed_generator)
            keep = ops.cast(keep >= self.condition_dropout, x0.dtype)
            condition, extra = self._mix_null(condition, extra, keep)
        return {
            "v_pred": self.predict_velocity(x_t, t, condition, extra),
            "v_target": velocity(x0, noise, signal_rate, noise_rate),
            "weight": weight,
        }

    def _mix_null(self, condition, extra, keep):
        """keep (B,) in {0, 1}: where 0, use the null condition (and zero `extra`)."""
        keep_c = ops.cast(ops.expand_dims(keep, -1), condition.dtype)
        null = ops.expand_dims(ops.cast(self.null_condition, condition.dtype), 0)
        condition = keep_c * condition + (1.0 - keep_c) * null
        if extra is not None and self.drop_extra_with_condition:
            extra = extra * expand_to(ops.cast(keep, extra.dtype), extra)
        return condition, extra

    def predict_velocity(self, x_t, t, condition=None, extra=None, guidance=1.0):
        """v(x_t, t | condition, extra), with classifier-free guidance if guidance != 1."""
        x_t, t = ops.convert_to_tensor(x_t), ops.convert_to_tensor(t)
        if isinstance(guidance, (int, float)) and guidance == 1.0:
            return ops.cast(self.denoiser(self._denoiser_inputs(x_t, t, condition, extra)), x_t.dtype)
        if self.null_condition is None:
            raise ValueError("guidance != 1 needs a model trained with condition_dropout > 0")
        batch = ops.shape(x_t)[0]
        zeros = ops.zeros_like(ops.reshape(x_t, (batch, -1))[:, 0])
        null_condition, null_extra = self._mix_null(condition, extra, zeros)
        both = self._denoiser_inputs(
            ops.concatenate([x_t, x_t], 0),
            ops.concatenate([t, t], 0),
            ops.concatenate([condition, null_condition], 0),
            None if extra is None else ops.concatenate([extra, null_extra], 0),
        )
        v_cond, v_null = ops.split(ops.cast(self.denoiser(both), x_t.dtype), 2, axis=0)
        return v_null + guidance * (v_cond - v_null)

    def _denoiser_inputs(self, x_t, t, condition, extra):
        inputs = {"x": x_t, "t": t}
        if self.condition_dim:
            inputs["condition"] = condition
        if extra is not None:
            inputs["extra"] = extra
        return inputs

    def sample(self, shape, condition=None, extra=None, sampler: Sampler | None = None, seed=None, noise=None,
               data=None):
        """Draw x0 of `shape` (N, ...) given per-sample condition/extra (batch N).

        sampler: a `Sampler` (default: DDIM, 10 steps); noise: its `draw_noise` result drawn
        outside (for a compiled caller), else drawn here from `seed`; data: `LinearData` for
        the sampler's data-consistency step.
        """
        sampler = sampler or Sampler()
        if noise is None:
            observed = 0 if data is None else data.operator.shape[1]
            noise = sampler.draw_noise(shape[0], shape[1:], seed, observed=observed)

        def denoise(x_t, t):
            return self.predict_velocity(x_t, t, condition, extra, sampler.guidance)

        return sampler.run(denoise, noise, self.schedule, data)

    def get_config(self):
        config = super().get_config()
        config.update(
            denoiser=keras.saving.serialize_keras_object(self.denoiser),
            condition_dim=self.condition_dim,
            condition_dropout=self.condition_dropout,
            drop_extra_with_condition=self.drop_extra_with_condition,
            min_signal_rate=self.min_signal_rate,
            max_signal_rate=self.max_signal_rate,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["denoiser"] = keras.saving.deserialize_keras_object(config["denoiser"])
        return cls(**config)


# 6. Tasks -------------------------------------------------------------------------------
def as_tensors(inputs):
    """Convert a dict of arrays to backend tensors (public methods may get numpy)."""
    return {key: ops.convert_to_tensor(value) for key, value in inputs.items()}


def deserialize_nested(config, keys):
    """Copy of `config` with the serialised sub-models under `keys` rebuilt."""
    config = dict(config)
    for key in keys:
        if isinstance(config.get(key), dict):
            config[key] = keras.saving.deserialize_keras_object(config[key])
    return config


def denoiser_input_shape(denoiser, key):
    """Shape (without batch) of a denoiser's dict input `key`, or None if it has none."""
    inputs = denoiser.input
    if not isinstance(inputs, dict) or key not in inputs:
        return None
    return tuple(inputs[key].shape[1:])


class DiffusionTask(keras.Model):
    """Base for one conditional diffusion model trained with `fit` on any backend.

    Subclasses implement `target(inputs) -> (x0, weight or None)` and
    `conditioning(inputs) -> (condition or None, extra or None)`, and list their
    sub-models in `_nested` for (de)serialisation.
    """

    _nested = ("denoiser",)

    def __init__(
        self,
        denoiser,
        condition_dim=0,
        condition_dropout=0.1,
        drop_extra_with_condition=True,
        min_signal_rate=0.02,
        max_signal_rate=0.999,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # inputs and targets are not rounded to bf16/fp16
        super().__init__(**kwargs)
        self.diffusion = GaussianDiffusion(
            denoiser,
            condition_dim=condition_dim,
            condition_dropout=condition_dropout,
            drop_extra_with_condition=drop_extra_with_condition,
            min_signal_rate=min_signal_rate,
            max_signal_rate=max_signal_rate,
            seed=seed,
            name="diffusion",
        )

    @property
    def denoiser(self):
        return self.diffusion.denoiser

    def target(self, inputs):
        raise NotImplementedError

    def conditioning(self, inputs, training=None):
        return None, None

    def postprocess(self, x0):
        """Map a sample from model units back to the caller's units."""
        return x0

    def call(self, inputs, training=None):
        x0, weight = self.target(inputs)
        condition, extra = self.conditioning(inputs, training=training)
        return self.diffusion(x0, condition, extra, weight, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = diffusion_loss(y_pred, sample_weight)
        for extra_loss in self.losses:
            loss = loss + ops.sum(extra_loss)
        return loss

    def denoise(self, inputs, noisy, t, guidance=1.0):
        """Deterministic v-prediction for given noisy samples and times t (B,)."""
        condition, extra = self.conditioning(as_tensors(inputs), training=False)
        noisy, t = ops.convert_to_tensor(noisy), ops.convert_to_tensor(t)
        return self.diffusion.predict_velocity(noisy, t, condition, extra, guidance)

    def sample(self, inputs, num_samples=8, sampler: Sampler | None = None, seed=None, noise=None):
        """`num_samples` draws per example: (B, num_samples, *sample shape).

        With no condition and no extra channels (unconditional), B = 1. `noise`: a
        `Sampler.draw_noise` result for B * num_samples samples, drawn outside.
        """
        condition, extra = self.conditioning(as_tensors(inputs), training=False)
        return self.draw(condition, extra, num_samples, sampler, seed, noise)

    def draw(self, condition, extra, num_samples, sampler=None, seed=None, noise=None, data=None):
        """Repeat each example's condition/extra `num_samples` times, sample, postprocess:
        (B, num_samples, *sample shape). The one sampling driver of every task."""
        reference = condition if condition is not None else extra
        batch = 1 if reference is None else ops.shape(reference)[0]
        if condition is not None:
            condition = ops.repeat(condition, num_samples, axis=0)
        if extra is not None:
            extra = ops.repeat(extra, num_samples, axis=0)
        sample_shape = denoiser_input_shape(self.denoiser, "x")
        x0 = self.diffusion.sample((batch * num_samples, *sample_shape), condition, extra, sampler, seed, noise, data)
        x0 = self.postprocess(x0)
        return ops.reshape(x0, (-1, num_samples, *x0.shape[1:]))

    def get_config(self):
        d = self.diffusion
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "denoiser": keras.saving.serialize_keras_object(d.denoiser),
            "condition_dropout": d.condition_dropout,
            "drop_extra_with_condition": d.drop_extra_with_condition,
            "min_signal_rate": d.min_signal_rate,
            "max_signal_rate": d.max_signal_rate,
            "seed": d.seed,
        }
        for key in self._nested:
            if key != "denoiser":
                value = getattr(self, key)
                config[key] = None if value is None else keras.saving.serialize_keras_object(value)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_nested(config, cls._nested))


@register
class DiffusionModel(DiffusionTask):
    """Generic diffusion model on any tensor; the keras.io DDIM example in task form.

    inputs {"x": (B, *shape), optional "weight" (B, *spatial), "condition"
    (B, condition_dim), "extra" (B, *spatial, E)}. The denoiser is any functional
    model with dict inputs "x", "t"[, "condition"][, "extra"] (e.g. a U-Net).
    """

    def __init__(self, denoiser, condition_dropout=0.0, **kwargs):
        condition_shape = denoiser_input_shape(denoiser, "condition")
        super().__init__(
            denoiser,
            condition_dim=condition_shape[-1] if condition_shape else 0,
            condition_dropout=condition_dropout,
            **kwargs,
        )
        self.built = True

    def target(self, inputs):
        return inputs["x"], inputs.get("weight")

    def conditioning(self, inputs, training=None):
        return inputs.get("condition"), inputs.get("extra")


class HiresSpectrumTask(DiffusionTask):
    """A task whose x0 is the rest-frame hi-res window: inputs["hires"] (B, 320) divided by
    `target_scale` (set by the subclass), weighted by the optional inputs["hires_weight"];
    samples come back as (B, 320) in the input flux units."""

    def target(self, inputs):
        return ops.expand_dims(inputs["hires"] / self.target_scale, -1), inputs.get("hires_weight")

    def postprocess(self, x0):
        return x0[..., 0] * self.target_scale
