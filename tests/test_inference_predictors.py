"""The baseline predictor and how --model values resolve to predictors."""

import numpy as np
import pytest

from specsr_keras.inference.predictors import (
    BaselinePredictor,
    cached_predictor,
    load_predictor,
    output_columns,
)
from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.physics import FWHM_PER_SIGMA, NII_DOUBLET_RATIO
from tests.synthetic_lines import line_spectrum

EUCLID = get_instrument("euclid_nisp_red")
Z_TRUE = np.array([0.95, 1.05, 1.15, 1.25, 1.35, 1.45])
HA_FLUX, N2, CONTINUUM = 40.0, -0.5, 0.5


def _batch(z_prior, noise=0.02, seed=0):
    """Bright Hα + [NII] on the Euclid grid, LSF of the instrument's reference source size."""
    sigma_lsf = EUCLID.lsf_sigma(15000.0, EUCLID.resolving_power_source_sigma)
    flux = np.stack([
        line_spectrum(EUCLID.bin_edges, z, HA_FLUX, N2, 80.0,
                      6564.61 * (1 + z) / (FWHM_PER_SIGMA * sigma_lsf), continuum=CONTINUUM)
        for z in Z_TRUE])
    flux += noise * np.random.default_rng(seed).standard_normal(flux.shape)
    n = len(Z_TRUE)
    return {"lowres_flux": flux.astype(np.float32),
            "lowres_ivar": np.full(flux.shape, noise**-2, np.float32),
            "lowres_mask": np.zeros(flux.shape, bool), "z_prior": np.asarray(z_prior, float),
            "instrument_id": np.full(n, EUCLID.instrument_id),
            "source_sigma_arcsec": np.full(n, np.nan)}


@pytest.fixture(scope="module")
def predictions():
    z_prior = Z_TRUE + 0.004
    z_prior[-2:] = np.nan  # the last two rows need the redshift scan
    return BaselinePredictor().predict(_batch(z_prior), samples=4, seed=1, save_spectra=True)


def test_baseline_recovers_bright_lines(predictions):
    np.testing.assert_allclose(predictions["z_p50"], Z_TRUE, atol=5e-4)
    np.testing.assert_allclose(predictions["ha_flux_p50"], HA_FLUX, rtol=0.05)
    np.testing.assert_allclose(predictions["n2_p50"], N2, atol=0.08)
    for q in ("ha_flux", "nii_6585_flux", "n2", "z"):
        assert np.all(predictions[f"{q}_p16"] < predictions[f"{q}_p50"])
        assert np.all(predictions[f"{q}_p50"] < predictions[f"{q}_p84"])
    assert set(predictions) == set(output_columns(BaselinePredictor(), save_spectra=True))


def test_baseline_flags_redshifts_found_without_a_prior(predictions):
    flags = predictions["flags"]
    assert np.all(flags[:-2] == 0)
    assert np.all(flags[-2:] == QualityFlag.Z_FROM_SPECTRUM)
    assert np.all(np.isfinite(predictions["fit_chi2_dof"]))


def test_rows_whose_ivar_understates_the_noise_are_flagged():
    """The same spectra with their errors stated a third too small in the last three rows:
    those are flagged NOISE_UNDERSTATED (their intervals trust the ivar), the others are not."""
    batch = _batch(Z_TRUE + 0.004)
    batch["lowres_ivar"][3:] *= 1.5**2
    out = BaselinePredictor().predict(batch, samples=1, seed=0)
    understated = (out["flags"] & QualityFlag.NOISE_UNDERSTATED) > 0
    assert understated.tolist() == [False] * 3 + [True] * 3
    np.testing.assert_allclose(out["noise_scale"], [1.0] * 3 + [1.5] * 3, rtol=0.2)


def test_saved_spectrum_integrates_to_the_fitted_line_fluxes(predictions):
    """Line flux = sum(flux - continuum) (1+z) x 1 Å on TARGET_GRID (docs/contracts.md)."""
    assert predictions["sr_mean"].shape == (len(Z_TRUE), TARGET_GRID.n_pixels)
    continuum = np.median(predictions["sr_mean"][:, :40], axis=1)
    integral = (predictions["sr_mean"] - continuum[:, None]).sum(axis=1) * (1 + Z_TRUE)
    lines = predictions["ha_flux_p50"] + predictions["nii_6585_flux_p50"] * (
        1 + 1 / NII_DOUBLET_RATIO)
    np.testing.assert_allclose(integral, lines, rtol=0.02)
    assert np.all(predictions["sr_std"] >= 0)


def test_failed_fits_are_nan_and_flagged():
    batch = _batch(np.full(len(Z_TRUE), np.nan), noise=1.0)
    batch["lowres_flux"][:] = np.random.default_rng(3).standard_normal(batch["lowres_flux"].shape)
    out = BaselinePredictor().predict(batch, samples=1, seed=0, save_spectra=False)
    failed = (out["flags"] & QualityFlag.FIT_FAILED) > 0
    assert np.all(np.isnan(out["ha_flux_p50"][failed]))
    assert np.all(out["flags"] & (QualityFlag.Z_SCAN_FAILED | QualityFlag.LOW_HA_SNR
                                  | QualityFlag.FIT_FAILED))


def test_model_names_resolve_to_predictors(tmp_path):
    assert load_predictor("baseline").instrument == "euclid_nisp_red"
    assert load_predictor("baseline:g141").instrument == "hst_g141"
    assert cached_predictor("baseline") is cached_predictor("baseline")
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="signatures.json"):
        load_predictor(str(tmp_path))
    with pytest.raises(ValueError, match="unknown model"):
        load_predictor("no-such-model")


@pytest.mark.keras
@pytest.mark.parametrize("kind", ["ddim", "dpm++2m"])
def test_compiled_predictor_equals_the_eager_generate_and_builds_columns(kind):
    from specsr_keras.inference.superres_predictor import SuperResolutionPredictor
    from specsr_keras.models.presets import build_superresolver
    from specsr_keras.models.samplers import Sampler
    from specsr_keras.simulate import simulate_galaxies

    model = build_superresolver("micro", seed=0)
    galaxies = simulate_galaxies(3, "euclid", seed=1)
    batch = {k: galaxies[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior")}
    batch["instrument_id"] = np.full(3, EUCLID.instrument_id)
    sampler = Sampler(kind, steps=3, samples=2)
    predictor = SuperResolutionPredictor(model, "euclid", "micro", sampler)
    compiled, _ = predictor.generate(batch, seed=7)
    raw, _ = predictor.raw_inputs(batch)
    eager = model.generate(raw, 2, sampler, noise=model.noise(3, 2, sampler, 7), preprocessor=predictor.preprocessor)
    assert np.abs(compiled["samples"] - np.asarray(eager["samples"])).max() < 1e-4
    other, _ = predictor.generate(batch, seed=8)
    assert np.abs(other["samples"] - compiled["samples"]).max() > 1e-3  # same function, new noise
    columns = predictor.predict(batch, seed=7)
    assert set(columns) == set(output_columns(predictor, save_spectra=False))
    fitted = np.where(compiled["ok"] > 0, compiled["n2"], np.nan)  # medians over the samples whose fit worked
    with np.errstate(all="ignore"):
        expected = np.nanmedian(fitted, axis=1)
    np.testing.assert_allclose(columns["n2_p50"], expected, atol=1e-5)


@pytest.mark.keras
def test_a_predictor_samples_with_its_instrument_s_steps():
    """A sampler with G141's own step count runs G141 spectra as that many steps would."""
    from specsr_keras.inference.superres_predictor import SuperResolutionPredictor
    from specsr_keras.models.presets import build_superresolver
    from specsr_keras.models.samplers import Sampler
    from specsr_keras.simulate import simulate_galaxies

    model = build_superresolver("micro", seed=0)
    galaxies = simulate_galaxies(2, "g141", seed=3)
    batch = {k: galaxies[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior")}
    batch["instrument_id"] = np.full(2, get_instrument("g141").instrument_id)

    def samples(sampler):
        predictor = SuperResolutionPredictor(model, "g141", "micro", sampler)
        return predictor.generate(batch, seed=5)[0]["samples"]

    own = samples(Sampler(steps=2, samples=2, eta=1.0, instrument_steps={"g141": 3, "euclid": 4}))
    np.testing.assert_allclose(own, samples(Sampler(steps=3, samples=2, eta=1.0)), atol=1e-5)
    assert np.abs(own - samples(Sampler(steps=2, samples=2, eta=1.0))).max() > 1e-3


@pytest.mark.keras
def test_every_subset_of_modalities_generates():
    """Spectrum (amortised or not), image, catalogue mass: every combination runs, finite."""
    import itertools

    from specsr_keras.inference.superres_predictor import SuperResolutionPredictor
    from specsr_keras.models.presets import build_superresolver
    from specsr_keras.models.samplers import Sampler
    from specsr_keras.simulate import simulate_galaxies

    model = build_superresolver("micro", seed=0)
    galaxies = simulate_galaxies(2, "euclid", seed=2)
    base = {k: galaxies[k] for k in ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior")}
    base["instrument_id"] = np.full(2, EUCLID.instrument_id)
    optional = {"image": {"image": galaxies["image"], "has_image": np.ones(2, bool)},
                "mass": {"log_mstar_catalog": galaxies["log_mstar_catalog"]}}
    for amortised, image, mass in itertools.product((False, True), repeat=3):
        batch = dict(base, **(optional["image"] if image else {}), **(optional["mass"] if mass else {}))
        predictor = SuperResolutionPredictor(model, "euclid", "micro", Sampler(steps=2, samples=2, amortised=amortised))
        generated, _ = predictor.generate(batch, seed=0)
        assert np.isfinite(generated["samples"]).all(), (amortised, image, mass)
    images = model.generate_from_image(galaxies["image"], galaxies["z_prior"].astype(np.float32), None, 2,
                                       Sampler(steps=2, samples=2), seed=0)  # the image alone
    assert np.isfinite(np.asarray(images["samples"])).all()


@pytest.mark.keras
def test_image_generator_reads_the_catalogue_mass_and_treats_nan_and_minus_one_as_none():
    from specsr_keras.inference.generator_predictor import ImageSpectrumPredictor
    from specsr_keras.models.presets import build_superresolver
    from specsr_keras.models.samplers import Sampler
    from specsr_keras.simulate import simulate_galaxies

    model = build_superresolver("micro", seed=0)
    model.sampler = Sampler(steps=2, samples=2)
    galaxies = simulate_galaxies(3, "euclid", seed=4)
    predictor = ImageSpectrumPredictor(model, "micro")
    base = {"image": galaxies["image"], "z_prior": galaxies["z_prior"]}

    def mean_spectrum(**mass):
        return predictor.predict({**base, **mass}, seed=1, save_spectra=True)["sr_mean"]

    from specsr_keras.instruments import get_instrument
    from specsr_keras.spectral.window import placement_redshift

    z_place = placement_redshift(galaxies["z_prior"], get_instrument("euclid"))  # as the predictor places
    no_mass = model.generate_from_image(galaxies["image"], z_place, None, 2, model.sampler,  # the mass-free path
                                        noise=model.noise(3, 2, model.sampler.replace(data_consistency=False), 1))
    without = np.asarray(no_mass["samples"]).mean(axis=1)
    assert np.isfinite(without).all()
    np.testing.assert_allclose(mean_spectrum(log_mstar_catalog=np.full(3, np.nan)), without, atol=1e-5)
    np.testing.assert_allclose(mean_spectrum(log_mstar_catalog=np.full(3, -1.0)), without, atol=1e-5)
    assert np.abs(mean_spectrum(log_mstar_catalog=np.full(3, 11.5)) - without).max() > 1e-4
