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

Inputs (dict): "image" (B, 64, 64, 4); "lowres", "lowres_weight" (B, 512) and
"instrument" (B,) int; optional "hires", "hires_weight" (B, 320) and "hires_valid"
(B,) in {0, 1} (rows without a hi-res spectrum drop out of the hi-res terms).
`call` returns {"image", "lowres"[, "hires", "hires_valid"], "logit_scale"}.
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


def retrieval_top_k(emb_a, emb_b, k=1):
    """Fraction of rows i whose partner emb_b[i] is among the k most similar to emb_a[i]."""
    similarity = ops.matmul(emb_a, ops.transpose(emb_b))
    own = ops.expand_dims(ops.diagonal(similarity), -1)
    rank = ops.sum(ops.cast(similarity > own, "int32"), axis=-1)
    return ops.mean(ops.cast(rank < k, "float32"))


@register
class ProjectionHead(layers.Layer):
    """Dense -> GELU -> Dense -> L2 normalise: z (B, Z) -> unit vector (B, embedding_dim)."""

    def __init__(self, embedding_dim=32, hidden_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.hidden = layers.Dense(self.hidden_dim, activation="gelu", name="hidden")
        self.out = layers.Dense(self.embedding_dim, name="out")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.out.build((input_shape[0], self.hidden_dim))

    def call(self, z):
        return l2_normalise(self.out(self.hidden(z)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update(embedding_dim=self.embedding_dim, hidden_dim=self.hidden_dim)
        return config


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
        self.image_head = ProjectionHead(embedding_dim, hidden_dim, name="image_head")
        self.image_head.build((None, image_encoder.z_dim))
        self.spectrum_head = ProjectionHead(embedding_dim, hidden_dim, name="spectrum_head")
        self.spectrum_head.build((None, spectrum_encoder.z_dim))
        self.log_logit_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(1.0 / init_temperature)),
            name="log_logit_scale",
        )
        self.built = True

    def logit_scale(self):
        return ops.exp(ops.minimum(self.log_logit_scale, math.log(self.max_logit_scale)))

    def embed_image(self, image):
        return self.image_head(self.image_encoder(image))

    def embed_spectrum(self, flux, weight, instrument):
        spectrum = ops.stack([masked_flux(flux, weight), weight], axis=-1)
        instrument = ops.convert_to_tensor(instrument)
        z = self.spectrum_encoder({"spectrum": spectrum, "instrument": instrument})
        return self.spectrum_head(z)

    def call(self, inputs, training=None):
        outputs = {
            "image": self.embed_image(inputs["image"]),
            "lowres": self.embed_spectrum(
                inputs["lowres"], inputs["lowres_weight"], inputs["instrument"]
            ),
            "logit_scale": self.logit_scale(),
        }
        if "hires" in inputs:
            target_id = (
                ops.ones_like(inputs["instrument"]) * self.spectrum_encoder.target_instrument_id
            )
            outputs["hires"] = self.embed_spectrum(
                inputs["hires"], inputs["hires_weight"], target_id
            )
            if "hires_valid" in inputs:
                outputs["hires_valid"] = ops.cast(inputs["hires_valid"], "float32")
        return outputs

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
        for extra_loss in self.losses:
            loss = loss + ops.sum(extra_loss)
        return loss

    def image_embedder(self):
        """Functional model image (B, H, W, bands) -> shared embedding (shares weights)."""
        image = keras.Input(self.image_encoder.image_shape, name="image")
        return keras.Model(image, self.image_head(self.image_encoder(image)), name="image_embedder")

    def spectrum_embedder(self):
        """Functional model {"spectrum" (B, L, 2), "instrument" (B,)} -> shared embedding."""
        spectrum = keras.Input((None, self.spectrum_encoder.in_channels), name="spectrum")
        instrument = keras.Input((), dtype="int32", name="instrument")
        z = self.spectrum_encoder({"spectrum": spectrum, "instrument": instrument})
        inputs = {"spectrum": spectrum, "instrument": instrument}
        return keras.Model(inputs, self.spectrum_head(z), name="spectrum_embedder")

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
        }

    @classmethod
    def from_config(cls, config):
        return cls(**deserialize_nested(config, ("image_encoder", "spectrum_encoder")))
