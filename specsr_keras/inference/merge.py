"""Merge the chunk files of a finished `specsr infer` run into results.fits and quarantine.fits.

Chunks are concatenated in index order (rows keep the catalog order), streamed one chunk
at a time into the output, so the merge runs in memory independent of the catalog size.
The FITS headers carry the provenance: software and model version, input, config and the
meaning of the quality-flag bits (cards FLAG<bit>).

results.fits: object_id (str), row (input row; file index in directory mode),
ha_flux_p2_5/p16/p50/p84/p97_5 and nii_6585_flux_* [1e-17 erg s^-1 cm^-2], n2_* =
log10([NII]6585/Hα) [dex], z_*, the predictor's score columns (`reconstruction_chi2` of a
model or `fit_chi2_dof` of the direct fit; `broad_line_dchi2`, `broad_line_fwhm_kms` [km/s],
`broad_line_p` of the broad-Hα test, `narrow_model_p` of the narrow-line model's χ²,
their combined false-positive rate `anomaly_fpr` and the spectrum's `noise_scale` (pixel
scatter / the ivar's sigma), `measure.broadline`; `sample_spread` for spectra
generated from images), flags (QualityFlag bits,
docs/scale-out.md) and, with --save-spectra, sr_mean and sr_std (320,)
[1e-17 erg s^-1 cm^-2 Å^-1] on the rest-frame TARGET_GRID placed at sr_z_place (observed
wavelength = rest x (1 + sr_z_place)).
quarantine.fits: row, object_id, reason ("code: detail").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from specsr_keras.data.fits_table import FitsTableWriter
from specsr_keras.inference.manifest import QUARANTINE_NAME, RESULTS_NAME, Manifest, chunk_path
from specsr_keras.inference.predictors import WINDOW_COLUMNS
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.reporting import Reporter
from specsr_keras.schema import PERCENTILES, QUANTITIES, QUANTITY_UNITS
from specsr_keras.units import DEX, FLUX

__all__ = ["RESULT_UNITS", "merge_run"]

# FITS TUNIT of the result columns (FITS has no dex: N2 is described in the header instead).
RESULT_UNITS = {
    **{f"{q}_{p}": QUANTITY_UNITS[q] for q in QUANTITIES for p in PERCENTILES if QUANTITY_UNITS[q] not in ("", DEX)},
    **{name: FLUX for name in WINDOW_COLUMNS},
}


def provenance_header(manifest: Manifest, extname: str) -> dict:
    """FITS cards describing how a merged table was made."""
    identity = manifest.data["identity"]
    model, config = identity["model"], identity["config"]
    header = {
        "EXTNAME": extname,
        "SPECSRV": manifest.data["specsr_version"],
        "MODEL": model["id"],
        "MODELVER": str(model.get("version")),
        "MODELARG": model["argument"],
        "INSTRUME": model["instrument"],
        "INPUT": identity["input"]["path"],
        "SEED": config["seed"],
        "SAMPLES": config["samples"],
        "CHUNKROW": config["chunk_rows"],
    }
    header.update({f"FLAG{flag.value.bit_length() - 1}": flag.name for flag in QualityFlag})
    return header


def merge_run(run_dir, reporter: Reporter | None = None, verify: bool = True) -> dict:
    """Write RUN/results.fits and RUN/quarantine.fits from the chunk files.

    Earlier merged files are removed first, so a failed merge leaves none beside the chunks.
    Raises ValueError if run_dir has no manifest, some chunks are not finished, or (verify:
    `specsr infer` itself checked them at its start or just wrote them) a chunk file is
    missing or differs from its manifest checksum (naming the file). Returns
    {"results", "quarantine": paths, "rows_results", "rows_quarantine", "rows_duplicate_id",
    "rows_amplitude_ignored"} (result rows flagged DUPLICATE_ID, AMPLITUDE_IGNORED).
    """
    run_dir, reporter = Path(run_dir), reporter or Reporter()
    manifest = Manifest.load(run_dir)
    if manifest is None:
        raise ValueError(f"{run_dir}: no manifest.json; run `specsr infer` into it first")
    missing = [i for i in range(manifest.n_chunks) if i not in manifest.done]
    if missing:
        raise ValueError(f"{run_dir}: {len(missing)} of {manifest.n_chunks} chunks are not "
                         "finished; rerun the same infer command to complete them")
    for name in (RESULTS_NAME, QUARANTINE_NAME):
        (run_dir / name).unlink(missing_ok=True)
    damaged = manifest.damaged_chunks() if verify else {}
    if damaged:
        raise ValueError(f"{next(iter(damaged.values()))}; rerun the same infer command "
                         "to recompute damaged chunks")
    files = [chunk_path(run_dir, index) for index in range(manifest.n_chunks)]
    duplicates = duplicate_ids(files)
    merged = {"rows_duplicate_id": 0, "rows_amplitude_ignored": 0}

    def flag_rows(rows: dict) -> dict:
        repeated = np.isin(np.char.encode(np.asarray(rows["object_id"], str), "utf-8"), duplicates)
        merged["rows_duplicate_id"] += int(repeated.sum())
        merged["rows_amplitude_ignored"] += int(np.count_nonzero(rows["flags"] & QualityFlag.AMPLITUDE_IGNORED))
        return {**rows, "flags": np.where(repeated, rows["flags"] | QualityFlag.DUPLICATE_ID, rows["flags"])}

    for extname, name, key, transform in (("RESULTS", RESULTS_NAME, "results", flag_rows),
                                          ("QUARANTINE", QUARANTINE_NAME, "quarantine", None)):
        path = run_dir / name
        merged[f"rows_{key}"] = _merge_extension(files, extname, path,
                                                 provenance_header(manifest, extname), reporter, transform)
        merged[key] = str(path)
    manifest.record_merge({key: merged[key] for key in merged if key.startswith("rows_")})
    return merged


def duplicate_ids(files) -> np.ndarray:
    """Sorted object_ids (UTF-8 bytes) that occur more than once over the results and
    quarantine of all chunk files (one column in memory: ~20 bytes per row)."""
    ids = []
    for path in files:
        with fits.open(path, memmap=True) as hdul:
            ids.extend(np.char.encode(np.asarray(hdul[ext].data["object_id"], str), "utf-8")
                       for ext in ("RESULTS", "QUARANTINE"))
    values, counts = np.unique(np.concatenate(ids) if ids else np.zeros(0, "S1"), return_counts=True)
    return values[counts > 1]


def _string_width(tform: str) -> int:
    match = re.fullmatch(r"\s*(\d*)A\s*", tform)
    return int(match.group(1) or 1) if match else 0


def _merge_extension(files, extname: str, out_path: Path, header: dict,
                     reporter: Reporter, transform=None) -> int:
    """Concatenate HDU `extname` of `files` into out_path, each chunk's rows (a dict of
    columns) through `transform` if given; returns the row count."""
    headers = [fits.getheader(path, extname) for path in files]
    total = sum(h["NAXIS2"] for h in headers)
    first = Table.read(files[0], hdu=extname)
    dtype = first.as_array().dtype
    fields = []
    for index, name in enumerate(dtype.names, start=1):
        base = dtype[name].base
        if base.kind in "SU":
            width = max(max(_string_width(h[f"TFORM{index}"]) for h in headers), 1)
            base = f"U{width}"
        fields.append((name, base, dtype[name].shape))
    units = {name: str(first[name].unit) for name in first.colnames if first[name].unit}
    with FitsTableWriter(out_path, fields, total, header=header, units=units) as writer, \
            reporter.task(f"merge {out_path.name}", total) as advance:
        for path in files:
            with fits.open(path, memmap=True) as hdul:
                data = hdul[extname].data
                rows = {name: data[name] for name in dtype.names}
                writer.write(transform(rows) if transform else rows)
                advance(len(data))
    return total
