"""Building blocks, backbones, preprocessing, FLOP counting and EMA of specsr models."""

import keras
import numpy as np
import pytest
from keras import layers, ops

from specsr_keras.models.encoders import ImageEncoder
from specsr_keras.models.flops import count_flops
from specsr_keras.models.layers import (
    Downsample,
    GroupNormalization,
    PositionChannel,
    ResidualBlock,
    SelfAttention,
    SinusoidalEmbedding,
    Upsample,
)
from specsr_keras.models.preprocess import (
    denormalise_spectrum,
    normalise_image,
    normalise_spectrum,
    prepare_spectrum,
    spectrum_scale,
    spectrum_weight,
)
from specsr_keras.models.presets import build_spectrum_encoder
from specsr_keras.models.unet1d import UNet1D
from specsr_keras.models.unet2d import UNet2D

pytestmark = pytest.mark.keras

RNG = np.random.default_rng(0)


def normal(*shape):
    return RNG.standard_normal(shape).astype("float32")


def numpy(x):
    return ops.convert_to_numpy(x)


def test_sinusoidal_embedding_is_sin0_cos1_at_t0_and_separates_nearby_times():
    emb = numpy(SinusoidalEmbedding(16)(np.array([0.0, 0.5, 0.501], "float32")))
    assert emb.shape == (3, 16)
    assert np.abs(emb[0, :8]).max() == 0.0 and np.abs(emb[0, 8:] - 1.0).max() == 0.0
    assert np.abs(emb[1] - emb[2]).max() > 0.1  # t scaled by 1000: 1e-3 apart is 1 unit


@pytest.mark.parametrize("shape", [(3, 40, 24), (2, 6, 10, 12)])
def test_group_normalization_equals_keras_layer_and_folds_film(shape):
    x = 5.0 + 3.0 * normal(*shape)  # an offset mean, as after a convolution
    reference, fast = layers.GroupNormalization(4), GroupNormalization(4)
    reference.build(shape), fast.build(shape)
    gamma, beta = normal(shape[-1]), normal(shape[-1])
    for layer in (reference, fast):
        layer.set_weights([gamma, beta])
    expected = numpy(reference(x))
    np.testing.assert_allclose(numpy(fast(x)), expected, atol=2e-5)
    scale, shift = normal(shape[0], shape[-1]), normal(shape[0], shape[-1])
    expand = (slice(None),) + (None,) * (len(shape) - 2)
    np.testing.assert_allclose(numpy(fast(x, scale, shift)),
                               expected * (1.0 + scale[expand]) + shift[expand], atol=5e-5)
    with pytest.raises(ValueError, match="last axis"):
        GroupNormalization(4, axis=1).build(shape)


def test_group_normalization_keeps_float32_statistics_under_mixed_bfloat16():
    x = 100.0 + normal(2, 64, 16)  # mean >> spread: bfloat16 statistics would lose it
    layer = GroupNormalization(4, dtype="mixed_bfloat16")
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    reference = layers.GroupNormalization(4)
    np.testing.assert_allclose(numpy(ops.cast(out, "float32")), numpy(reference(x)), atol=0.05)


def test_residual_block_maps_channels_and_film_makes_it_depend_on_the_condition():
    x = normal(2, 8, 12)
    block = ResidualBlock(16, rank=1, groups=4)
    a = numpy(block(x, normal(2, 10)))
    b = numpy(block(x, normal(2, 10)))
    assert a.shape == (2, 8, 16)
    assert np.abs(a - b).max() > 1e-3
    plain = ResidualBlock(12, rank=2, use_film=False)
    image = keras.KerasTensor((2, 8, 8, 12))
    assert tuple(plain(image).shape) == (2, 8, 8, 12) and plain.skip is None


def test_self_attention_is_equivariant_to_permuting_positions():
    x = normal(2, 10, 8)
    attention = SelfAttention(num_heads=2, groups=4)
    order = RNG.permutation(10)
    out, out_permuted = numpy(attention(x)), numpy(attention(x[:, order]))
    assert np.abs(out[:, order] - out_permuted).max() < 1e-4
    assert np.abs(out - x).max() > 1e-3  # it does something
    assert numpy(SelfAttention(2, 4)(normal(1, 4, 4, 8))).shape == (1, 4, 4, 8)


def test_down_and_upsampling_halve_and_double_every_spatial_axis():
    assert numpy(Downsample(1)(normal(2, 20, 6))).shape == (2, 10, 6)
    assert numpy(Upsample(1)(normal(2, 10, 6))).shape == (2, 20, 6)
    assert numpy(Downsample(2)(normal(1, 8, 8, 3))).shape == (1, 4, 4, 3)
    assert numpy(Upsample(2)(normal(1, 4, 4, 3))).shape == (1, 8, 8, 3)


def test_position_channel_runs_from_0_to_1_for_any_length():
    for length in (5, 320):
        out = numpy(PositionChannel()(np.zeros((2, length, 3), "float32")))
        assert out.shape == (2, length, 4)
        np.testing.assert_allclose(out[1, :, 3], np.linspace(0.0, 1.0, length), atol=1e-6)


def test_every_layer_config_round_trips():
    for layer in [
        SinusoidalEmbedding(8, scale=10.0),
        ResidualBlock(8, rank=2, dropout=0.1),
        SelfAttention(4, 2),
        Downsample(2, 5),
        Upsample(1),
        PositionChannel(),
    ]:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


# Rebuilding a whole network from its config with identical outputs is checked by the
# `.keras` round trips in test_models.py; here only the configs and shapes (no forward
# pass: under JAX each new op shape is an XLA compile).
def test_unets_rebuild_from_config_and_predict_one_value_per_input_value():
    unet = UNet1D(32, extra_channels=2, condition_dim=8, widths=(8, 8), embedding_dim=8)
    assert tuple(unet.output.shape) == (None, 32, 1)
    clone = UNet1D.from_config(unet.get_config())
    assert clone.get_config() == unet.get_config()
    assert clone.count_params() == unet.count_params()
    image_unet = UNet2D((16, 16), channels=4, condition_dim=8, widths=(8, 8), embedding_dim=8)
    assert tuple(image_unet.output.shape) == (None, 16, 16, 4)
    assert UNet2D.from_config(image_unet.get_config()).count_params() == image_unet.count_params()
    with pytest.raises(ValueError, match="divisible"):
        UNet1D(length=30, widths=(8, 8, 8), embedding_dim=8)


def test_spectrum_encoder_embeds_both_grids_and_depends_on_the_instrument():
    encoder = build_spectrum_encoder("micro")
    lowres = {"spectrum": normal(4, 512, 2), "instrument": np.array([0, 1, 2, 3], "int32")}
    target = encoder.target_instrument_id
    hires = {"spectrum": normal(4, 320, 2), "instrument": np.full(4, target, "int32")}
    assert numpy(encoder(lowres)).shape == (4, 16)
    assert numpy(encoder(hires)).shape == (4, 16)
    assert target == encoder.num_instruments - 1 == 6
    other = dict(lowres, instrument=np.array([3, 2, 1, 0], "int32"))
    assert np.abs(numpy(encoder(lowres)) - numpy(encoder(other))).max() > 1e-4
    image_encoder = ImageEncoder(image_shape=(16, 16, 4), widths=(8, 8), z_dim=7)
    assert tuple(image_encoder.output.shape) == (None, 7)


def test_spectrum_scale_ignores_masked_pixels_and_is_the_covered_quantile():
    flux = normal(3, 200) + 5.0
    ivar = np.full((3, 200), 4.0, "float32")
    ivar[:, :50] = 0.0
    flux[:, :50] = 1e6  # masked garbage
    flux[2, 60] = np.nan
    ivar[2, 60] = 0.0
    scale = numpy(spectrum_scale(flux, ivar, quantile=0.98))
    for i in range(3):
        covered = np.sort(flux[i][ivar[i] > 0])
        expected = covered[int(np.floor(0.98 * (covered.size - 1)))]
        assert scale[i] == pytest.approx(expected, rel=1e-6)
    assert numpy(spectrum_scale(flux, np.zeros_like(ivar)))[0] == 1.0  # nothing covered
    noisy = numpy(spectrum_scale(-np.ones((1, 10), "float32"), np.full((1, 10), 0.25, "float32")))
    assert noisy[0] == pytest.approx(2.0)  # floored at the median noise sigma


def test_spectra_in_cgs_units_normalise_like_the_same_spectra_in_1e17_units():
    """A catalogue in erg/s/cm²/Å (1e-17 of specsr's unit) must reach the model as the same
    normalised spectrum (its amplitude alone differs, and is flagged by the model)."""
    flux = normal(2, 200) * 0.05 + 0.2
    ivar = np.full((2, 200), 400.0, "float32")
    cgs_flux, cgs_ivar = flux * np.float32(1e-17), ivar * np.float32(1e34)
    scale, cgs_scale = numpy(spectrum_scale(flux, ivar)), numpy(spectrum_scale(cgs_flux, cgs_ivar))
    np.testing.assert_allclose(cgs_scale, scale * 1e-17, rtol=1e-5)
    for a, b in zip(normalise_spectrum(flux, ivar, scale), normalise_spectrum(cgs_flux, cgs_ivar, cgs_scale),
                    strict=True):
        np.testing.assert_allclose(numpy(b), numpy(a), rtol=1e-4)


def test_normalisation_round_trips_and_weights_vanish_where_masked():
    flux, ivar = normal(2, 50) * 3.0, np.full((2, 50), 4.0, "float32")
    ivar[0, :5] = 0.0
    scale = np.array([2.0, 0.5], "float32")
    flux_n, ivar_n = (numpy(a) for a in normalise_spectrum(flux, ivar, scale))
    assert np.all(flux_n[0, :5] == 0.0)
    np.testing.assert_allclose(
        numpy(denormalise_spectrum(flux_n, scale))[:, 5:], flux[:, 5:], rtol=1e-6
    )
    np.testing.assert_allclose(ivar_n[1], 4.0 * 0.25)
    _, weight = prepare_spectrum(flux, ivar, scale)
    assert np.all(numpy(weight)[0, :5] == 0.0)
    # sigma_n = 0.01 -> weight 100/101; sigma_n = 0.1 -> 1/2
    np.testing.assert_allclose(
        numpy(spectrum_weight(np.array([1e4, 100.0]))), [100 / 101, 0.5], rtol=1e-6
    )
    samples = normal(2, 3, 50)
    assert np.allclose(numpy(denormalise_spectrum(samples, scale))[1], samples[1] * 0.5)


def test_normalise_image_puts_the_bright_quantile_near_one():
    image = np.abs(normal(2, 16, 16, 4)) * np.array([1.0, 100.0], "float32")[:, None, None, None]
    out = numpy(normalise_image(image))
    for i in range(2):
        assert np.quantile(out[i], 0.99) == pytest.approx(1.0, abs=0.02)


def _dense_conv_model():
    x = keras.Input((32, 3))
    h = layers.Conv1D(8, 5, padding="same")(x)
    h = layers.Dense(4)(h)
    return keras.Model(x, h)


def test_count_flops_matches_the_hand_count():
    # conv: 32 positions x 8 filters x (5 x 3) MACs; dense: 32 x 4 x 8 MACs
    assert count_flops(_dense_conv_model(), (32, 3)) == 2 * (32 * 8 * 15 + 32 * 4 * 8)
    x = keras.Input((10, 8))
    attention = layers.MultiHeadAttention(2, key_dim=4)
    model = keras.Model(x, attention(x, x))
    # q, k, v projections 3 x 10 x 8 x 8; scores + weighted sum 2 x 2 heads x 10 x 10 x 4;
    # output projection 10 x 8 x 8
    assert count_flops(model, (10, 8)) == 2 * (3 * 640 + 2 * 2 * 100 * 4 + 640)
    assert isinstance(attention.call, type(attention.__init__))  # patches removed
