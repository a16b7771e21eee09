"""Per-object estimates of specsr and its baselines on one held-out shard directory.

Every method yields a dict of (N,) arrays `<q>_p16/p50/p84` (the Predictor format):

- `specsr`: the model under evaluation (`load_predictor`); plain `baseline` is loaded
  as `baseline:<instrument>` of each set, so it sees its own grid.
- `lowres_fit`: `direct_lowres_fit` of the low-res spectrum: each object's LSF (its source
  size along the dispersion, as a survey measures it on the image), fixed [NII] doublet
  ratio, physical bounds, z_guess = z_prior (the honest baseline).
- `faisst`: N2 of Faisst et al. 2018 at the *catalogue* log M* (the truth plus SED-fit-like
  scatter) and z_prior, 1σ = intrinsic scatter and mass error; Hα from de-blending the
  low-res fit's Hα + [NII] flux with that N2.
- `fit_population`, `fit_faisst`: the fit's Gaussian N2 likelihood times the population
  prior `POPULATION_N2` or the Faisst prior above (`fit_times_prior`).
- `constant`: the population prior alone (no skill).
- `ceiling`: fit of the true R=3600 target plus MOSFIRE-like noise from `hires_ivar`.
- `centroid`: redshift only, the naive blend centroid ignoring [NII] (Martens et al. 2019).
`withhold` ("image", "mass") evaluates as if the catalogue lacked those inputs: specsr does
not see them and the methods that need a catalogue mass (`faisst`, `fit_faisst`) are left out,
e.g. ("image", "mass") measures the spectrum-only mode of a survey without images or masses.
Units: line fluxes 1e-17 erg/s/cm², N2 dex, Å.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specsr_keras.data.shards import iter_shard_batches, load_shards, read_manifest
from specsr_keras.evaluation.metrics import SNR_BINS, bin_masks
from specsr_keras.inference.predictors import SPECTRUM_COLUMNS, cached_predictor, target_grid_model
from specsr_keras.inference.runner import chunk_seed, resolved_samples
from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.measure import (
    POPULATION_N2,
    ceiling_fit,
    centroid_redshift_ignoring_nii,
    deblend_halpha_with_prior,
    direct_lowres_fit,
    faisst_catalogue_prior,
    fit_times_prior,
)
from specsr_keras.measure.columns import gaussian_columns
from specsr_keras.measure.redshift import lsf_sigma_rows
from specsr_keras.reporting import Reporter
from specsr_keras.simulate.population import LOG_MSTAR_CATALOG_SCATTER_DEX
from specsr_keras.spectral.band import resample_flux

__all__ = ["HeldOutSet", "TRUTH_FIELDS", "run_held_out_set", "predictor_for"]

TRUTH_FIELDS = ("object_id", "z", "z_prior", "log_mstar", "log_mstar_catalog", "log_sfr", "dispersion_sigma_arcsec",
                "n2", "ha_flux", "nii_6585_flux", "ha_snr", "is_agn", "has_broad", "broad_ha_flux", "is_contaminated",
                "has_artefact")
# Catalogue inputs an evaluation can withhold from specsr and the baselines.
WITHHOLDABLE = ("image", "mass")
SPECTRUM_FIELDS = ("lowres_flux", "lowres_ivar", "lowres_mask", "hires_flux", "hires_ivar",
                   "hires_mask", "image")


@dataclass
class HeldOutSet:
    """One evaluated directory: truth columns, per-method estimates and example spectra.

    estimates: method -> column -> (N,) array; examples: a few rows (one per S/N bin)
    with `index`, `lowres_wave` (L,), `lowres_flux/ivar` (E, L), `hires_truth` (NaN where
    not observed), `lowres_fit_model`, `ceiling_model` and, if the model gave them,
    `sr_mean/sr_std` (E, 320) on the rest-frame TARGET_GRID. provenance["name"] keys the
    set in the report (the instrument, "<instrument>_real" for real sets, made unique by
    `evaluate`); real sets have no line truth (N2, line fluxes, S/N(Hα), M* are NaN).
    """

    directory: str
    instrument: str
    provenance: dict
    truth: dict[str, np.ndarray]
    estimates: dict[str, dict[str, np.ndarray]]
    examples: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        """The set's key in metrics.json and the report."""
        return self.provenance["name"]

    @property
    def line_truth(self) -> bool:
        """Whether true N2 values exist (simulations), i.e. truth-based metrics apply."""
        return self.provenance["line_truth"]

    def write_estimates(self, path: Path) -> Path:
        """One row per object: the truth columns (`true_<field>`) and every method's estimates
        (`<method>_<column>`, e.g. specsr_n2_p50), as a FITS table; provenance in the header."""
        from astropy.table import Table

        columns = {f"true_{k}": np.asarray(v) for k, v in self.truth.items()}
        columns.update({f"{method}_{k}": np.asarray(v) for method, cols in self.estimates.items()
                        for k, v in cols.items()})
        table = Table(columns)
        table.meta.update({"SETNAME": self.name, "INSTRUME": self.instrument,
                           "MODEL": str(self.provenance["model_id"])[-68:], "DATADIR": self.directory[-68:]})
        table.write(path, overwrite=True)
        return path


def predictor_for(model: str, instrument: str, sampler: dict | None = None):
    """The model's predictor for spectra on `instrument`'s grid: plain 'baseline' becomes the
    direct fit on that grid, a Keras run is retargeted (and its sampler changed by `sampler`),
    a SavedModel must match it."""
    predictor = cached_predictor(f"baseline:{instrument}" if model == "baseline" else model)
    retarget = getattr(predictor, "for_instrument", None)
    predictor = retarget(instrument) if retarget is not None else predictor
    if sampler:
        if not hasattr(predictor, "with_sampler"):
            raise ValueError(f"{model}: sampler settings apply to a Keras run or .keras model only")
        predictor = predictor.with_sampler(predictor.sampler.replace(**sampler))
    return predictor


def example_rows(ha_snr, count_per_bin: int = 1) -> np.ndarray:
    """Indices of the first `count_per_bin` objects of each Hα S/N bin, sorted; without any
    S/N (real sets) the first count_per_bin * len(SNR_BINS) objects."""
    rows = np.concatenate([np.flatnonzero(mask)[:count_per_bin]
                           for mask in bin_masks(ha_snr, SNR_BINS).values()])
    if not np.isfinite(ha_snr).any():
        rows = np.arange(min(len(ha_snr), count_per_bin * len(SNR_BINS)))
    return np.sort(rows).astype(int)


def run_held_out_set(directory, model: str, *, set_index: int = 0, max_examples=None,
                     samples: int | None = None, seed: int = 0, batch_size: int = 256,
                     sampler: dict | None = None, withhold=(), reporter: Reporter | None = None) -> HeldOutSet:
    """Run the model and the baselines over (the first max_examples of) one shard directory,
    without the catalogue inputs named in `withhold` (module docstring)."""
    reporter = reporter or Reporter()
    withhold = checked_withhold(withhold)
    manifest = read_manifest(directory)
    if "instrument" not in manifest:
        raise ValueError(f"{Path(directory) / 'manifest.json'}: no instrument recorded")
    instrument = get_instrument(manifest["instrument"])
    predictor = predictor_for(model, instrument.name, sampler)
    samples = resolved_samples(predictor, samples)
    present = set(manifest["fields"])
    truth = load_shards(directory, fields=[f for f in TRUTH_FIELDS if f in present], max_examples=max_examples)
    n = len(truth["z"])
    truth.update({f: np.full(n, np.nan) for f in TRUTH_FIELDS if f not in present})  # e.g. real sets
    if n == 0:
        raise ValueError(f"{directory}: no examples to evaluate")
    examples_at = example_rows(truth["ha_snr"])
    parts: dict[str, list[dict]] = {}
    example_parts = []
    with reporter.task(f"evaluate {instrument.name}", total=n) as advance:
        batches = iter_shard_batches(directory, batch_size, fields=[f for f in SPECTRUM_FIELDS if f in present])
        for number, (start, batch) in enumerate(_first_rows(batches, n)):
            rows = slice(start, start + len(batch["lowres_flux"]))
            truth_rows = {key: value[rows] for key, value in truth.items()}
            local_examples = examples_at[(examples_at >= rows.start) & (examples_at < rows.stop)]
            out = _estimate_batch(batch, truth_rows, instrument, predictor,
                                  chunk_seed(seed, set_index, number), samples,
                                  local_examples - start, withhold)
            for method, columns in out["estimates"].items():
                parts.setdefault(method, []).append(columns)
            if local_examples.size:
                example_parts.append({**out["examples"], "index": local_examples})
            advance(rows.stop - rows.start)
    estimates = {method: {key: np.concatenate([p[key] for p in pieces]) for key in pieces[0]}
                 for method, pieces in parts.items()}
    examples = ({key: np.concatenate([p[key] for p in example_parts]) for key in example_parts[0]}
                if example_parts else {"index": examples_at})
    examples["lowres_wave"] = instrument.wavelength
    kind = manifest.get("kind")
    provenance = {
        "directory": str(directory), "instrument": instrument.name,
        "name": f"{instrument.name}_real" if kind == "real" else instrument.name,
        "kind": kind, "line_truth": bool(np.isfinite(truth["n2"]).any()),
        "seed": manifest.get("seed"),
        "simulator_version": manifest.get("simulator_version"),
        "count_total": manifest["count"], "count_used": n,
        "model_id": predictor.model_id, "model_version": getattr(predictor, "version", None),
        "model_instrument": predictor.instrument, "samples": samples, "withheld": list(withhold),
    }
    return HeldOutSet(str(directory), instrument.name, provenance, truth, estimates, examples)


def _first_rows(batches, n):
    """(start row, batch) pairs covering the first n rows."""
    start = 0
    for batch in batches:
        if start >= n:
            return
        take = min(n - start, len(batch["lowres_flux"]))
        yield start, {key: value[:take] for key, value in batch.items()}
        start += take


def checked_withhold(withhold) -> tuple[str, ...]:
    """The withheld inputs in WITHHOLDABLE order; ValueError naming an unknown one."""
    unknown = sorted(set(withhold) - set(WITHHOLDABLE))
    if unknown:
        raise ValueError(f"cannot withhold {unknown}: choose from {list(WITHHOLDABLE)}")
    return tuple(name for name in WITHHOLDABLE if name in withhold)


def _estimate_batch(batch, truth, instrument, predictor, batch_seed, samples, example_idx, withhold=()):
    """All methods' columns for one batch, and the example rows' spectra and models."""
    flux = np.asarray(batch["lowres_flux"], np.float64)
    ivar = np.where(batch["lowres_mask"], 0.0, np.asarray(batch["lowres_ivar"], np.float64))
    edges, z_prior = instrument.bin_edges, truth["z_prior"]
    image = None if "image" in withhold else batch.get("image")
    mass = np.full(len(z_prior), np.nan) if "mass" in withhold else truth["log_mstar_catalog"]
    rows = _predictor_inputs(flux, ivar, truth, image, mass, instrument, predictor)
    specsr = predictor.predict(rows, samples=samples, seed=batch_seed, save_spectra=bool(example_idx.size))
    lsf = lsf_sigma_rows(rows, instrument.name)  # each object's own LSF (its size)
    fit = direct_lowres_fit(edges, flux, ivar, lsf, z_prior)
    hires_ivar = np.where(batch["hires_mask"], 0.0, batch["hires_ivar"])
    ceiling = ceiling_fit(batch["hires_flux"], hires_ivar, truth["z"], TARGET_GRID.bin_edges,
                          TARGET_GRID.lsf_sigma(TARGET_GRID.wavelength), seed=batch_seed)
    centroid = centroid_redshift_ignoring_nii(edges, flux, ivar, lsf, z_prior)
    population = np.broadcast_to(POPULATION_N2[0], z_prior.shape), np.broadcast_to(POPULATION_N2[1], z_prior.shape)
    priors = {"constant": population}
    if "mass" not in withhold:
        faisst_prior = faisst_catalogue_prior(mass, z_prior, LOG_MSTAR_CATALOG_SCATTER_DEX)
        priors["faisst"] = faisst_prior["n2"], faisst_prior["n2_err"]
    estimates = {
        # Spectra come only with batches holding an example row: kept apart (examples).
        "specsr": {key: np.asarray(value) for key, value in specsr.items() if key not in SPECTRUM_COLUMNS},
        "lowres_fit": gaussian_columns(fit),
        "fit_population": gaussian_columns(fit_times_prior(fit, *population)),
        "ceiling": gaussian_columns(ceiling),
        "centroid": gaussian_columns(centroid, ("z",)),
    }
    if "faisst" in priors:
        estimates["fit_faisst"] = gaussian_columns(fit_times_prior(fit, *priors["faisst"]))
    for name, (n2, n2_err) in priors.items():
        lines = deblend_halpha_with_prior(fit["ha_nii_flux"], fit["ha_nii_flux_err"], n2, n2_err)
        estimates[name] = gaussian_columns({"n2": n2, "n2_err": n2_err, **lines}, ("n2", "ha_flux"))

    def rows_of(result):
        return {key: np.asarray(value)[example_idx] for key, value in result.items()}

    examples = {
        "lowres_flux": flux[example_idx], "lowres_ivar": ivar[example_idx],
        "hires_truth": np.where(batch["hires_mask"], np.nan, batch["hires_flux"])[example_idx],
        "lowres_fit_model": target_grid_model(rows_of(fit))[0],
        "ceiling_model": target_grid_model(rows_of(ceiling))[0],
    }
    examples.update({key: np.asarray(specsr[key])[example_idx] for key in SPECTRUM_COLUMNS if key in specsr})
    return {"estimates": estimates, "examples": examples}


def _predictor_inputs(flux, ivar, truth, image, mass, instrument, predictor) -> dict:
    """The predictor's batch: the spectra (resampled onto its grid if it is another
    instrument's), z prior, source size, catalogue mass (NaN: none) and images (None: none)."""
    if predictor.instrument != instrument.name:
        target = get_instrument(predictor.instrument)
        flux, ivar = resample_flux(instrument.bin_edges, flux, ivar, target.bin_edges)
    n = len(truth["z_prior"])
    rows = {"lowres_flux": flux.astype(np.float32), "lowres_ivar": ivar.astype(np.float32),
            "lowres_mask": ivar <= 0, "z_prior": np.asarray(truth["z_prior"], np.float64),
            "instrument_id": np.full(n, instrument.instrument_id, np.int64),
            "source_sigma_arcsec": np.asarray(truth["dispersion_sigma_arcsec"], np.float64),
            "log_mstar_catalog": np.asarray(mass, np.float64)}
    if image is not None:
        rows.update(image=np.asarray(image, np.float32), has_image=np.ones(n, bool))
    return rows
