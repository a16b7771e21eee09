"""`SuperResolver`: a cross-modal diffusion prior over the hi-res window, sampled as a posterior.

The model is a 1D U-Net denoiser of the rest-frame hi-res window x0 (TARGET_GRID, 320 bins,
in units of the object's low-res scale / `target_scale`), conditioned on whatever a
catalogue has for the galaxy. Each *modality* is optional and has a learned "missing"
value; in training each is dropped at random (`modality_keep`), so one model serves
every subset:

- "spectrum": the low-res spectrum resampled onto the window (2 input channels: flux,
  weight) and its shared embedding ("spectrum_embedding", or computed from "lowres",
  "lowres_weight", "instrument" by `spectrum_embedder`);
- "image": the image's shared embedding ("image_embedding", or from "image" by
  `image_embedder`) and its log amplitude ("log_image_amplitude", the cutout's
  normalisation level, log10 nJy);
- "amplitude": log10 of the low-res scale ("log_scale": 1e-17 erg/s/cm²/Å);
- "mass": a catalogue log10 M*/Msun ("log_mstar").
Training loss: the v-prediction MSE over the window's pixels, the pixels within
`LINE_LOSS_HALF_WIDTH_A` of Hα and the [NII] doublet (rest frame, wide enough for the
placement's redshift-prior error) weighted `line_weight` times the continuum, so that a
small denoiser spends its capacity on the [NII]/Hα split rather than on the continuum.
Always given: the placement redshift "z_place" and "instrument" (B,) int; the denoiser also
reads the window's rest wavelength as a channel (`WAVELENGTH_CHANNEL`; models trained before it
have two extra channels and none). Presence flags
"has_spectrum", "has_image", "has_amplitude", "has_mass" (B,) in {0, 1} (default 1 when the
modality's inputs are given, else 0) say what a row has.

An amplitude outside the range the model was trained on (`amplitude_ranges`, log10, set
from the training set by `fit_amplitude_ranges`: fluxes in the wrong units, e.g. erg/s/cm²/Å
instead of 1e-17 of them, would otherwise move N2 by tenths of a dex) is not extrapolated:
its modality ("amplitude" for "log_scale", "image" for "log_image_amplitude") counts as
missing, its embedder reads the centre of the range instead, and `generate` reports the row
in "amplitudes_ignored".

Sampling (`sample`) is posterior sampling when a `window.Observation` of the low-res
pixels is given: the sampler's data-consistency step conditions each clean estimate on
y = A x0 + noise (`samplers`), with the prior covariance of x0 estimated from the training
set, one per instrument (`fit_prior_covariance`, stored as non-trainable weights). The sampler's `amortised`
setting says whether the denoiser also sees the spectrum modality (the amortised map
low-res -> hi-res of earlier versions; with the data step on as well it counts the data
twice, see POSTERIOR.md of the design notes). Image only, no observation: the
image-to-spectrum generator.
"""

import keras
import numpy as np
from keras import ops

from specsr_keras.instruments import TARGET_GRID, instrument_with_id
from specsr_keras.models.contrastive import takes_amplitude
from specsr_keras.models.diffusion import HiresSpectrumTask
from specsr_keras.models.preprocess import masked_flux
from specsr_keras.models.preprocessor import SpectrumPreprocessor, image_inputs, mass_inputs
from specsr_keras.models.samplers import LinearData, Sampler
from specsr_keras.physics import LINE_REGION_A, LINE_WAVELENGTHS
from specsr_keras.spectral.lines import measure_windows
from specsr_keras.spectral.window import WINDOW_BINS

register = keras.saving.register_keras_serializable(package="specsr")

MODALITIES = ("spectrum", "image", "amplitude", "mass")
# Keep probabilities of each modality in training (the rest of the time it is "missing").
DEFAULT_MODALITY_KEEP = {"spectrum": 0.5, "image": 0.7, "amplitude": 0.8, "mass": 0.7}
# The amplitude inputs and their modalities; a trusted range is the training values' 0.1-99.9 %
# quantiles widened by AMPLITUDE_MARGIN_DEX on each side.
AMPLITUDE_INPUTS = {"amplitude": "log_scale", "image": "log_image_amplitude"}
AMPLITUDE_MARGIN_DEX = 0.5
# The input whose presence in the dict means a row has the modality (unless "has_<name>" says).
_MODALITY_INPUTS = {"spectrum": "lowres_on_target", "mass": "log_mstar", **AMPLITUDE_INPUTS}
# Half-width [Å, rest] of the loss's line region around Hα and [NII] 6550/6585: 3 sigma of a
# Z_PRIOR_SCATTER = 0.0015 (1+z) placement error (~10 Å at Hα) plus the line's own width.
LINE_LOSS_HALF_WIDTH_A = 35.0
# The denoiser's third extra channel (denoisers built with 3): the window's rest wavelength,
# centred and scaled to [-1, 1]. A convolutional U-Net is translation-equivariant: without it,
# and without the spectrum channel (the image-to-spectrum generator, the prior given the
# catalogue), it cannot know where Hα sits in the window and puts the line complex anywhere.
WAVELENGTH_CHANNEL = ((TARGET_GRID.wavelength - TARGET_GRID.wavelength.mean())
                      / (0.5 * np.ptp(TARGET_GRID.wavelength))).astype("float32")
# Scalar inputs are centred on these typical values before their projection.
_LOG_MSTAR_CENTRE, _Z_CENTRE = 10.0, 1.4
# Training windows an instrument needs for a prior covariance of its own (320 x 320: a few
# times the dimension); fewer, and it shares the covariance pooled over all instruments.
MIN_PRIOR_WINDOWS = 1000


def _identities(shape, dtype=None):
    """Initializer: identity matrices stacked along the first axis."""
    return ops.broadcast_to(ops.eye(shape[-1], dtype=dtype), shape)


def _filled_windows(x0, covered):
    """Windows (N, n) with each uncovered pixel set to its row's nearest covered value."""
    index = np.arange(x0.shape[1])
    left = np.maximum.accumulate(np.where(covered, index, -1), axis=1)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(covered, index, x0.shape[1]), 1), axis=1), 1)
    nearest = np.where(left >= 0, left, right)
    nearest = np.where((right < x0.shape[1]) & ((left < 0) | (right - index < index - left)), right, nearest)
    return np.take_along_axis(x0, nearest, axis=1)


def _covariance_eigen(windows):
    """(eigenvalues (n,), basis (n, n)) of the windows' covariance, eigenvalues floored at
    1e-6 of the largest."""
    eigenvalues, basis = np.linalg.eigh(np.cov(windows, rowvar=False))
    return np.maximum(eigenvalues, 1e-6 * eigenvalues.max()), basis


def sample_mean_std(samples):
    """Per-pixel mean and standard deviation over the sample axis of (B, K, L)."""
    return ops.mean(samples, axis=1), ops.std(samples, axis=1)


@register
class SuperResolver(HiresSpectrumTask):
    _nested = ("denoiser", "spectrum_embedder", "image_embedder")

    def __init__(
        self,
        denoiser,
        spectrum_embedder=None,
        image_embedder=None,
        embedding_dim=32,
        num_instruments=6,
        instrument_dim=8,
        context_dim=64,
        target_scale=1.0,
        modality_keep=None,
        line_weight=1.0,
        amplitude_ranges=None,
        sampler=None,
        preprocessor=None,
        **kwargs,
    ):
        if denoiser.condition_dim != context_dim or denoiser.extra_channels not in (2, 3):
            raise ValueError(
                f"denoiser needs condition_dim={context_dim} and extra_channels 2 or 3, got "
                f"{denoiser.condition_dim} and {denoiser.extra_channels}"
            )
        kwargs.pop("condition_dropout", None)  # modality dropout replaces it
        super().__init__(denoiser, condition_dim=context_dim, condition_dropout=0.0, **kwargs)
        self.spectrum_embedder = spectrum_embedder
        self.image_embedder = image_embedder
        self.embedding_dim = int(embedding_dim)
        self.num_instruments = int(num_instruments)
        self.instrument_dim = int(instrument_dim)
        self.context_dim = int(context_dim)
        self.target_scale = float(target_scale)
        self.modality_keep = {**DEFAULT_MODALITY_KEEP, **(modality_keep or {})}
        if float(line_weight) <= 0:
            raise ValueError(f"line_weight must be > 0, got {line_weight}")
        self.line_weight = float(line_weight)
        self.amplitude_ranges = {name: (float(low), float(high))
                                 for name, (low, high) in (amplitude_ranges or {}).items()}
        if set(self.amplitude_ranges) - set(AMPLITUDE_INPUTS):
            raise ValueError(f"amplitude_ranges: unknown modality in {sorted(self.amplitude_ranges)}; "
                             f"known: {sorted(AMPLITUDE_INPUTS)}")
        if isinstance(sampler, dict):
            sampler = keras.saving.deserialize_keras_object(sampler)
        self.sampler = sampler or Sampler()
        if isinstance(preprocessor, dict):
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        self.preprocessor = preprocessor or SpectrumPreprocessor()
        # The conditioning layers are small: float32 under any mixed-precision policy.
        self.instrument_embedding = keras.layers.Embedding(num_instruments, instrument_dim, name="instrument_embedding",
                                                           dtype="float32")
        self.instrument_embedding.build((None,))
        feature_dims = {"spectrum": embedding_dim, "image": embedding_dim + 1, "amplitude": 1, "mass": 1}
        self.projections, self.missing = {}, {}
        for name in MODALITIES:
            projection = keras.layers.Dense(context_dim, name=f"{name}_projection", dtype="float32")
            projection.build((None, feature_dims[name]))
            self.projections[name] = projection
            self.missing[name] = self.add_weight(shape=(context_dim,), initializer="zeros", name=f"{name}_missing")
        self.redshift_projection = keras.layers.Dense(context_dim, name="redshift_projection", dtype="float32")
        self.redshift_projection.build((None, 1 + instrument_dim))
        self.context_out = keras.layers.Dense(context_dim, name="context_out", dtype="float32")
        self.context_out.build((None, context_dim))
        n = denoiser.sample_shape[0]
        # One prior covariance U diag(λ) Uᵀ per instrument (index: `Instrument.instrument_id`).
        self.prior_basis = self.add_weight(shape=(num_instruments, n, n), initializer=_identities, trainable=False,
                                           name="prior_basis")
        self.prior_eigenvalues = self.add_weight(shape=(num_instruments, n), initializer="ones", trainable=False,
                                                 name="prior_eigenvalues")
        self.seed_generator = keras.random.SeedGenerator(kwargs.get("seed"))
        self.built = True

    # --- the loss --------------------------------------------------------------------
    def loss_profile(self):
        """(320,) per-pixel loss weights: `line_weight` near Hα and [NII], 1 elsewhere."""
        wave = TARGET_GRID.wavelength
        near = np.zeros(wave.shape, bool)
        for line in ("nii_6550", "halpha", "nii_6585"):
            near |= np.abs(wave - LINE_WAVELENGTHS[line]) <= LINE_LOSS_HALF_WIDTH_A
        return np.where(near, self.line_weight, 1.0).astype("float32")

    def target(self, inputs):
        x0, weight = super().target(inputs)
        if self.line_weight == 1.0:
            return x0, weight
        profile = ops.convert_to_tensor(self.loss_profile())
        return x0, profile if weight is None else ops.cast(weight, "float32") * profile

    # --- modalities -------------------------------------------------------------------
    def given(self, inputs, name, batch):
        """(B,) float32 in {0, 1}: the row has the modality ("has_<name>", default 1 when its
        input is in the dict)."""
        flag = inputs.get(f"has_{name}")
        if flag is None:
            return ops.ones((batch,)) if _MODALITY_INPUTS[name] in inputs else ops.zeros((batch,))
        return ops.cast(flag, "float32")

    def presence(self, inputs, training=None):
        """{modality: (B,) float32 in {0, 1}}: given, its amplitude trusted, and (in training)
        not dropped."""
        batch = ops.shape(inputs["z_place"])[0]
        present = {}
        for name in MODALITIES:
            flag = self.given(inputs, name, batch) * self.amplitude_trusted(inputs, name, batch)
            if training:
                keep = keras.random.uniform((batch,), seed=self.seed_generator) < self.modality_keep[name]
                flag = flag * ops.cast(keep, "float32")
            present[name] = flag
        return present

    def amplitude_trusted(self, inputs, name, batch):
        """(B,) float32: 0 where the modality's amplitude input lies outside its trusted
        range, else 1 (also without a range or without the input)."""
        key = AMPLITUDE_INPUTS.get(name)
        if key not in inputs or name not in self.amplitude_ranges:
            return ops.ones((batch,))
        low, high = self.amplitude_ranges[name]
        value = ops.cast(inputs[key], "float32")
        return ops.cast(ops.logical_and(value >= low, value <= high), "float32")

    def trusted_amplitude(self, inputs, name):
        """The modality's log amplitude (B,) float32 for its embedder: outside the trusted
        range, the range's centre (a typical galaxy's level) instead of an extrapolation."""
        value = ops.cast(inputs[AMPLITUDE_INPUTS[name]], "float32")
        if name not in self.amplitude_ranges:
            return value
        low, high = self.amplitude_ranges[name]
        trusted = self.amplitude_trusted(inputs, name, ops.shape(value)[0])
        return ops.where(trusted > 0, value, 0.5 * (low + high))

    def amplitudes_ignored(self, inputs):
        """(B,) float32: 1 where a given amplitude (a row with that modality) was outside
        its trusted range and so ignored, else 0."""
        batch = ops.shape(inputs["z_place"])[0]
        ignored = ops.zeros((batch,))
        for name in AMPLITUDE_INPUTS:
            ignored = ops.maximum(ignored, self.given(inputs, name, batch)
                                  * (1.0 - self.amplitude_trusted(inputs, name, batch)))
        return ignored

    def fit_amplitude_ranges(self, arrays):
        """Set `amplitude_ranges` from training inputs (numpy): per amplitude input, its finite
        values on rows that have the modality; returns the ranges."""
        for name, key in AMPLITUDE_INPUTS.items():
            if key not in arrays:
                continue
            values = np.asarray(arrays[key], np.float64)
            given = np.asarray(arrays.get(f"has_{name}", np.ones(values.shape)), bool)
            values = values[given & np.isfinite(values)]
            if values.size:
                low, high = np.quantile(values, [0.001, 0.999])
                self.amplitude_ranges[name] = (float(low) - AMPLITUDE_MARGIN_DEX, float(high) + AMPLITUDE_MARGIN_DEX)
        return dict(self.amplitude_ranges)

    def embed_spectrum(self, inputs):
        """The low-res spectrum's shared embedding (B, embedding_dim)."""
        if "spectrum_embedding" in inputs:
            return inputs["spectrum_embedding"]
        weight = inputs["lowres_weight"]
        spectrum = ops.stack([masked_flux(inputs["lowres"], weight), weight], axis=-1)
        features = {"spectrum": spectrum, "instrument": ops.convert_to_tensor(inputs["instrument"])}
        if takes_amplitude(self.spectrum_embedder):
            features["log_amplitude"] = self.trusted_amplitude(inputs, "amplitude")
        return ops.cast(self.spectrum_embedder(features), "float32")

    def embed_image(self, inputs):
        """The image's shared embedding (B, embedding_dim)."""
        if "image_embedding" in inputs:
            return inputs["image_embedding"]
        image = inputs["image"]
        if takes_amplitude(self.image_embedder):
            image = {"image": ops.cast(image, "float32"), "log_amplitude": self.trusted_amplitude(inputs, "image")}
        return ops.cast(self.image_embedder(image), "float32")

    def _features(self, name, inputs, batch):
        """Raw features of a modality (zeros where its inputs are absent from the dict)."""
        if name == "spectrum":
            present = "spectrum_embedding" in inputs or "lowres" in inputs
            return self.embed_spectrum(inputs) if present else ops.zeros((batch, self.embedding_dim))
        if name == "image":
            if "image_embedding" not in inputs and "image" not in inputs:
                return ops.zeros((batch, self.embedding_dim + 1))
            amplitude = ops.reshape(ops.cast(inputs["log_image_amplitude"], "float32"), (-1, 1))
            return ops.concatenate([self.embed_image(inputs), amplitude], axis=-1)
        key, centre = {"amplitude": ("log_scale", 0.0), "mass": ("log_mstar", _LOG_MSTAR_CENTRE)}[name]
        if key not in inputs:
            return ops.zeros((batch, 1))
        return ops.reshape(ops.cast(inputs[key], "float32") - centre, (-1, 1))

    def conditioning(self, inputs, training=None, amortised=True):
        """(context (B, context_dim), extra channels (B, 320, 2 or 3): the low-res flux and
        its weight on the window, and the `WAVELENGTH_CHANNEL` for denoisers built with it);
        `amortised` False drops the spectrum modality (the denoiser is then a prior given the
        other modalities)."""
        batch = ops.shape(inputs["z_place"])[0]
        present = self.presence(inputs, training)
        if not amortised:
            present["spectrum"] = ops.zeros((batch,))
        context = 0.0
        for name in MODALITIES:
            features = self._features(name, inputs, batch)
            features = ops.where(ops.isfinite(features), features, 0.0)  # a NaN mass is a missing one
            flag = ops.expand_dims(present[name], -1)
            context = context + flag * self.projections[name](features) + (1.0 - flag) * self.missing[name]
        redshift = ops.reshape(ops.cast(inputs["z_place"], "float32") - _Z_CENTRE, (-1, 1))
        instrument = self.instrument_embedding(inputs["instrument"])
        context = context + self.redshift_projection(ops.concatenate([redshift, instrument], axis=-1))
        context = self.context_out(ops.silu(context))
        empty = ops.zeros((batch, WINDOW_BINS))
        weight = inputs["lowres_on_target_weight"] if "lowres_on_target_weight" in inputs else empty
        flux = inputs["lowres_on_target"] if "lowres_on_target" in inputs else empty
        keep = ops.expand_dims(present["spectrum"], -1)
        flux = masked_flux(flux, weight) / self.target_scale * keep
        channels = [flux, weight * keep]
        if self.denoiser.extra_channels == 3:
            channels.append(ops.broadcast_to(ops.convert_to_tensor(WAVELENGTH_CHANNEL), (batch, WINDOW_BINS)))
        return context, ops.stack(channels, axis=-1)

    # --- the prior covariance ---------------------------------------------------------
    def fit_prior_covariance(self, hires, hires_weight, instrument) -> dict[int, int]:
        """Set each instrument's prior covariance from training windows (N, 320) in normalised
        units and their instrument ids (N,) (numpy); returns {instrument id: windows used}.

        Windows are divided by their low-res peak (`spectrum_scale`), so their spread depends
        on the instrument's resolution (at R~130 the peak is a few times lower than at R~450
        and the normalised lines a few times larger): an instrument with at least
        `MIN_PRIOR_WINDOWS` training windows gets its own covariance, the others the pooled one.
        Pixels not covered (weight 0: after placement, often a few at the window's ends) take
        the nearest covered value of their row; rows with no covered pixel are left out.
        Eigenvalues are floored at 1e-6 of the largest."""
        covered = np.asarray(hires_weight) > 0
        rows = covered.any(axis=1)
        if rows.sum() < 2:
            raise ValueError("the prior covariance needs at least two hi-res windows")
        filled = _filled_windows(np.asarray(hires, np.float64)[rows] / self.target_scale, covered[rows])
        instrument = np.asarray(instrument).astype(int)[rows]
        pooled = _covariance_eigen(filled)
        basis = np.empty(tuple(self.prior_basis.shape), np.float32)
        eigenvalues = np.empty(tuple(self.prior_eigenvalues.shape), np.float32)
        used = {}
        for index in range(self.num_instruments):
            own = instrument == index
            if own.sum() >= MIN_PRIOR_WINDOWS:
                used[index] = int(own.sum())
                eigenvalues[index], basis[index] = _covariance_eigen(filled[own])
            else:
                eigenvalues[index], basis[index] = pooled
        self.prior_basis.assign(basis)
        self.prior_eigenvalues.assign(eigenvalues)
        return used

    def count_learned_params(self) -> int:
        """The number of weights training sets: all but the stored prior covariance."""
        stored = (self.prior_basis, self.prior_eigenvalues)
        return self.count_params() - sum(int(np.prod(variable.shape)) for variable in stored)

    def load_own_variables(self, store):
        """As Keras does, but a run saved with one prior covariance for all instruments ((n, n)
        basis) gets it for each instrument."""
        self._check_load_own_variables(store)
        for i, variable in enumerate(self._trainable_variables + self._non_trainable_variables):
            value = np.asarray(store[f"{i}"])
            older = value.ndim == len(variable.shape) - 1  # the one (n, n) basis or (n,) eigenvalues
            variable.assign(np.broadcast_to(value, variable.shape) if older else value)

    def linear_data(self, observation, scale, samples, prior_scale, inflation=None):
        """`LinearData` for the sampler from a `window.Observation` (physical units) and the
        objects' scales (B,): in model units x = window / (scale target_scale). inflation (B,):
        each object's noise sigma is the ivar's times this (the preprocessor's "noise_inflation")."""
        root_ivar = ops.sqrt(ops.cast(observation.ivar, "float32"))
        if inflation is not None:
            root_ivar = root_ivar / ops.expand_dims(inflation, -1)
        units = ops.reshape(ops.cast(scale, "float32") * self.target_scale, (-1, 1, 1))
        operator = observation.operator * ops.expand_dims(root_ivar, -1) * units
        return LinearData(operator, root_ivar * observation.flux, self.prior_basis[observation.instrument_id],
                          self.prior_eigenvalues[observation.instrument_id], samples, prior_scale)

    # --- sampling ---------------------------------------------------------------------
    def sample(self, inputs, num_samples=None, sampler=None, observation=None, seed=None, noise=None):
        """K = num_samples posterior draws per row: (B, K, 320) in the inputs' normalised units.

        inputs: the model inputs (incl. "scale" (B,) when an observation is given, and
        "noise_inflation" (B,) when the sampler has `noise_check`);
        observation: `spectral.window.Observation` of the low-res pixels (physical units) for
        the data-consistency step, or None; sampler: a `Sampler` (default: the model's);
        noise: `sampler.draw_noise(B K, (320, 1), seed, observed=M)` drawn outside (for a
        compiled caller), else drawn here from `seed`.
        """
        sampler = sampler or self.sampler
        inputs = {k: ops.convert_to_tensor(v) for k, v in inputs.items()}
        condition, extra = self.conditioning(inputs, training=False, amortised=sampler.amortised)
        data = None
        if observation is not None and sampler.data_consistency:
            inflation = inputs["noise_inflation"] if sampler.noise_check else None
            data = self.linear_data(observation, inputs["scale"], num_samples or sampler.samples, sampler.prior_scale,
                                    inflation)
        return self.draw(condition, extra, num_samples or sampler.samples, sampler, seed, noise, data)

    def noise(self, rows, num_samples=None, sampler=None, seed=None, preprocessor=None):
        """The noise `generate` reads for `rows` objects (to draw outside a compiled call)."""
        preprocessor = preprocessor or self.preprocessor
        sampler = sampler or self.sampler.for_instrument(preprocessor.instrument.name)
        count = rows * (num_samples or sampler.samples)
        return sampler.draw_noise(count, self.denoiser.sample_shape, seed, observed=preprocessor.observed_pixels)

    def generate(self, raw, num_samples=None, sampler=None, seed=None, noise=None, preprocessor=None):
        """Raw catalogue rows -> posterior samples of the hi-res window and their line measurements.

        raw: see `SpectrumPreprocessor` (default: the model's, i.e. its instrument grid).
        Returns tensors: "samples" (B, K, 320) [1e-17
        erg/s/cm²/Å on the rest window placed at "z_place" (B,)], "scale" (B,), per-sample
        "ha_flux", "nii_6585_flux" [1e-17 erg/s/cm²], "n2", "z", "sigma_v_kms", "ok" (B, K)
        (`spectral.lines.measure_windows`), and "reconstruction_chi2", "observed_pixels",
        "line_pixels", "amplitudes_ignored" (B,): the reduced chi2 of the low-res data against
        the sample mean seen through the instrument (NaN without observing pixels), the
        observing pixel count, those overlapping Hα + [NII], and 1 where an amplitude outside
        the trained range was ignored (`amplitude_ranges`).
        """
        preprocessor = preprocessor or self.preprocessor
        sampler = sampler or self.sampler.for_instrument(preprocessor.instrument.name)
        inputs, observation = preprocessor(raw)
        normalised = self.sample(inputs, num_samples, sampler, observation, seed, noise)
        samples = normalised * ops.reshape(inputs["scale"], (-1, 1, 1))
        out = measure_windows(samples, inputs["z_place"])
        count = observation.count
        chi2 = observation.chi2(ops.mean(samples, axis=1))
        out.update(
            samples=samples,
            z_place=inputs["z_place"],
            scale=inputs["scale"],
            reconstruction_chi2=ops.where(count > 0, chi2 / ops.maximum(count, 1.0), np.nan),
            observed_pixels=count,
            line_pixels=observation.count_between(*LINE_REGION_A),
            amplitudes_ignored=self.amplitudes_ignored(inputs),
        )
        return out

    def generate_from_image(self, image, z_prior, log_mstar=None, num_samples=None, sampler=None, seed=None,
                            noise=None, instrument_id=1):
        """Spectra from images alone (the image-to-spectrum generator): the prior given the image,
        its amplitude, z and (optionally) a catalogue mass, without a spectrum.

        image (B, 64, 64, 4) [nJy], z_prior (B,) (placement; NaN is not allowed here),
        log_mstar (B,) catalogue log10 M*/Msun (NaN or <= 0: none) or None. Returns "samples"
        (B, K, 320) in units of the object's (unknown) low-res scale, their per-sample line
        measurements (`measure_windows`: N2 and z are scale-free, line fluxes are in scale
        units x Å) and "z_place".
        """
        sampler = sampler or self.sampler.for_instrument(instrument_with_id(instrument_id).name)
        sampler = sampler.replace(data_consistency=False, amortised=False)
        z = ops.cast(z_prior, "float32")
        inputs = {**image_inputs(image), "z_place": z, "instrument": ops.full(ops.shape(z), instrument_id, "int32")}
        if log_mstar is not None:
            inputs.update(mass_inputs(log_mstar))
        samples = self.sample(inputs, num_samples, sampler, None, seed, noise)
        return {**measure_windows(samples, z), "samples": samples, "z_place": z}

    def get_config(self):
        config = super().get_config()
        config.pop("condition_dropout", None)
        config.update(
            embedding_dim=self.embedding_dim,
            num_instruments=self.num_instruments,
            instrument_dim=self.instrument_dim,
            context_dim=self.context_dim,
            target_scale=self.target_scale,
            modality_keep=self.modality_keep,
            line_weight=self.line_weight,
            amplitude_ranges={name: list(bounds) for name, bounds in self.amplitude_ranges.items()},
            sampler=keras.saving.serialize_keras_object(self.sampler),
            preprocessor=keras.saving.serialize_keras_object(self.preprocessor),
        )
        return config
