"""Diffusion autoencoders: a semantic encoder E(x) -> z trained through a U-Net decoder
that denoises x conditioned on z. The decoder's diffusion loss is the encoder's only
training signal (no pixel reconstruction loss): z must carry what the decoder cannot
guess from the noisy input.

`SpectrumDiffusionAutoencoder` — which spectra it sees, and why one encoder:
    one `SpectrumEncoder` embeds both the low-res spectrum (ENCODER_GRID, 512 px, its
    instrument id) and the hi-res target window (TARGET_GRID, 320 px, pseudo-instrument
    `encoder.target_instrument_id`); the encoder has a dynamic length, so the two
    differ only in their input and in the instrument FiLM. One encoder means one z
    space for every spectrum of a galaxy (the contrastive head needs a single
    spectrum projection) and the scarce hi-res data share the trunk with plentiful
    grism data. Two decoders: `lowres_decoder` reconstructs the ENCODER_GRID spectrum
    from z_lo; the optional `hires_decoder` reconstructs the hi-res window from z_hi
    and (weight `cross_weight`) from z_lo, which pushes the low-res embedding to
    predict the hi-res window, exactly what super-resolution needs from it. Examples
    without hi-res data pass hires_weight = 0 and drop out of those terms.
    Inputs: "lowres", "lowres_weight" (B, 512), "instrument" (B,) int, optional
    "hires", "hires_weight" (B, 320); normalised as in `preprocess.py`.

`ImageDiffusionAutoencoder` — E_i(image) -> z_i, 2D U-Net decoder conditioned on z_i.
    Inputs: "image" (B, 64, 64, 4) normalised (`normalise_image`), optional
    "image_weight" (B, 64, 64). `sample` -> (B, K, 64, 64, 4).

Both use classifier-free condition dropout on z, so `guidance` works at sampling.
"""

import keras
from keras import ops

from specsr_keras.models.diffusion import (
    DiffusionTask,
    GaussianDiffusion,
    as_tensors,
    deserialize_nested,
    diffusion_loss,
)
from specsr_keras.models.preprocess import masked_flux
from specsr_keras.models.samplers import Sampler

register = keras.saving.register_keras_serializable(package="specsr")


@register
class SpectrumDiffusionAutoencoder(keras.Model):
    def __init__(
        self,
        encoder,
        lowres_decoder,
        hires_decoder=None,
        cross_weight=1.0,
        condition_dropout=0.1,
        min_signal_rate=0.02,
        max_signal_rate=0.999,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.cross_weight = float(cross_weight)
        self.condition_dropout = float(condition_dropout)
        self.min_signal_rate = float(min_signal_rate)
        self.max_signal_rate = float(max_signal_rate)
        self.seed = seed
        common = dict(
            condition_dim=encoder.z_dim,
            condition_dropout=condition_dropout,
            min_signal_rate=min_signal_rate,
            max_signal_rate=max_signal_rate,
        )
        for decoder in (lowres_decoder, hires_decoder):
            if decoder is not None and decoder.condition_dim != encoder.z_dim:
                raise ValueError(f"decoder condition_dim must equal z_dim={encoder.z_dim}")
        self.lowres_diffusion = GaussianDiffusion(
            lowres_decoder, seed=seed, name="lowres_diffusion", **common
        )
        self.hires_diffusion = None
        if hires_decoder is not None:
            hires_seed = None if seed is None else seed + 1
            self.hires_diffusion = GaussianDiffusion(
                hires_decoder, seed=hires_seed, name="hires_diffusion", **common
            )
        self.built = True

    def encode(self, flux, weight, instrument):
        """z (B, z_dim) of normalised spectra (B, L) on any grid the encoder accepts."""
        spectrum = ops.stack([masked_flux(flux, weight), weight], axis=-1)
        instrument = ops.convert_to_tensor(instrument)
        return self.encoder({"spectrum": spectrum, "instrument": instrument})

    def encode_lowres(self, inputs):
        return self.encode(inputs["lowres"], inputs["lowres_weight"], inputs["instrument"])

    def encode_hires(self, inputs):
        target_id = ops.ones_like(inputs["instrument"]) * self.encoder.target_instrument_id
        return self.encode(inputs["hires"], inputs["hires_weight"], target_id)

    def call(self, inputs, training=None):
        z_lo = self.encode_lowres(inputs)
        lowres = ops.expand_dims(inputs["lowres"], -1)
        outputs = {
            "lowres": self.lowres_diffusion(
                lowres, z_lo, None, inputs["lowres_weight"], training=training
            )
        }
        if self.hires_diffusion is not None and "hires" in inputs:
            z_hi = self.encode_hires(inputs)
            hires = ops.expand_dims(inputs["hires"], -1)
            weight = inputs["hires_weight"]
            if self.cross_weight > 0:  # one decoder pass over [from z_hi; from z_lo]
                hires = ops.concatenate([hires, hires], axis=0)
                z_hi = ops.concatenate([z_hi, z_lo], axis=0)
                weight = ops.concatenate([weight, self.cross_weight * weight], axis=0)
            outputs["hires"] = self.hires_diffusion(hires, z_hi, None, weight, training=training)
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = diffusion_loss(y_pred["lowres"], sample_weight)
        if "hires" in y_pred:
            if sample_weight is not None and self.cross_weight > 0:
                sample_weight = ops.concatenate([sample_weight, sample_weight], axis=0)
            loss = loss + diffusion_loss(y_pred["hires"], sample_weight)
        for extra_loss in self.losses:
            loss = loss + ops.sum(extra_loss)
        return loss

    def _sample(self, diffusion, z, num_samples, sampler, seed):
        z = ops.repeat(z, num_samples, axis=0)
        length = diffusion.denoiser.length
        x0 = diffusion.sample((ops.shape(z)[0], length, 1), z, None, sampler, seed)
        return ops.reshape(x0[..., 0], (-1, num_samples, length))

    def sample_lowres(self, inputs, num_samples=1, sampler: Sampler | None = None, seed=None):
        """Reconstructions (B, K, 512) of the low-res spectra from their own z."""
        z = self.encode_lowres(as_tensors(inputs))
        return self._sample(self.lowres_diffusion, z, num_samples, sampler, seed)

    def sample_hires(self, inputs, num_samples=1, sampler: Sampler | None = None, seed=None, source="lowres"):
        """Hi-res windows (B, K, 320) decoded from z of the "lowres" or "hires" input."""
        inputs = as_tensors(inputs)
        z = self.encode_lowres(inputs) if source == "lowres" else self.encode_hires(inputs)
        return self._sample(self.hires_diffusion, z, num_samples, sampler, seed)

    def get_config(self):
        hires = self.hires_diffusion
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "lowres_decoder": keras.saving.serialize_keras_object(self.lowres_diffusion.denoiser),
            "hires_decoder": None
            if hires is None
            else keras.saving.serialize_keras_object(hires.denoiser),
            "cross_weight": self.cross_weight,
            "condition_dropout": self.condition_dropout,
            "min_signal_rate": self.min_signal_rate,
            "max_signal_rate": self.max_signal_rate,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_nested(config, ("encoder", "lowres_decoder", "hires_decoder")))


@register
class ImageDiffusionAutoencoder(DiffusionTask):
    _nested = ("denoiser", "encoder")

    def __init__(self, denoiser, encoder, condition_dropout=0.1, **kwargs):
        if denoiser.condition_dim != encoder.z_dim:
            raise ValueError(f"decoder condition_dim must equal z_dim={encoder.z_dim}")
        super().__init__(
            denoiser, condition_dim=encoder.z_dim, condition_dropout=condition_dropout, **kwargs
        )
        self.encoder = encoder
        self.built = True

    def encode(self, image):
        return self.encoder(image)

    def conditioning(self, inputs, training=None):
        return self.encoder(inputs["image"]), None

    def target(self, inputs):
        return inputs["image"], inputs.get("image_weight")
