"""Validation of image cutouts read from a catalog (image-only inference and embedding).

`prepare_image_rows(raw, shape)` is the image counterpart of `catalog.prepare_rows`: it
keeps usable cutouts as a batch and quarantines the others with a reason, so every row
read ends in the batch or in the quarantine list. Reasons: missing_value (null cutout),
wrong_image_shape, non_finite_image (more than `MAX_BAD_PIXEL_FRACTION` of the pixels NaN
or inf), blank_image (every pixel equal). A few bad pixels are set to 0 and flagged
BAD_PIXELS_MASKED.
"""

from __future__ import annotations

import numpy as np

from specsr_keras.inference.catalog import Z_PRIOR_RANGE, PreparedRows, RawRows, cell_problem
from specsr_keras.measure.flags import QualityFlag

__all__ = ["MAX_BAD_PIXEL_FRACTION", "prepare_image_rows"]

# Share of NaN/inf pixels above which a cutout is quarantined instead of patched.
MAX_BAD_PIXEL_FRACTION = 0.01


def _image_problem(image, shape: tuple) -> str:
    if image is None:
        return "missing_value: image is null"
    image = np.asarray(image)
    if image.shape != shape:
        return f"wrong_image_shape: {image.shape}, expected {shape}"
    bad = ~np.isfinite(image)
    if bad.mean() > MAX_BAD_PIXEL_FRACTION:
        return f"non_finite_image: {bad.mean():.0%} of the pixels are NaN or inf"
    good = image[~bad]
    if good.size == 0 or np.all(good == good[0]):
        return "blank_image: every pixel has the same value"
    return ""


def prepare_image_rows(raw: RawRows, shape: tuple = (64, 64, 4)) -> PreparedRows:
    """Batch {image (B, H, W, bands) float32 raw units, z_prior, log_mstar_catalog (NaN = none),
    row, object_id, flags}."""
    quarantine = list(raw.rejects)
    n = len(raw.row)
    images = raw.image if raw.image is not None else [None] * n
    keep = []
    for pos in range(n):
        problem = cell_problem(raw, pos) or _image_problem(images[pos], tuple(shape))
        if problem:
            quarantine.append((int(raw.row[pos]), str(raw.object_id[pos]), problem))
        else:
            keep.append(pos)
    keep = np.array(keep, np.int64)
    stacked = (np.stack([np.asarray(images[p], np.float32) for p in keep]) if len(keep)
               else np.zeros((0, *shape), np.float32))
    bad = ~np.isfinite(stacked)
    flags = np.where(bad.reshape(len(keep), -1).any(axis=1),
                     int(QualityFlag.BAD_PIXELS_MASKED), 0).astype(np.int64)
    z_prior = np.asarray(raw.z_prior if raw.z_prior is not None else np.full(n, np.nan),
                         np.float64)[keep]
    invalid = ~np.isnan(z_prior) & ~((z_prior >= Z_PRIOR_RANGE[0]) & (z_prior <= Z_PRIOR_RANGE[1]))
    flags[invalid] |= QualityFlag.Z_PRIOR_INVALID
    mass = np.asarray(raw.log_mstar_catalog if raw.log_mstar_catalog is not None else np.full(n, np.nan),
                      np.float64)[keep]
    batch = {"image": np.where(bad, 0.0, stacked).astype(np.float32),
             "z_prior": np.where(invalid, np.nan, z_prior), "log_mstar_catalog": mass,
             "row": raw.row[keep], "object_id": raw.object_id[keep], "flags": flags}
    return PreparedRows(batch, sorted(quarantine, key=lambda entry: entry[0]))
