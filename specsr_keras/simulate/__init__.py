"""Simulated training data: galaxy population -> image, low-res grism spectrum, R=3600 target.

`simulate_galaxies(n, instrument, seed, **options)` returns the batch fields of
docs/contracts.md as numpy arrays; `SimulationOptions` lists the options.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import sys
from collections.abc import Iterator

import numpy as np

from specsr_keras.data.records import FLUX_UNIT
from specsr_keras.instruments import TARGET_GRID, Instrument, get_instrument
from specsr_keras.simulate.images import render_images
from specsr_keras.simulate.population import SimulationOptions, draw_artefacts, draw_population
from specsr_keras.simulate.spectra import add_artefacts, hires_spectra, line_components, lowres_spectra

__all__ = ["SIMULATOR_VERSION", "TRUTH_FIELDS", "SimulationOptions", "dataset_metadata",
           "iter_simulated_batches", "simulate_galaxies"]

SIMULATOR_VERSION = "2.2.0"
# Galaxies per independently seeded chunk of `iter_simulated_batches`; fixed, so a
# dataset depends only on (n, instrument, seed, options), not on shard size or workers.
CHUNK_SIZE = 1024

# Truth columns (docs/contracts.md) and their dtypes.
TRUTH_FIELDS = {
    "object_id": np.int64, "z": np.float64, "z_prior": np.float64, "log_mstar": np.float64,
    "log_mstar_catalog": np.float64,
    "log_sfr": np.float64, "oh12": np.float64, "n2": np.float64, "sigma_v_kms": np.float64,
    "ha_flux": np.float64, "nii_6585_flux": np.float64, "nii_6550_flux": np.float64,
    "sii_6718_flux": np.float64, "sii_6733_flux": np.float64, "hb_flux": np.float64,
    "oiii_5008_flux": np.float64, "ha_snr": np.float64, "r_eff_arcsec": np.float64,
    "dispersion_sigma_arcsec": np.float64,
    "sersic_n": np.float64, "axis_ratio": np.float64, "av": np.float64, "is_agn": np.bool_,
    "has_broad": np.bool_, "broad_ha_flux": np.float64, "is_contaminated": np.bool_, "has_artefact": np.bool_,
    "off_relation": np.bool_, "ra": np.float64, "dec": np.float64,
}


def _options(options: dict) -> SimulationOptions:
    try:
        return SimulationOptions(**options)
    except TypeError as exc:
        raise ValueError(f"bad simulation option: {exc}") from None


def simulate_galaxies(n: int, instrument: str | Instrument = "euclid_nisp_red", seed=0,
                      **options) -> dict[str, np.ndarray]:
    """Simulate n galaxies observed with `instrument` (name, alias or Instrument).

    seed: int or sequence of ints for np.random.default_rng (same seed, same output).
    options: fields of SimulationOptions (e.g. min_ha_snr=0, continuum=False).
    Returns image (n,64,64,4) f32; lowres_flux/ivar (n,L) f32, lowres_mask (n,L) bool;
    hires_flux/ivar (n,320) f32, hires_mask bool; and the (n,) truth columns.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not isinstance(instrument, Instrument):
        instrument = get_instrument(instrument)
    opts = _options(options)
    rng = np.random.default_rng(seed)
    # Artefacts draw from a child stream, so that switching them changes nothing else.
    artefact_rng = rng.spawn(1)[0]
    pop = draw_population(n, instrument, rng, opts)
    pop.update(draw_artefacts(pop, artefact_rng, opts.artefact_fraction))
    lines = line_components(pop)
    batch = {"image": render_images(pop, lines, rng)}
    batch.update(lowres_spectra(pop, lines, instrument, rng, opts.cosmic_rate, opts.noise_scale))
    add_artefacts(pop, instrument, batch["lowres_flux"], batch["lowres_ivar"])
    batch.update(hires_spectra(pop, lines, opts.hires_snr_factor))
    batch.update({name: pop[name].astype(dtype) for name, dtype in TRUTH_FIELDS.items()})
    return batch


def _simulate_chunk(args):
    count, instrument, seed, index, first_id, options = args
    return simulate_galaxies(count, instrument, (seed, index), first_object_id=first_id, **options)


def iter_simulated_batches(n: int, instrument: str | Instrument = "euclid_nisp_red", seed: int = 0,
                           workers: int = 1, first_object_id: int = 0,
                           **options) -> Iterator[dict[str, np.ndarray]]:
    """Simulate n galaxies as consecutive batches of CHUNK_SIZE (the last may be smaller).

    Chunk k uses the seed (seed, k) and object ids first_object_id + k*CHUNK_SIZE + i, so
    the output is the same for any `workers`; workers > 1 simulates chunks in that many
    processes, keeping at most 2 x workers chunks in flight (bounded memory). A parent that
    loaded TensorFlow/JAX (multithreaded, unsafe to fork) gets its workers from a fork server.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    _options(options)  # fail early on a bad option
    if not isinstance(instrument, Instrument):
        instrument = get_instrument(instrument)
    tasks = ((min(CHUNK_SIZE, n - start), instrument, seed, index, first_object_id + start,
              options)
             for index, start in enumerate(range(0, n, CHUNK_SIZE)))
    if workers <= 1:
        yield from map(_simulate_chunk, tasks)
        return
    threaded = any(name in sys.modules for name in ("tensorflow", "jax", "torch"))
    context = multiprocessing.get_context("forkserver" if threaded else "fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        in_flight = collections.deque()
        for task in tasks:
            in_flight.append(pool.submit(_simulate_chunk, task))
            if len(in_flight) >= 2 * workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def dataset_metadata(instrument: str | Instrument, seed, **options) -> tuple[dict, dict]:
    """(manifest_extra, shard attrs) describing a simulated dataset (docs/contracts.md)."""
    if not isinstance(instrument, Instrument):
        instrument = get_instrument(instrument)
    manifest = {
        "kind": "simulated",
        "instrument": instrument.name,
        "lowres_grid": instrument.describe(),
        "target_grid": TARGET_GRID.describe(),
        "simulator_version": SIMULATOR_VERSION,
        "seed": seed,
        "options": _options(options).to_dict(),
        "flux_unit": FLUX_UNIT.to_string(),
    }
    attrs = {
        "instrument": instrument.name,
        "lowres_wavelength": instrument.wavelength,
        "hires_wavelength_rest": TARGET_GRID.wavelength,
        "flux_unit": FLUX_UNIT.to_string(),
        "simulator_version": SIMULATOR_VERSION,
    }
    return manifest, attrs
