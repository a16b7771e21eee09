"""Quality flags of `specsr infer` results: one int bitmask per object (column `flags`).

Bits 0-7, 11, 13 and 14 come from the predictor (fit, redshift and data quality), bits 8-10 from
reading and validating the catalog row, bit 12 from the merge (the whole catalogue). A
flagged row still has results; a row that cannot be used at all goes to the quarantine
table instead. docs/scale-out.md has the table of flags and quarantine reasons.
"""

from __future__ import annotations

import enum


class QualityFlag(enum.IntFlag):
    """Bits of the `flags` column."""

    FIT_FAILED = 1 << 0  # the line fit did not converge or had no pixels: values are NaN
    Z_FROM_SPECTRUM = 1 << 1  # no usable z prior: redshift scanned from the spectrum
    Z_SCAN_FAILED = 1 << 2  # the redshift scan found no Hα + [NII] blend
    LOW_HA_SNR = 1 << 3  # Hα flux / error < 3
    N2_AT_BOUND = 1 << 4  # N2 clipped to the prior range ([NII] or Hα at 0)
    POOR_FIT = 1 << 5  # reduced chi2 > 3
    NO_FLUX_SCALE = 1 << 6  # image-only generation: fluxes in units of the object's spectrum scale
    NO_Z_PRIOR = 1 << 7  # image-only generation without a z prior: window at rest, z is NaN
    RESAMPLED = 1 << 8  # the input spectrum was resampled onto the model grid
    BAD_PIXELS_MASKED = 1 << 9  # NaN/inf flux or non-positive ivar pixels were masked
    Z_PRIOR_INVALID = 1 << 10  # the catalog z prior was inf or out of range: ignored
    LINE_NOT_COVERED = 1 << 11  # no unmasked pixel observes Hα + [NII]: the estimate is the prior alone
    DUPLICATE_ID = 1 << 12  # another row of the catalogue has the same object_id
    AMPLITUDE_IGNORED = 1 << 13  # flux or image level outside the model's training range (units?): not used
    NOISE_UNDERSTATED = 1 << 14  # pixels scatter clearly more than the ivar says: errors too small (unless noise_check)


def describe_flags() -> str:
    """One line per bit: "value NAME", for FITS headers and docs."""
    return "; ".join(f"{flag.value} {flag.name}" for flag in QualityFlag)
