"""In-graph (keras.ops) versions of the numpy steps around the models, for serving.

An exported SavedModel answers one request with one call, so what `preprocessor.py`,
`resampling.py` and `measure/` do in numpy around the networks is repeated here in
keras.ops (it traces into the TensorFlow graph of `specsr_keras.export`):

- `resample_flux`: the flux-conserving resampler of `resampling.resample_flux`
  (cumulative-flux interpolation; input and/or output edges shared or per row; ivar
  propagated; output bins not fully covered, or touching a masked pixel, get flux 0 and
  ivar 0). Positions are handled in float64 where the backend has it (TensorFlow):
  observed wavelengths ~1.5e4 Å carry only ~1e-3 Å of float32 precision.
- `lowres_model_inputs`: `preprocessor.lowres_inputs` (clean, scale, resample onto
  ENCODER_GRID and onto the TARGET_GRID window at z, normalise).
- `reobserve_chi2`: reduced chi2 of the low-res data against the hi-res mean blurred to
  the instrument LSF (Gaussian, in Fourier space) and resampled onto its pixels; the
  in-graph `superres_predictor.forward_model_chi2`.
- `measure_lines`: the fast serving estimator of Hα, [NII]6585, N2 and z per sample
  (continuum from side bands, template scan + flux-weighted centroid, direct
  integration in fixed windows). `specsr infer` refits samples with the full fitter
  (`measure.fit_target_grid`); this estimator only serves quick answers.
- `predictive_percentiles`: `measure.intervals.predictive_percentiles` (percentiles of a
  new draw from the K samples; median at 50) along an axis, K static.

Spectra: flux density [1e-17 erg/s/cm²/Å], ivar its inverse variance (0 = masked).
"""

import math

import numpy as np
from keras import ops

from specsr_keras.instruments import ENCODER_GRID, TARGET_GRID, Instrument
from specsr_keras.measure.intervals import predictive_factor
from specsr_keras.models.preprocess import prepare_spectrum, spectrum_scale
from specsr_keras.physics import FWHM_PER_SIGMA, LINE_WAVELENGTHS, NII_DOUBLET_RATIO

# Redshift used to place the target window when a row's z prior is missing (NaN) or
# below this bound: the window is put at the middle of the instrument's band instead.
MIN_VALID_Z = -0.5

# --- resampling -----------------------------------------------------------------------


def _float(x, dtype="float64"):
    return ops.cast(ops.convert_to_tensor(x), dtype)


def _gather(values, index):
    """values[..., index]: values (n,) or (B, n); index (m,) shared or (B, m) per row."""
    if len(values.shape) == 1:
        return ops.take(values, index, axis=0)
    if len(index.shape) == 1:
        return ops.take(values, index, axis=1)
    return ops.take_along_axis(values, index, axis=1)


def _cumulative(values):
    """(B, L) -> (B, L+1) running sum with a leading 0."""
    return ops.pad(ops.cumsum(values, axis=-1), ((0, 0), (1, 0)))


def locate_bins(edges, values, side="right"):
    """Index i with edges[..., i] <= value < edges[..., i+1] (like `resampling.locate_bins`).

    edges (n,) shared or (B, n) per row, increasing; values (B, m) (or (m,) with shared
    edges). Per-row edges are offset into disjoint ranges so one 1-D search serves all rows.
    """
    if len(edges.shape) == 1:
        flat = ops.searchsorted(edges, ops.reshape(values, (-1,)), side=side)
        return ops.reshape(ops.cast(flat, "int32"), ops.shape(values)) - 1
    n = edges.shape[-1]
    rows = ops.shape(edges)[0]
    low = ops.minimum(ops.min(edges[:, 0]), ops.min(values))
    span = ops.maximum(ops.max(edges[:, -1]), ops.max(values)) - low + 1.0
    offsets = span * ops.cast(ops.expand_dims(ops.arange(rows), -1), edges.dtype)
    values = ops.broadcast_to(values, (rows, values.shape[-1]))
    flat = ops.searchsorted(
        ops.reshape(edges - low + offsets, (-1,)),
        ops.reshape(values - low + offsets, (-1,)),
        side=side,
    )
    index = ops.reshape(ops.cast(flat, "int32"), ops.shape(values))
    return index - n * ops.expand_dims(ops.arange(rows, dtype="int32"), -1) - 1


def resample_flux(edges_in, flux, ivar, edges_out, dtype="float64"):
    """Flux-conserving resampling of rows (B, L_in) onto new bins; see `resampling.resample_flux`.

    edges_in: (L_in+1,) or (B, L_in+1) [Å]; flux, ivar: (B, L_in) (ivar None = noiseless);
    edges_out: (L_out+1,) or (B, L_out+1). Returns (flux, ivar) (B, L_out) in `dtype`
    (ivar None when ivar was None).
    """
    edges_in, edges_out, flux = (
        _float(edges_in, dtype),
        _float(edges_out, dtype),
        _float(flux, dtype),
    )
    n_in = flux.shape[-1]
    lo, hi = edges_out[..., :-1], edges_out[..., 1:]
    if len(lo.shape) == 1:
        lo = ops.broadcast_to(lo, (ops.shape(flux)[0], lo.shape[0]))
        hi = ops.broadcast_to(hi, ops.shape(lo))
    first = ops.clip(locate_bins(edges_in, lo, "right"), 0, n_in - 1)
    last = ops.clip(locate_bins(edges_in, hi, "left"), 0, n_in - 1)
    width_in = edges_in[..., 1:] - edges_in[..., :-1]
    if ivar is not None:
        ivar = _float(ivar, dtype)
        good = ivar > 0
        flux = ops.where(good, flux, 0.0)
    flux_cum = _cumulative(flux * width_in)

    def integral(position, index):  # integral of the flux density from edges_in[0]
        return _gather(flux_cum, index) + _gather(flux, index) * (
            position - _gather(edges_in, index)
        )

    width_out = hi - lo
    safe_width = ops.where(width_out > 0, width_out, 1.0)
    out_flux = (integral(hi, last) - integral(lo, first)) / safe_width
    valid = ops.logical_and(lo >= edges_in[..., :1], hi <= edges_in[..., -1:])
    valid = ops.logical_and(valid, width_out > 0)
    out_ivar = None
    if ivar is not None:
        variance = ops.where(good, 1.0 / ops.where(good, ivar, 1.0), 0.0)
        var_cum = _cumulative(variance * ops.square(width_in))
        bad_cum = _cumulative(ops.cast(ops.logical_not(good), "int32"))
        same = first == last
        head = ops.where(same, hi, _gather(edges_in, ops.minimum(first + 1, n_in))) - lo
        tail = ops.where(same, 0.0, hi - _gather(edges_in, last))
        interior = ops.where(
            same, 0.0, _gather(var_cum, last) - _gather(var_cum, ops.minimum(first + 1, last))
        )
        out_var = (
            ops.square(head) * _gather(variance, first)
            + ops.square(tail) * _gather(variance, last)
            + interior
        ) / ops.square(safe_width)
        untouched = _gather(bad_cum, last + 1) == _gather(bad_cum, first)
        valid = ops.logical_and(ops.logical_and(valid, untouched), out_var > 0)
        out_ivar = ops.where(valid, 1.0 / ops.where(valid, out_var, 1.0), 0.0)
    out_flux = ops.where(valid, out_flux, 0.0)
    return out_flux, out_ivar


# --- model inputs ---------------------------------------------------------------------


def clean_lowres(flux, ivar, mask):
    """(flux, ivar) float32 with masked (mask != 0), non-finite or ivar <= 0 pixels -> 0, 0."""
    flux, ivar = _float(flux, "float32"), _float(ivar, "float32")
    good = ops.logical_and(ops.isfinite(flux), ops.isfinite(ivar))
    good = ops.logical_and(good, ivar > 0)
    good = ops.logical_and(good, ops.logical_not(ops.cast(mask, "bool")))
    return ops.where(good, flux, 0.0), ops.where(good, ivar, 0.0)


def placement_redshift(z_prior, instrument: Instrument):
    """z_prior (B,) with NaN / < MIN_VALID_Z replaced by the band-centre placement."""
    z = _float(z_prior, "float32")
    centre = 0.5 * (instrument.bin_edges[0] + instrument.bin_edges[-1])
    fallback = float(centre / TARGET_GRID.wavelength.mean() - 1.0)
    ok = ops.logical_and(ops.isfinite(z), z >= MIN_VALID_Z)
    return ops.where(ok, z, fallback)


def target_window_edges(z, dtype="float64"):
    """Observed-frame edges (B, 321) [Å] of TARGET_GRID placed at z (B,)."""
    return ops.expand_dims(_float(TARGET_GRID.bin_edges, dtype), 0) * ops.expand_dims(
        1.0 + _float(z, dtype), -1
    )


def lowres_model_inputs(flux, ivar, mask, z_place, instrument: Instrument):
    """In-graph `preprocessor.lowres_inputs`: super-resolver inputs from raw low-res rows.

    flux, ivar, mask (B, L) on `instrument`'s grid; z_place (B,) (already valid, see
    `placement_redshift`). Returns the model-input dict plus "scale" (B,) and the cleaned
    "flux", "ivar" (B, L) float32.
    """
    flux, ivar = clean_lowres(flux, ivar, mask)
    scale = spectrum_scale(flux, ivar)
    enc_flux, enc_ivar = resample_flux(instrument.bin_edges, flux, ivar, ENCODER_GRID.bin_edges)
    tgt_flux, tgt_ivar = resample_flux(
        instrument.bin_edges, flux, ivar, target_window_edges(z_place)
    )
    lowres, lowres_weight = prepare_spectrum(
        _float(enc_flux, "float32"), _float(enc_ivar, "float32"), scale
    )
    on_target, on_target_weight = prepare_spectrum(
        _float(tgt_flux, "float32"), _float(tgt_ivar, "float32"), scale
    )
    batch = ops.shape(flux)[0]
    return {
        "lowres": lowres,
        "lowres_weight": lowres_weight,
        "instrument": ops.full((batch,), instrument.instrument_id, dtype="int32"),
        "lowres_on_target": on_target,
        "lowres_on_target_weight": on_target_weight,
        "scale": scale,
        "flux": flux,
        "ivar": ivar,
    }


# --- re-observation -------------------------------------------------------------------

# Samples of the re-observed window each side (edge-padded) before the FFT blur.
_BLUR_PAD = 352


def gaussian_blur(x, sigma_pixels):
    """Blur rows x (B, L) with a Gaussian of per-row width sigma_pixels (B,) [pixels].

    Edge-padded, multiplied by the Gaussian's transfer function exp(-2 π² σ² f²) in
    Fourier space (a continuous Gaussian sampled on pixels: fine for σ >~ 0.5 pixel).
    """
    x = _float(x, "float32")
    length = x.shape[-1]
    padded = ops.concatenate(
        [ops.repeat(x[:, :1], _BLUR_PAD, axis=1), x, ops.repeat(x[:, -1:], _BLUR_PAD, axis=1)],
        axis=1,
    )
    n_fft = length + 2 * _BLUR_PAD
    real, imag = ops.rfft(padded)
    frequency = ops.arange(n_fft // 2 + 1, dtype="float32") / n_fft
    sigma = ops.expand_dims(_float(sigma_pixels, "float32"), -1)
    transfer = ops.exp(-2.0 * math.pi**2 * ops.square(sigma * ops.expand_dims(frequency, 0)))
    blurred = ops.irfft((real * transfer, imag * transfer), fft_length=n_fft)
    return blurred[:, _BLUR_PAD : _BLUR_PAD + length]


def _lsf_sigma_graph(instrument: Instrument, wave):
    """Instrument LSF sigma [Å] at observed `wave` (point source) in keras.ops."""
    if instrument.kind == "slit":
        return wave / (FWHM_PER_SIGMA * instrument.resolving_power_ref)
    return ops.ones_like(wave) * float(instrument.lsf_sigma(np.array([1.0]))[0])


def reobserve(hires_mean, z_place, instrument: Instrument):
    """The hi-res window (B, 320) seen by `instrument`: (model (B, L), covered (B, L) bool).

    Blurred by sqrt(σ_inst² - σ_R3600²) at the window centre (in window pixels of
    (1+z) Å) and resampled onto the instrument pixels; pixels not fully inside the
    window are not covered.
    """
    z = _float(z_place, "float32")
    centre = float(TARGET_GRID.wavelength.mean()) * (1.0 + z)
    sigma_inst = _lsf_sigma_graph(instrument, centre)
    sigma_target = centre / (FWHM_PER_SIGMA * TARGET_GRID.resolving_power)
    extra = ops.sqrt(ops.maximum(ops.square(sigma_inst) - ops.square(sigma_target), 1e-6))
    blurred = gaussian_blur(hires_mean, extra / (1.0 + z))
    model, covered = resample_flux(
        target_window_edges(z), blurred, ops.ones_like(blurred), instrument.bin_edges
    )
    return _float(model, "float32"), covered > 0


def reobserve_chi2(hires_mean, z_place, flux, ivar, instrument: Instrument, free_parameters=4):
    """Reduced chi2 (B,) of the low-res data (cleaned flux, ivar (B, L)) vs the re-observed mean.

    Only instrument pixels fully inside the window and unmasked count; dof = max(n - 4, 1)
    as in `forward_model_chi2`. 0 where no pixel counts.
    """
    model, covered = reobserve(hires_mean, z_place, instrument)
    weight = ops.where(covered, _float(ivar, "float32"), 0.0)
    chi2 = ops.sum(weight * ops.square(_float(flux, "float32") - model), axis=-1)
    count = ops.sum(ops.cast(weight > 0, "float32"), axis=-1)
    return chi2 / ops.maximum(count - free_parameters, 1.0)


# --- line measurement ----------------------------------------------------------------

HALPHA = LINE_WAVELENGTHS["halpha"]
NII_6585 = LINE_WAVELENGTHS["nii_6585"]
NII_6550 = LINE_WAVELENGTHS["nii_6550"]
# Rest-frame side bands [Å] for the continuum: clear of Hα+[NII] and [SII] even when the
# placement redshift is off by 3 σ of a 0.0015 (1+z) prior (≈ ±30 Å rest).
CONTINUUM_BANDS = ((6466.0, 6506.0), (6630.0, 6685.0))
# Template scan range [pixels = rest Å] around the expected Hα position, and the
# [NII]6585/Hα ratio assumed by the scan template (N2 ≈ -0.5).
SCAN_HALF_WIDTH = 40
SCAN_NII_RATIO = 0.3
# Box width [pixels] smoothing the residual before the scan; half-width of the centroid
# window [pixels]; half-width of the integration windows [rest Å] (≈ 320 km/s: 3 σ of a
# σ_v = 100 km/s line at R = 3600; broader lines lose their wings).
SCAN_SMOOTH = 5
CENTROID_HALF_WIDTH = 4
INTEGRATION_HALF_WIDTH = 7.0
N2_RANGE = (-2.0, 0.5)  # measure.N2_PRIOR_RANGE


def _pixel(rest_wavelength):
    return int(round(rest_wavelength - TARGET_GRID.bin_edges[0] - 0.5))


def _window_weights(centre, half_width):
    """Overlap [Å] of each TARGET_GRID pixel with [centre - hw, centre + hw]; centre (N,)."""
    lo = ops.expand_dims(_float(TARGET_GRID.bin_edges[:-1], "float32"), 0)
    hi = ops.expand_dims(_float(TARGET_GRID.bin_edges[1:], "float32"), 0)
    a = ops.expand_dims(centre - half_width, -1)
    b = ops.expand_dims(centre + half_width, -1)
    return ops.maximum(ops.minimum(hi, b) - ops.maximum(lo, a), 0.0)


def _continuum(flux):
    """Median over the continuum side bands (N, 320) -> (N,)."""
    rest = TARGET_GRID.wavelength
    picks = np.concatenate([np.flatnonzero((rest >= a) & (rest < b)) for a, b in CONTINUUM_BANDS])
    values = ops.sort(ops.take(flux, picks, axis=1), axis=-1)
    n = picks.size
    return 0.5 * (values[:, (n - 1) // 2] + values[:, n // 2])


def measure_lines(samples, z_place, scale):
    """Fast per-sample Hα, [NII]6585, N2 and z from samples (B, K, 320) [flux units].

    Per sample: continuum = median of CONTINUUM_BANDS; Hα located by scanning a
    box-smoothed Hα + [NII] template over ±SCAN_HALF_WIDTH pixels, then refined by the
    flux-weighted centroid of the positive residual within ±CENTROID_HALF_WIDTH pixels;
    z = centroid (1+z_place) / λ_Hα - 1; line fluxes = continuum-subtracted flux
    integrated over ±INTEGRATION_HALF_WIDTH rest Å around Hα and [NII]6585 at that z,
    times (1+z_place) [1e-17 erg/s/cm²]; N2 = log10(NII/Hα) clipped to N2_RANGE (fluxes
    floored at 1e-3 of the object's scale x 1 Å). Returns (B, K) arrays.
    """
    shape = ops.shape(samples)
    length = samples.shape[-1]
    flux = ops.reshape(_float(samples, "float32"), (-1, length))
    flux = ops.where(ops.isfinite(flux), flux, 0.0)
    residual = flux - ops.expand_dims(_continuum(flux), -1)

    kernel = SCAN_SMOOTH // 2
    cum = _cumulative(residual)
    smooth = (
        cum[:, 2 * kernel + 1 :] - cum[:, : -(2 * kernel + 1)]
    ) / SCAN_SMOOTH  # centred at i+kernel
    smooth = ops.pad(smooth, ((0, 0), (kernel, kernel)))
    shifts = np.arange(-SCAN_HALF_WIDTH, SCAN_HALF_WIDTH + 1)

    def at(rest):
        return ops.take(smooth, np.clip(_pixel(rest) + shifts, 0, length - 1), axis=1)

    score = (
        at(HALPHA)
        + SCAN_NII_RATIO * at(NII_6585)
        + SCAN_NII_RATIO / NII_DOUBLET_RATIO * at(NII_6550)
    )
    shift = ops.take(ops.convert_to_tensor(shifts.astype("float32")), ops.argmax(score, axis=-1))
    peak = float(TARGET_GRID.wavelength[_pixel(HALPHA)]) + shift  # rest-placed Å

    near = _window_weights(peak, CENTROID_HALF_WIDTH + 0.5)
    positive = ops.maximum(residual, 0.0) * near
    total = ops.sum(positive, axis=-1)
    rest = ops.expand_dims(_float(TARGET_GRID.wavelength, "float32"), 0)
    centroid = ops.where(
        total > 0, ops.sum(positive * rest, axis=-1) / ops.where(total > 0, total, 1.0), peak
    )

    one_plus_z = ops.repeat(1.0 + _float(z_place, "float32"), shape[1], axis=0)
    ha = ops.sum(residual * _window_weights(centroid, INTEGRATION_HALF_WIDTH), -1) * one_plus_z
    nii_centre = centroid * (NII_6585 / HALPHA)
    nii = ops.sum(residual * _window_weights(nii_centre, INTEGRATION_HALF_WIDTH), -1) * one_plus_z
    floor = 1e-3 * ops.repeat(_float(scale, "float32"), shape[1], axis=0)
    n2 = ops.clip(ops.log10(ops.maximum(nii, floor) / ops.maximum(ha, floor)), *N2_RANGE)
    z = centroid * one_plus_z / HALPHA - 1.0
    return {
        name: ops.reshape(value, (shape[0], shape[1]))
        for name, value in (("ha_flux", ha), ("nii_6585_flux", nii), ("n2", n2), ("z", z))
    }


def predictive_percentiles(x, q, axis=1):
    """`measure.intervals.predictive_percentiles(x, q, axis)` for finite x with a static K (NaN intervals at K=1)."""
    x = ops.moveaxis(x, axis, -1)
    k = x.shape[-1]
    ordered = ops.sort(x, axis=-1)
    median = 0.5 * (ordered[..., (k - 1) // 2] + ordered[..., k // 2])
    mean = ops.mean(x, axis=-1)
    spread = ops.sqrt(ops.sum(ops.square(x - mean[..., None]), axis=-1) / max(k - 1, 1))
    return [median if level == 50 else mean + float(predictive_factor(level, k)) * spread for level in q]


def cross_modal_disagreement(image_embedding, spectrum_embedding):
    """1 - cos(angle) between unit embeddings (B, D) -> (B,), in [0, 2]."""
    dot = ops.sum(image_embedding * spectrum_embedding, axis=-1)
    norms = ops.sqrt(
        ops.sum(ops.square(image_embedding), -1) * ops.sum(ops.square(spectrum_embedding), -1)
    )
    return 1.0 - dot / ops.maximum(norms, 1e-12)
