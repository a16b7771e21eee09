"""The per-object result schema of specsr: measured quantities, percentiles and their units.

Plain data (no Keras), shared by the column builder (`measure.columns`), the SavedModel
signatures, the result tables and the REST client.
"""

from __future__ import annotations

from specsr_keras.units import DEX, LINE_FLUX

# Quantities measured per object: Hα and [NII]6585 fluxes, N2 = log10([NII]6585/Hα), redshift.
QUANTITIES = ("ha_flux", "nii_6585_flux", "n2", "z")
QUANTITY_UNITS = {"ha_flux": LINE_FLUX, "nii_6585_flux": LINE_FLUX, "n2": DEX, "z": ""}
# Reported percentiles [%]: the median and the 68 % and 95 % central intervals.
PERCENTILES = {"p2_5": 2.5, "p16": 16.0, "p50": 50.0, "p84": 84.0, "p97_5": 97.5}


def percentile_columns() -> tuple[str, ...]:
    """`<quantity>_<percentile>` for every quantity and percentile."""
    return tuple(f"{q}_{p}" for q in QUANTITIES for p in PERCENTILES)
