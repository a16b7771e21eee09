"""Cross-modal alignment: projection heads to a shared unit sphere + symmetric InfoNCE.

`ContrastiveAligner(image_encoder, spectrum_encoder, ...)` projects z_img and z_spec
with two `ProjectionHead`s (MLP then L2 normalisation) to `embedding_dim`. One
spectrum encoder + head embeds both the low-res spectrum (ENCODER_GRID, its
instrument id) and the hi-res target window (TARGET_GRID, pseudo-instrument
`spectrum_encoder.target_instrument_id`), so both are positives of the galaxy's image.

Loss: weighted mean of symmetric InfoNCE terms over the pairs (image, lowres),
(image, hires), (lowres, hires) with `pair_weights`; the logit scale is learnable,
initialised at 1 / init_temperature (CLIP: 1/0.07) and clipped at `max_logit_scale`
(CLIP: 100) via its log-parameter.

Amplitudes (`amplitude=True`): inputs are normalised per object, which throws away what
a galaxy's brightness says about its mass and luminosity, so each head also reads the log
amplitude of its input ("log_image_amplitude" of the cutout, "log_scale" of the low-res
spectrum — also for the hi-res window, which is normalised by the same scale), centred on
typical values. Augmentation (`augment=True`): during training each image is one of its
8 flips/90° rotations (`RandomDihedral`), to which a galaxy's spectrum is invariant.

Catalogue properties (`property_weight` > 0): InfoNCE keeps only what the two modalities
share and what tells the galaxies of a batch apart, so a redshift that the image barely shows
is not kept precisely in the spectrum's embedding although its line position gives it. A
linear head on each embedding (image, low-res spectrum) then predicts the pair's
spectroscopic redshift "z_spec" and its catalogue mass "log_mstar" (standardised by
PROPERTY_NORM; rows without one, z_spec NaN or has_mass 0, drop out), and the mean squared
error times `property_weight` joins the loss: the shared space must hold them linearly.

Inputs (dict): "image" (B, 64, 64, 4); "lowres", "lowres_weight" (B, 512) and
"instrument" (B,) int; with amplitudes "log_image_amplitude", "log_scale" (B,); optional
"hires", "hires_weight" (B, 320) and "hires_valid" (B,) in {0, 1} (rows without a hi-res
spectrum drop out of the hi-res terms); with properties "z_spec", "log_mstar", "has_mass" (B,).
`call` returns {"image", "lowres"[, "hires", "hires_valid"], "logit_scale"[, "properties",
"property_targets", "property_valid"]}.
"""

import math

import keras
from keras import layers, ops

from specsr_keras.models.diffusion import deserialize_nested
from specsr_keras.models.preprocess import masked_flux

register = keras.saving.register_keras_serializable(package="specsr")


def l2_normalise(x, epsilon=1e-8):
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), epsilon))


def info_nce(a, b, logit_scale, valid=None):
    """Symmetric InfoNCE between unit vectors a, b (B, D); row i of a matches row i of b.

    `valid` (B,) in {0, 1} marks rows whose b exists: invalid rows are dropped as
    queries in both directions and as candidates in the a -> b direction.
    """
    logits = logit_scale * ops.matmul(a, ops.transpose(b))
    if valid is None:
        valid = ops.ones_like(logits[:, 0])
    valid = ops.cast(valid, logits.dtype)
    masked = ops.where(ops.expand_dims(valid, 0) > 0, logits, -1e9)
    log_p_ab = ops.diagonal(masked - ops.logsumexp(masked, axis=1, keepdims=True))
    log_p_ba = ops.diagonal(ops.transpose(logits) - ops.logsumexp(logits, axis=0)[:, None])
    count = ops.maximum(ops.sum(valid), 1.0)
    return -0.5 * (ops.sum(valid * log_p_ab) + ops.sum(valid * log_p_ba)) / count


def takes_amplitude(embedder) -> bool:
    """Whether an image/spectrum embedder model reads a "log_amplitude" input."""
    return isinstance(embedder.input, dict) and "log_amplitude" in embedder.input


def retrieval_top_k(emb_a, emb_b, k=1):
    """Fraction of rows i whose partner emb_b[i] is among the k most similar to emb_a[i]."""
    similarity = ops.matmul(emb_a, ops.transpose(emb_b))
    own = ops.expand_dims(ops.diagonal(similarity), -1)
    rank = ops.sum(ops.cast(similarity > own, "int32"), axis=-1)
    return ops.mean(ops.cast(rank < k, "float32"))


# Typical log10 amplitudes (centre, spread) of the simulated training mix: the spectrum scale
# [1e-17 erg/s/cm²/Å] and the cutout level [nJy]; a head reads (log amplitude - centre) / spread.
LOG_AMPLITUDE_NORM = {"spectrum": (-0.36, 0.41), "image": (1.55, 0.36)}
# Properties the shared space is taught with `property_weight` (centre, spread: the training
# mix's): the spectroscopic redshift and log10 M*/Msun of the catalogue.
PROPERTY_NORM = {"z_spec": (1.4, 0.3), "log_mstar": (10.0, 0.7)}


@register
class ProjectionHead(layers.Layer):
    """Dense -> GELU -> Dense -> L2 normalise: z (B, Z) -> unit vector (B, embedding_dim).

    With `amplitude_norm` (centre, spread), call(z, log_amplitude (B,)) appends the
    normalised log amplitude to z first.
    """

    def __init__(self, embedding_dim=32, hidden_dim=64, amplitude_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.amplitude_norm = None if amplitude_norm is None else tuple(float(v) for v in amplitude_norm)
        self.hidden = layers.Dense(self.hidden_dim, activation="gelu", name="hidden")
        self.out = layers.Dense(self.embedding_dim, name="out")

    def build(self, input_shape):
        extra = 1 if self.amplitude_norm else 0
        self.hidden.build((input_shape[0], input_shape[-1] + extra))
        self.out.build((input_shape[0], self.hidden_dim))

    def call(self, z, log_amplitude=None):
        if self.amplitude_norm:
            centre, spread = self.amplitude_norm
            amplitude = (ops.reshape(ops.cast(log_amplitude, z.dtype), (-1, 1)) - centre) / spread
            z = ops.concatenate([z, amplitude], axis=-1)
        return l2_normalise(self.out(self.hidden(z)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, hidden_dim=self.hidden_dim,
                      amplitude_norm=None if self.amplitude_norm is None else list(self.amplitude_norm))
        return config


@register
class RandomDihedral(layers.Layer):
    """Training only: each image (B, H, W, C), H = W, becomes one of its 8 flips / 90°
    rotations, drawn independently per image; identity at inference."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        flips = (lambda x: x, lambda x: ops.flip(x, axis=1), lambda x: ops.flip(x, axis=2),
                 lambda x: ops.flip(ops.flip(x, axis=1), axis=2))
        bases = (images, ops.transpose(images, (0, 2, 1, 3)))
        variants = [flip(base) for flip in flips for base in bases]
        choice = keras.random.randint((ops.shape(images)[0],), 0, 8, seed=self.seed_generator)
        pick = ops.reshape(ops.one_hot(choice, 8, dtype=images.dtype), (-1, 8, 1, 1, 1))
        return ops.sum(ops.stack(variants, axis=1) * pick, axis=1)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@register
class ContrastiveAligner(keras.Model):
    def __init__(
        self,
        image_encoder,
        spectrum_encoder,
        embedding_dim=32,
        hidden_dim=64,
        init_temperature=0.07,
        max_logit_scale=100.0,
        pair_weights=(1.0, 1.0, 0.5),
        amplitude=False,
        augment=False,
        property_weight=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_encoder = image_encoder
        self.spectrum_encoder = spectrum_encoder
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.init_temperature = float(init_temperature)
        self.max_logit_scale = float(max_logit_scale)
        self.pair_weights = tuple(float(w) for w in pair_weights)
        self.amplitude, self.augment = bool(amplitude), bool(augment)
        norm = LOG_AMPLITUDE_NORM if self.amplitude else {"image": None, "spectrum": None}
        self.image_head = ProjectionHead(embedding_dim, hidden_dim, norm["image"], name="image_head")
        self.image_head.build((None, image_encoder.z_dim))
        self.spectrum_head = ProjectionHead(embedding_dim, hidden_dim, norm["spectrum"], name="spectrum_head")
        self.spectrum_head.build((None, spectrum_encoder.z_dim))
        self.dihedral = RandomDihedral(name="dihedral")
        self.property_weight = float(property_weight)
        self.property_heads = {}
        if self.property_weight > 0:
            for modality in ("image", "spectrum"):
                head = layers.Dense(len(PROPERTY_NORM), name=f"{modality}_properties")
                head.build((None, self.embedding_dim))
                self.property_heads[modality] = head
        self.log_logit_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(1.0 / init_temperature)),
            name="log_logit_scale",
        )
        self.built = True

    def logit_scale(self):
        return ops.exp(ops.minimum(self.log_logit_scale, math.log(self.max_logit_scale)))

    def embed_image(self, image, log_amplitude=None):
        """Normalised cutouts (B, H, W, bands) [+ their log10 level (B,)] -> (B, D)."""
        return self.image_head(self.image_encoder(image), log_amplitude)

    def embed_spectrum(self, flux, weight, instrument, log_amplitude=None):
        """Normalised spectra and weights (B, L), instrument ids (B,) [+ log10 scale (B,)] -> (B, D)."""
        spectrum = ops.stack([masked_flux(flux, weight), weight], axis=-1)
        instrument = ops.convert_to_tensor(instrument)
        z = self.spectrum_encoder({"spectrum": spectrum, "instrument": instrument})
        return self.spectrum_head(z, log_amplitude)

    def call(self, inputs, training=None):
        image = self.dihedral(inputs["image"], training=training and self.augment)
        outputs = {
            "image": self.embed_image(image, inputs.get("log_image_amplitude")),
            "lowres": self.embed_spectrum(
                inputs["lowres"], inputs["lowres_weight"], inputs["instrument"], inputs.get("log_scale")
            ),
            "logit_scale": self.logit_scale(),
        }
        if "hires" in inputs:
            target_id = (
                ops.ones_like(inputs["instrument"]) * self.spectrum_encoder.target_instrument_id
            )
            outputs["hires"] = self.embed_spectrum(
                inputs["hires"], inputs["hires_weight"], target_id, inputs.get("log_scale")
            )
            if "hires_valid" in inputs:
                outputs["hires_valid"] = ops.cast(inputs["hires_valid"], "float32")
        if self.property_heads and "z_spec" in inputs:
            outputs.update(self.property_outputs(inputs, outputs["image"], outputs["lowres"]))
        return outputs

    def property_outputs(self, inputs, image, lowres) -> dict:
        """Both heads' standardised predictions (B, 2, P), the targets (B, P) and their
        validity (B, P) in {0, 1} (module doc)."""
        z = ops.cast(inputs["z_spec"], "float32")
        valid = [ops.isfinite(z), ops.cast(inputs["has_mass"], "float32") > 0]
        raw = [ops.where(valid[0], z, 0.0), ops.cast(inputs["log_mstar"], "float32")]
        targets = [(value - centre) / spread for value, (centre, spread) in zip(raw, PROPERTY_NORM.values(),
                                                                                   strict=True)]
        predictions = ops.stack([self.property_heads["image"](image), self.property_heads["spectrum"](lowres)],
                                axis=1)
        return {"properties": predictions, "property_targets": ops.stack(targets, axis=-1),
                "property_valid": ops.cast(ops.stack(valid, axis=-1), "float32")}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        scale = y_pred["logit_scale"]
        w_lo, w_hi, w_pair = self.pair_weights
        loss = w_lo * info_nce(y_pred["image"], y_pred["lowres"], scale)
        total_weight = w_lo
        if "hires" in y_pred:
            valid = y_pred.get("hires_valid")
            loss += w_hi * info_nce(y_pred["image"], y_pred["hires"], scale, valid)
            loss += w_pair * info_nce(y_pred["lowres"], y_pred["hires"], scale, valid)
            total_weight += w_hi + w_pair
        loss = loss / total_weight
        if "properties" in y_pred:
            valid = ops.expand_dims(y_pred["property_valid"], 1)
            error = ops.square(y_pred["properties"] - ops.expand_dims(y_pred["property_targets"], 1)) * valid
            loss += self.property_weight * ops.sum(error) / ops.maximum(2.0 * ops.sum(valid), 1.0)
        for extra_loss in self.losses:
            loss = loss + ops.sum(extra_loss)
        return loss

    def image_embedder(self):
        """Functional model (shares weights): image (B, H, W, bands) -> shared embedding, or
        {"image", "log_amplitude" (B,)} with amplitudes."""
        image = keras.Input(self.image_encoder.image_shape, name="image")
        if not self.amplitude:
            return keras.Model(image, self.image_head(self.image_encoder(image)), name="image_embedder")
        amplitude = keras.Input((), name="log_amplitude")
        return keras.Model({"image": image, "log_amplitude": amplitude},
                           self.image_head(self.image_encoder(image), amplitude), name="image_embedder")

    def spectrum_embedder(self):
        """Functional model {"spectrum" (B, L, 2), "instrument" (B,)[, "log_amplitude" (B,)]}
        -> shared embedding (shares weights)."""
        spectrum = keras.Input((None, self.spectrum_encoder.in_channels), name="spectrum")
        instrument = keras.Input((), dtype="int32", name="instrument")
        z = self.spectrum_encoder({"spectrum": spectrum, "instrument": instrument})
        inputs = {"spectrum": spectrum, "instrument": instrument}
        if not self.amplitude:
            return keras.Model(inputs, self.spectrum_head(z), name="spectrum_embedder")
        inputs["log_amplitude"] = keras.Input((), name="log_amplitude")
        return keras.Model(inputs, self.spectrum_head(z, inputs["log_amplitude"]), name="spectrum_embedder")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_encoder": keras.saving.serialize_keras_object(self.image_encoder),
            "spectrum_encoder": keras.saving.serialize_keras_object(self.spectrum_encoder),
            "embedding_dim": self.embedding_dim,
            "hidden_dim": self.hidden_dim,
            "init_temperature": self.init_temperature,
            "max_logit_scale": self.max_logit_scale,
            "pair_weights": list(self.pair_weights),
            "amplitude": self.amplitude,
            "augment": self.augment,
            **({"property_weight": self.property_weight} if self.property_weight else {}),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_nested(config, ("image_encoder", "spectrum_encoder")))
