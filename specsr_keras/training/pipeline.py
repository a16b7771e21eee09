"""`train_run`: the staged specsr training schedule, resumable stage by stage.

Stages (each resumable, each runnable alone once its predecessors finished):
1. `autoencoders`: the spectrum and the image diffusion autoencoders (the encoders are
   trained by their decoders' diffusion losses).
2. `contrastive`: InfoNCE alignment of both encoders + projection heads (image, low-res
   and hi-res spectra of one galaxy are positives).
3. `decoders`: the super-resolver, a cross-modal prior over the hi-res window conditioned
   on the (frozen) shared embeddings, the amplitudes, a catalogue mass and z, each dropped
   at random (`models.superres`); with only the image it is the image-to-spectrum
   generator. Its prior covariance (for the sampler's data-consistency step) is fitted on
   the training windows first, and the frozen embeddings are computed once.
All models are built once and share the encoder objects, so a stage sees its
predecessors' weights; a stage run alone loads them from `<stage model>.weights.h5`.
The run directory holds `config.toml`, `run.json`, per-stage checkpoints, CSV +
TensorBoard logs, `models/*.keras` (EMA weights) and `validation.json`.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import keras
import numpy as np

from specsr_keras.backend.distribution import describe_devices, distribution_scope
from specsr_keras.data.shards import load_shards, read_manifest
from specsr_keras.hardware import describe_host
from specsr_keras.instruments import get_instrument, instrument_with_id
from specsr_keras.models import presets
from specsr_keras.models.preprocessor import STAGE_KEYS, chunked_model_inputs, dummy_inputs
from specsr_keras.models.samplers import parse_sampler_settings
from specsr_keras.reporting import Reporter
from specsr_keras.training.batches import stage_arrays
from specsr_keras.training.config import TrainConfig
from specsr_keras.training.stage import train_stage
from specsr_keras.training.validation import validate_run

# Which models each stage trains, with the config field giving its steps.
STAGE_MODELS = {
    "autoencoders": (("spectrum_autoencoder", "autoencoder_steps"), ("image_autoencoder", "autoencoder_steps")),
    "contrastive": (("contrastive", "contrastive_steps"),),
    "decoders": (("superres", "superres_steps"),),
}


def _parse_sources(spec: str) -> list[tuple[Path, float]]:
    sources = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        path, _, weight = item.partition("@")
        sources.append((Path(path), float(weight) if weight else 1.0))
    if not sources:
        raise ValueError("no training data given (--data)")
    return sources


def load_examples(spec: str, seed: int, reporter: Reporter) -> tuple[dict, dict]:
    """Model inputs + truth from shard directories; DIR@W repeats/subsamples DIR by weight W.

    Returns (inputs, truth) dicts of arrays with the same first axis; inputs["has_image"]
    (bool) is False for real examples without a cutout (their image is zeros).
    """
    inputs, truth = [], []
    rng = np.random.default_rng(seed)
    for path, weight in _parse_sources(spec):
        manifest = read_manifest(path)
        instrument = get_instrument(manifest["instrument"])
        batch = load_shards(path)
        n = len(batch["z_prior"])
        take = rng.choice(n, size=max(1, int(round(weight * n))), replace=weight > 1) if weight != 1 else np.arange(n)
        batch = {k: v[take] for k, v in batch.items()}
        reporter.info(f"data: {path} ({manifest.get('kind', '?')}, {instrument.name}, {len(take)} examples)")
        inputs.append(chunked_model_inputs(batch, instrument, noiseless_hires=manifest.get("kind") == "simulated")
                      | {"has_image": np.asarray(batch.get("has_image", np.ones(len(take), bool)), bool)})
        truth.append({k: v for k, v in batch.items() if k != "image"}
                     | {"instrument_id": np.full(len(take), instrument.instrument_id)}
                     | ({"source_sigma_arcsec": batch["dispersion_sigma_arcsec"]}
                        if "dispersion_sigma_arcsec" in batch else {}))
    common = {k for k in set.intersection(*(set(t) for t in truth))
              if len({t[k].shape[1:] for t in truth}) == 1}  # drop grids that differ
    merged_inputs = {k: np.concatenate([p[k] for p in inputs]) for k in inputs[0]}
    merged_truth = {k: np.concatenate([t[k] for t in truth]) for k in common}
    return merged_inputs, merged_truth


def _split(inputs: dict, truth: dict, fraction: float, seed: int):
    n = len(inputs["scale"])
    order = np.random.default_rng([seed, 99]).permutation(n)
    n_val = int(round(n * fraction))
    val, train = order[:n_val], order[n_val:]
    pick = lambda d, idx: {k: v[idx] for k, v in d.items()}  # noqa: E731
    return pick(inputs, train), pick(inputs, val), pick(truth, val)


class SpecsrModels:
    """Every specsr model of one preset, sharing the two encoders and the projection heads."""

    def __init__(self, preset: str, seed: int, shared_space: dict | None = None, wavelength_channel: bool = True):
        """shared_space: the aligner's "amplitude" / "augment" settings (default: the preset's);
        wavelength_channel: whether the super-resolver's denoiser reads it (False to load a run
        trained before it, see `wavelength_channel_of`)."""
        keras.utils.set_random_seed(seed)
        self.preset = preset
        spectrum_encoder = presets.build_spectrum_encoder(preset)
        image_encoder = presets.build_image_encoder(preset)
        self.spectrum_autoencoder = presets.build_spectrum_autoencoder(preset, encoder=spectrum_encoder, seed=seed)
        self.image_autoencoder = presets.build_image_autoencoder(preset, encoder=image_encoder, seed=seed + 1)
        overrides = {"shared_space": shared_space} if shared_space else {}
        self.contrastive = presets.build_aligner(preset, image_encoder=image_encoder, spectrum_encoder=spectrum_encoder,
                                                 **overrides)
        self.superres = presets.build_superresolver(
            preset, spectrum_embedder=self.contrastive.spectrum_embedder(),
            image_embedder=self.contrastive.image_embedder(), seed=seed + 2, wavelength_channel=wavelength_channel)

    def get(self, name: str) -> keras.Model:
        return getattr(self, name)

    def freeze_shared_space(self) -> None:
        """Keep the aligned embedding fixed while the decoders learn to use it."""
        self.superres.spectrum_embedder.trainable = False
        self.superres.image_embedder.trainable = False


def train_run(config: TrainConfig, run_dir: str | Path, *, resume: bool = True,
              reporter: Reporter | None = None) -> dict:
    """Run the configured stages in `run_dir`; returns the run summary (also `run.json`)."""
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    if (run_dir / "checkpoints").exists() and not resume:
        raise FileExistsError(f"{run_dir}: holds a run already; resume it or choose another directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(config.to_toml())
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    inputs, truth = load_examples(config.data, config.seed, reporter)
    if config.val_data:
        train_inputs = inputs
        val_inputs, val_truth = load_examples(config.val_data, config.seed + 1, reporter)
    else:
        train_inputs, val_inputs, val_truth = _split(inputs, truth, config.val_fraction, config.seed)
    reporter.info(f"training on {describe_devices()}: {len(train_inputs['scale'])} train, "
                  f"{len(val_inputs['scale'])} validation examples")

    summary = {"config": config.to_toml(), "preset": config.model_preset, "stages": {},
               "backend": keras.backend.backend(), "devices": describe_devices(), "host": describe_host()}
    # The input grid of predictors loaded from this run (SuperResolutionPredictor.from_path).
    summary["instrument"] = read_manifest(_parse_sources(config.data)[0][0])["instrument"]
    started = time.perf_counter()
    with distribution_scope(config.devices or None):
        source = Path(config.init_from) if config.init_from else None
        inherited = shared_space_of(source) if source and "contrastive" in config.init_stage_list() else None
        # A run's own finished super-resolver, or the one it starts from, fixes the denoiser's inputs.
        wavelength = wavelength_channel_of(run_dir) and (
            wavelength_channel_of(source) if source and "decoders" in config.init_stage_list() else True)
        models = SpecsrModels(config.model_preset, config.seed, inherited, wavelength)
        if config.init_from:
            load_run_weights(models, Path(config.init_from), reporter, config.init_stage_list())
        for stage in ("autoencoders", "contrastive", "decoders"):
            if stage == "decoders":
                models.freeze_shared_space()
            if stage not in config.stage_list():
                _load_stage_weights(models, stage, run_dir, reporter)
                continue
            for name, steps_field in STAGE_MODELS[stage]:
                keys = STAGE_KEYS[name]
                arrays, val_arrays = stage_arrays(train_inputs, keys), stage_arrays(val_inputs, keys)
                if name == "superres":
                    arrays, val_arrays = prepare_superres(models.superres, arrays, val_arrays, reporter)
                    keys = tuple(arrays)
                if not len(arrays[keys[0]]):
                    reporter.info(f"{name}: no training example has an image; stage skipped")
                    continue
                summary["stages"][name] = train_stage(
                    models.get(name),
                    arrays,
                    stage=name,
                    steps=getattr(config, steps_field),
                    config=config,
                    run_dir=run_dir,
                    reporter=reporter,
                    val_arrays=val_arrays if len(val_arrays[keys[0]]) else None,
                )
        if config.sampler:
            models.superres.sampler = models.superres.sampler.replace(**parse_sampler_settings(config.sampler))
        _save_models(models, run_dir)
        validation = validate_run(models, val_inputs, val_truth, config, reporter)
    summary["validation"] = validation
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["headline"] = validation.get("headline", "")
    (run_dir / "validation.json").write_text(json.dumps(validation, indent=1))
    (run_dir / "run.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _load_stage_weights(models: SpecsrModels, stage: str, run_dir: Path, reporter: Reporter) -> None:
    """Weights of a stage that this invocation skips, if an earlier one trained them: the
    stage's `<name>.weights.h5`, else the run's final `models/<name>.keras` (a shipped run)."""
    for name, _ in STAGE_MODELS[stage]:
        for path in (run_dir / f"{name}.weights.h5", run_dir / "models" / f"{name}.keras"):
            if path.exists():
                models.get(name)(dummy_inputs(STAGE_KEYS[name]))  # build before loading
                models.get(name).load_weights(path)
                reporter.info(f"{name}: weights from {path}")
                break


def _saved_model_config(run_dir: Path, name: str) -> dict | None:
    """The constructor config of a run's final `models/<name>.keras` (read from the archive,
    nothing built), or None without one."""
    file = run_dir / "models" / f"{name}.keras"
    if not file.is_file():
        return None
    with zipfile.ZipFile(file) as archive:
        return json.loads(archive.read("config.json"))["config"]


def shared_space_of(run_dir: Path) -> dict | None:
    """The aligner settings ("amplitude", "augment", "property_weight") of a run's
    `models/contrastive.keras` (False / 0 where its config predates them), or None without one:
    a run initialised from another run's aligner must build the same aligner to load it."""
    config = _saved_model_config(run_dir, "contrastive")
    if config is None:
        return None
    return {**{key: bool(config.get(key, False)) for key in ("amplitude", "augment")},
            "property_weight": float(config.get("property_weight", 0.0))}


def wavelength_channel_of(run_dir: Path) -> bool:
    """Whether the super-resolver of a run's `models/superres.keras` reads the window's
    wavelength (a third denoiser channel; True without one): a run initialised from another
    run's super-resolver must build the same denoiser to load it."""
    config = _saved_model_config(run_dir, "superres")
    return config is None or config["denoiser"]["config"]["extra_channels"] == 3


def load_run_weights(models: SpecsrModels, source: Path, reporter: Reporter, stages=tuple(STAGE_MODELS)) -> None:
    """The final weights of `stages` from the run `source` (e.g. `--init-from`, a shipped run)."""
    for stage in stages:
        _load_stage_weights(models, stage, source, reporter)


# Examples per call when the frozen embedders embed a stage's training arrays.
EMBED_BATCH = 256


def frozen_embeddings(superres, arrays: dict) -> dict:
    """`arrays` with "lowres"/"lowres_weight" replaced by "spectrum_embedding" and "image" by
    "image_embedding", computed once by the super-resolver's frozen embedders."""
    out = {k: v for k, v in arrays.items() if k not in ("lowres", "lowres_weight", "image")}
    n = len(arrays["z_place"])
    spectrum, image = [], []
    for i in range(0, n, EMBED_BATCH):
        part = {k: arrays[k][i : i + EMBED_BATCH]
                for k in ("lowres", "lowres_weight", "instrument", "image", "log_scale", "log_image_amplitude")}
        spectrum.append(keras.ops.convert_to_numpy(superres.embed_spectrum(part)))
        image.append(keras.ops.convert_to_numpy(superres.embed_image(part)))
    out["spectrum_embedding"] = np.concatenate(spectrum) if n else np.zeros((0, superres.embedding_dim), np.float32)
    out["image_embedding"] = np.concatenate(image) if n else np.zeros((0, superres.embedding_dim), np.float32)
    return out


def prepare_superres(superres, arrays: dict, val_arrays: dict, reporter: Reporter) -> tuple[dict, dict]:
    """Fit the super-resolver's prior covariance and trusted amplitude ranges on the training
    set and embed both sets."""
    own = superres.fit_prior_covariance(arrays["hires"], arrays["hires_weight"], arrays["instrument"])
    ranges = superres.fit_amplitude_ranges(arrays)
    trusted = ", ".join(f"{name} {low:.2f}..{high:.2f}" for name, (low, high) in ranges.items())
    covariances = ", ".join(f"{instrument_with_id(index).name} {count}" for index, count in own.items()) or "none"
    reporter.info(f"superres: prior covariance from {len(arrays['hires'])} windows (own covariance, windows: "
                  f"{covariances}; the other instruments share the pooled one); trusted log10 amplitudes "
                  f"{trusted}; embedding the inputs")
    return frozen_embeddings(superres, arrays), frozen_embeddings(superres, val_arrays)


def _save_models(models: SpecsrModels, run_dir: Path) -> None:
    """The final (EMA) models as `.keras` files, for export, inference and fine-tuning."""
    out = run_dir / "models"
    out.mkdir(exist_ok=True)
    for name in ("spectrum_autoencoder", "image_autoencoder", "contrastive", "superres"):
        save_inference_model(models.get(name), out / f"{name}.keras")


def save_inference_model(model: keras.Model, path: Path) -> None:
    """Save `model` without its optimizer state (a quarter of the size; loads without
    optimizer-slot warnings): save, reload uncompiled, save again."""
    model.save(path)
    keras.saving.load_model(path, compile=False).save(path)
