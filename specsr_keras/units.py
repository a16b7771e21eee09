"""Units of specsr's arrays and tables, spelled once (astropy units and their text form).

Inside arrays: wavelengths in Å (vacuum), flux densities in FLUX_UNIT, inverse variances in
IVAR_UNIT, line fluxes in LINE_FLUX_UNIT, N2 = log10([NII]6585/Hα) in dex, redshift
dimensionless. Text forms are astropy's generic format, which FITS TUNIT and JSON carry.
"""

from __future__ import annotations

import astropy.units as u

FLUX_UNIT = u.CompositeUnit(1e-17, [u.erg, u.s, u.cm, u.AA], [1, -1, -2, -1])
IVAR_UNIT = FLUX_UNIT**-2
LINE_FLUX_UNIT = u.CompositeUnit(1e-17, [u.erg, u.s, u.cm], [1, -1, -2])
WAVELENGTH_UNIT = u.AA

FLUX = FLUX_UNIT.to_string()
IVAR = IVAR_UNIT.to_string()
LINE_FLUX = LINE_FLUX_UNIT.to_string()
DEX = "dex"
