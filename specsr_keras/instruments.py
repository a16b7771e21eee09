"""Instrument registry: wavelength grids, line-spread functions (LSF) and noise models.

Wavelengths in Å (vacuum, observed frame unless a grid says "rest"); flux densities in
1e-17 erg s^-1 cm^-2 Å^-1; line fluxes in 1e-17 erg s^-1 cm^-2. Numbers that docs/science.md
marks unconfirmed are named constants with their source.

LSF model. A slit spectrograph (MOSFIRE) has a fixed resolving power R = λ/FWHM, set by
the slit. A slitless grism has no slit: the spectrum is the source image dispersed, so the
LSF is the PSF projected on the dispersion axis (a constant width in Å, hence R ∝ λ)
convolved with the source's own light profile along the dispersion direction:

    sigma_eff² = sigma_psf² + (source_sigma_arcsec / pixel_scale_arcsec * dispersion)²

with sigma_psf in Å and `source_sigma_arcsec` the Gaussian sigma of the source profile
along the dispersion axis (see `dispersion_axis_sigma`). This is the standard slitless
picture (e.g. Brammer et al. 2012, ApJS 200, 13 for 3D-HST; Euclid Collaboration:
Jahnke et al. 2024 for NISP), with Gaussian profiles so that widths add in quadrature.

Noise model, per pixel of the instrument grid (variance of the flux density):

    var = B² x(s) + f_sky B² max(f, 0) / F_bg

B: background noise (sky + read noise) per pixel for a point source, calibrated so that
an unresolved line of the instrument's quoted limiting flux reaches the quoted S/N with
matched-filter (optimal) extraction; x(s) = sqrt(1 + (s / psf_sigma_arcsec)²): the
optimal-extraction aperture grows with the source size s, and with it the background it
collects; f_sky: the fraction of B² that is sky (the rest is read noise); F_bg: the sky in
the extraction aperture expressed as an equivalent source flux density, so the last term
is the source's (line + continuum) own photon noise. Not modelled: OH sky lines (MOSFIRE),
throughput variations across the band, correlated noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from specsr_keras.physics import FWHM_PER_SIGMA

# Gaussian sigma / half-light radius of a 2-D circular Gaussian: r_half = sqrt(2 ln 2) sigma.
_HALF_LIGHT_PER_SIGMA = np.sqrt(2.0 * np.log(2.0))
# Matched-filter S/N of a Gaussian line (flux F, sigma s [Å]) on pixels of width d [Å]
# with per-pixel noise n: S/N = F / (n sqrt(2 sqrt(pi) s d)).
_MATCHED_FILTER_FACTOR = 2.0 * np.sqrt(np.pi)
# Zodiacal-light surface brightness near 1.5 µm at moderate ecliptic latitude
# [AB mag / arcsec²] (Aldering 2001, LBNL-51157; unconfirmed, varies by ~1 mag).
ZODI_AB_MAG_ARCSEC2 = 22.5
# Keck/MOSFIRE H-band sky between and over OH lines, averaged [AB mag / arcsec²]
# (Maunakea sky ~15.5 Vega mag/arcsec² in H with OH lines; interline ~2 mag fainter;
# unconfirmed effective value).
MAUNAKEA_SKY_AB_MAG_ARCSEC2 = 16.5
# Optimal extraction spans about two PSF FWHM across the trace.
_EXTRACTION_FWHM = 2.0


@dataclass(frozen=True, eq=False)
class WavelengthGrid:
    """Fixed pixel grid: `bin_edges` (L+1,) [Å], `frame` "observed" or "rest"."""

    name: str
    bin_edges: np.ndarray
    frame: str = "observed"
    spacing: str = "linear"
    resolving_power: float | None = None

    def __post_init__(self):
        edges = np.array(self.bin_edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"grid {self.name}: bin_edges must be 1-D and increasing")
        edges.flags.writeable = False
        object.__setattr__(self, "bin_edges", edges)

    @property
    def wavelength(self) -> np.ndarray:
        """Pixel centres (L,) [Å]: midpoints of the bin edges."""
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])

    @property
    def n_pixels(self) -> int:
        return self.bin_edges.size - 1

    def lsf_sigma(self, wave):
        """Gaussian LSF sigma [Å] at `wave` for the grid's fixed resolving power."""
        if self.resolving_power is None:
            raise ValueError(f"grid {self.name} has no resolving power")
        return np.asarray(wave, float) / (FWHM_PER_SIGMA * self.resolving_power)

    def describe(self) -> dict:
        """JSON-ready summary for manifests."""
        return {
            "name": self.name,
            "frame": self.frame,
            "spacing": self.spacing,
            "n_pixels": self.n_pixels,
            "wave_min": float(self.bin_edges[0]),
            "wave_max": float(self.bin_edges[-1]),
            "resolving_power": self.resolving_power,
            "unit": "Angstrom (vacuum)",
        }


def linear_grid(name, start, stop, step, frame="observed", resolving_power=None):
    """Grid of equal `step` [Å] pixels from `start`, as many as fit below `stop`."""
    n_pixels = int(np.floor((stop - start) / step + 1e-9))
    return WavelengthGrid(name, start + step * np.arange(n_pixels + 1), frame, "linear",
                          resolving_power)


def log_grid(name, start, stop, n_pixels, frame="observed", resolving_power=None):
    """Grid of `n_pixels` log-uniform pixels spanning [start, stop] [Å]."""
    return WavelengthGrid(name, np.geomspace(start, stop, n_pixels + 1), frame, "log",
                          resolving_power)


@dataclass(frozen=True)
class LineLimit:
    """Quoted sensitivity: a line of `flux` [1e-17 erg/s/cm²] reaches S/N `snr` at `wave` [Å]
    for a source of Gaussian sigma `source_sigma_arcsec` (0 = point source)."""

    flux: float
    snr: float
    wave: float
    source_sigma_arcsec: float = 0.0


@dataclass(frozen=True, eq=False)
class Instrument:
    """An instrument: grid, LSF (see module docstring) and per-pixel noise model.

    kind: "slitless" (LSF width constant in Å, broadened by source size) or "slit"
    (constant R). `resolving_power_ref` is R at `resolving_power_wave` [Å] for a source
    of Gaussian sigma `resolving_power_source_sigma` [arcsec] along the dispersion.
    """

    name: str
    instrument_id: int
    kind: str
    wave_min: float
    wave_max: float
    dispersion: float  # Å / pixel
    pixel_scale_arcsec: float  # arcsec / pixel along the dispersion
    resolving_power_ref: float
    resolving_power_wave: float
    line_limit: LineLimit
    sky_ab_mag_arcsec2: float
    sky_variance_fraction: float  # of the background variance; the rest is read noise
    source: str
    resolving_power_source_sigma: float = 0.0
    seeing_fwhm_arcsec: float | None = None  # slit instruments only
    slit_width_arcsec: float | None = None  # slit instruments only
    grid: WavelengthGrid = field(init=False)
    _psf_lsf_sigma: float = field(init=False, repr=False)  # Å, slitless
    _background_sigma: float = field(init=False, repr=False)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "grid", linear_grid(self.name, self.wave_min, self.wave_max, self.dispersion))
        if self.kind not in ("slitless", "slit"):
            raise ValueError(f"{self.name}: kind must be 'slitless' or 'slit'")
        sigma_ref = self.resolving_power_wave / (FWHM_PER_SIGMA * self.resolving_power_ref)
        size_term = self._size_sigma_angstrom(self.resolving_power_source_sigma)
        set_(self, "_psf_lsf_sigma", float(np.sqrt(sigma_ref**2 - size_term**2)))
        limit = self.line_limit
        snr_at_unit_noise = self.line_snr(limit.flux, limit.wave, 0.0, limit.source_sigma_arcsec,
                                          background_sigma=1.0)
        set_(self, "_background_sigma", float(snr_at_unit_noise / limit.snr))

    # --- grid -------------------------------------------------------------------------
    @property
    def wavelength(self) -> np.ndarray:
        """Pixel centres (L,) [Å]."""
        return self.grid.wavelength

    @property
    def bin_edges(self) -> np.ndarray:
        """Pixel edges (L+1,) [Å]."""
        return self.grid.bin_edges

    # --- LSF --------------------------------------------------------------------------
    def _size_sigma_angstrom(self, source_sigma_arcsec):
        return np.asarray(source_sigma_arcsec, float) / self.pixel_scale_arcsec * self.dispersion

    def lsf_sigma(self, wave, source_size_arcsec=None):
        """Gaussian LSF sigma [Å] at `wave` [Å].

        `source_size_arcsec`: Gaussian sigma of the source along the dispersion [arcsec]
        (None = point source), broadcast against `wave`; ignored by slit instruments.
        """
        wave = np.asarray(wave, float)
        if self.kind == "slit":
            return wave / (FWHM_PER_SIGMA * self.resolving_power_ref)
        size = 0.0 if source_size_arcsec is None else source_size_arcsec
        sigma = np.sqrt(self._psf_lsf_sigma**2 + self._size_sigma_angstrom(size) ** 2)
        return sigma * np.ones_like(wave)  # constant in wavelength

    def resolving_power(self, wave, source_size_arcsec=None):
        """R = λ / FWHM at `wave` [Å] (point source unless `source_size_arcsec` is given)."""
        return np.asarray(wave, float) / (FWHM_PER_SIGMA * self.lsf_sigma(wave, source_size_arcsec))

    @property
    def psf_sigma_arcsec(self) -> float:
        """Spatial PSF sigma [arcsec]: seeing for a slit, the LSF's PSF term for a grism."""
        if self.kind == "slit":
            return self.seeing_fwhm_arcsec / FWHM_PER_SIGMA
        return self._psf_lsf_sigma / self.dispersion * self.pixel_scale_arcsec

    # --- noise ------------------------------------------------------------------------
    def extraction_factor(self, source_size_arcsec=None):
        """Growth of the optimal-extraction aperture (and its background) with source size."""
        size = 0.0 if source_size_arcsec is None else np.asarray(source_size_arcsec, float)
        return np.sqrt(1.0 + (size / self.psf_sigma_arcsec) ** 2)

    @property
    def background_flux(self) -> float:
        """Sky in the extraction aperture as an equivalent flux density [1e-17 erg/s/cm²/Å]."""
        sky = sky_flux_density(self.sky_ab_mag_arcsec2, self.line_limit.wave)  # per arcsec²
        height = _EXTRACTION_FWHM * FWHM_PER_SIGMA * self.psf_sigma_arcsec
        if self.kind == "slit":
            return sky * self.slit_width_arcsec * height
        # Slitless: every pixel sees the sky of the whole band, dispersed.
        band_pixels = (self.wave_max - self.wave_min) / self.dispersion
        return sky * self.pixel_scale_arcsec * height * band_pixels

    def noise_sigma(self, flux=0.0, source_size_arcsec=None):
        """Per-pixel noise sigma [1e-17 erg/s/cm²/Å] for model flux density `flux` (...,).

        Background (sky + read) scaled by the extraction aperture, plus the source's own
        photon noise; see the module docstring. Broadcasts `flux` with the source size.
        """
        background_var = self._background_sigma**2 * self.extraction_factor(source_size_arcsec)
        source_var = (self.sky_variance_fraction * self._background_sigma**2
                      * np.maximum(flux, 0.0) / self.background_flux)
        return np.sqrt(background_var + source_var)

    def line_snr(self, line_flux, wave, line_sigma_angstrom=0.0, source_size_arcsec=None,
                 background_sigma=None):
        """Expected matched-filter S/N of a Gaussian line, background-limited.

        line_flux [1e-17 erg/s/cm²], observed `wave` [Å], intrinsic line sigma [Å];
        the LSF (with source size) is added in quadrature. All arguments broadcast.
        """
        total_sigma = np.sqrt(self.lsf_sigma(wave, source_size_arcsec) ** 2
                              + np.asarray(line_sigma_angstrom, float) ** 2)
        if background_sigma is None:
            background_sigma = self._background_sigma
        noise = background_sigma * np.sqrt(self.extraction_factor(source_size_arcsec))
        return np.asarray(line_flux, float) / (
            noise * np.sqrt(_MATCHED_FILTER_FACTOR * total_sigma * self.dispersion))

    def describe(self) -> dict:
        """JSON-ready summary of the grid and instrument for manifests."""
        return {**self.grid.describe(), "instrument": self.name,
                "instrument_id": self.instrument_id, "kind": self.kind,
                "dispersion": self.dispersion, "source": self.source}


def sky_flux_density(ab_mag_arcsec2, wave):
    """Sky AB mag/arcsec² -> f_λ [1e-17 erg/s/cm²/Å per arcsec²] at `wave` [Å]."""
    f_nu = 10.0 ** (-0.4 * (np.asarray(ab_mag_arcsec2, float) + 48.6))  # erg/s/cm²/Hz
    return f_nu * 2.99792458e18 / np.asarray(wave, float) ** 2 / 1e-17


def dispersion_axis_sigma(r_eff_arcsec, axis_ratio=1.0, position_angle_rad=0.0):
    """Gaussian sigma [arcsec] of a source along the dispersion (x) axis.

    The source is approximated by an elliptical Gaussian with the same half-light
    semi-major axis `r_eff_arcsec`, axis ratio b/a and major-axis angle from the
    dispersion direction; its projected sigma is
    sigma_major sqrt(cos² PA + q² sin² PA).
    """
    sigma_major = np.asarray(r_eff_arcsec, float) / _HALF_LIGHT_PER_SIGMA
    pa = np.asarray(position_angle_rad, float)
    q = np.asarray(axis_ratio, float)
    return sigma_major * np.sqrt(np.cos(pa) ** 2 + (q * np.sin(pa)) ** 2)


def _mosfire(name, instrument_id, wave_min, wave_max, dispersion, resolving_power):
    # Keck/MOSFIRE (McLean et al. 2012, SPIE 8446): 0.1798"/px, 0.7" slit; R and Å/px per
    # band from docs/science.md; band ranges from the MOSFIRE filter set (Keck web pages).
    return Instrument(
        name=name, instrument_id=instrument_id, kind="slit", wave_min=wave_min,
        wave_max=wave_max, dispersion=dispersion, pixel_scale_arcsec=0.1798,
        resolving_power_ref=resolving_power, resolving_power_wave=0.5 * (wave_min + wave_max),
        line_limit=LineLimit(MOSFIRE_LINE_LIMIT_3SIGMA, 3.0, 0.5 * (wave_min + wave_max)),
        sky_ab_mag_arcsec2=MAUNAKEA_SKY_AB_MAG_ARCSEC2, sky_variance_fraction=0.9,
        seeing_fwhm_arcsec=MOSFIRE_SEEING_FWHM_ARCSEC, slit_width_arcsec=0.7,
        source="Keck/MOSFIRE, McLean et al. 2012 (SPIE 8446); "
               "MOSDEF, Kriek et al. 2015 (ApJS 218, 15)",
    )


# HST WFC3/IR G141 as in 3D-HST (Brammer et al. 2012; Momcheva et al. 2016, ApJS 225, 27):
# 46.5 Å/px, R~130 at 1.4 µm for a point source, 0.128"/px (native WFC3/IR), 3-sigma
# point-source line limit 1.5e-17 erg/s/cm² (Momcheva et al. 2016, abstract).
G141_LINE_LIMIT_3SIGMA = 1.5
# Euclid NISP red grism (Q1): 13.7 Å/px (docs/science.md: unconfirmed, 13.4-13.7), 0.3"/px,
# R~450 for a 0.5"-diameter source (unconfirmed, >= 380), taken as a Gaussian of
# FWHM 0.5" at 1.55 µm; 3.5-sigma line limit 2e-16 erg/s/cm² (docs/science.md), here for a
# point source as asked of this model.
EUCLID_DISPERSION = 13.7
EUCLID_RESOLVING_POWER = 450.0
EUCLID_LINE_LIMIT_3P5SIGMA = 20.0
# Roman WFI grism: ~10.8 Å/px (unconfirmed), R = 461 λ/µm (point source), 0.11"/px; Hα
# limit 1e-16 erg/s/cm² at 6.5 sigma for a source of r_eff = 0.3" (Wang et al. 2022,
# ApJ 928, 1; unconfirmed).
ROMAN_DISPERSION = 10.8
ROMAN_LINE_LIMIT_6P5SIGMA = 10.0
# MOSFIRE: MOSDEF-like 2 h depth, 3-sigma line limit ~2e-18 erg/s/cm² (unconfirmed) and
# typical seeing 0.6" FWHM (Kriek et al. 2015).
MOSFIRE_LINE_LIMIT_3SIGMA = 0.2
MOSFIRE_SEEING_FWHM_ARCSEC = 0.6

_INSTRUMENTS = (
    Instrument(
        name="hst_g141", instrument_id=0, kind="slitless", wave_min=10750.0, wave_max=17000.0,
        dispersion=46.5, pixel_scale_arcsec=0.128, resolving_power_ref=130.0,
        resolving_power_wave=14000.0,
        line_limit=LineLimit(G141_LINE_LIMIT_3SIGMA, 3.0, 14000.0),
        sky_ab_mag_arcsec2=ZODI_AB_MAG_ARCSEC2, sky_variance_fraction=0.8,
        source="HST WFC3 G141, 3D-HST: Brammer et al. 2012 (ApJS 200, 13), "
               "Momcheva et al. 2016 (ApJS 225, 27)",
    ),
    Instrument(
        name="euclid_nisp_red", instrument_id=1, kind="slitless", wave_min=12060.0,
        wave_max=18920.0, dispersion=EUCLID_DISPERSION, pixel_scale_arcsec=0.3,
        resolving_power_ref=EUCLID_RESOLVING_POWER, resolving_power_wave=15500.0,
        resolving_power_source_sigma=0.5 / FWHM_PER_SIGMA,
        line_limit=LineLimit(EUCLID_LINE_LIMIT_3P5SIGMA, 3.5, 15500.0),
        sky_ab_mag_arcsec2=ZODI_AB_MAG_ARCSEC2, sky_variance_fraction=0.8,
        source="Euclid NISP red grism (Q1): Euclid Collaboration, Jahnke et al. 2024; "
               "Mellier et al. 2024",
    ),
    Instrument(
        name="roman_grism", instrument_id=2, kind="slitless", wave_min=10000.0, wave_max=19300.0,
        dispersion=ROMAN_DISPERSION, pixel_scale_arcsec=0.11, resolving_power_ref=461.0,
        resolving_power_wave=10000.0,
        line_limit=LineLimit(ROMAN_LINE_LIMIT_6P5SIGMA, 6.5, 15000.0, 0.3 / _HALF_LIGHT_PER_SIGMA),
        sky_ab_mag_arcsec2=ZODI_AB_MAG_ARCSEC2, sky_variance_fraction=0.8,
        source="Roman WFI grism: Spergel et al. 2015 (arXiv:1503.03757); "
               "Wang et al. 2022 (ApJ 928, 1)",
    ),
    _mosfire("mosfire_j", 3, 11530.0, 13520.0, 1.30, 3310.0),
    _mosfire("mosfire_h", 4, 14680.0, 18040.0, 1.63, 3660.0),
    _mosfire("mosfire_k", 5, 19540.0, 23970.0, 2.17, 3620.0),
)

INSTRUMENT_NAMES = tuple(instrument.name for instrument in _INSTRUMENTS)
INSTRUMENTS = {instrument.name: instrument for instrument in _INSTRUMENTS}
INSTRUMENT_ALIASES = {
    "euclid": "euclid_nisp_red", "nisp": "euclid_nisp_red",
    "g141": "hst_g141", "3dhst": "hst_g141", "3d-hst": "hst_g141", "hst": "hst_g141",
    "roman": "roman_grism",
}

# Super-resolution target: rest-frame Hα+[NII]+[SII] window at MOSFIRE-like R = 3600
# (docs/contracts.md).
TARGET_GRID = linear_grid("target_halpha_rest", 6460.0, 6780.0, 1.0, frame="rest",
                          resolving_power=3600.0)
# Common grid of the spectrum encoder: 512 log-uniform pixels over 1.00-1.94 µm observed.
ENCODER_GRID = log_grid("encoder_log512", 10000.0, 19400.0, 512)


def resolve_instrument_name(name: str) -> str:
    """Canonical instrument name for a name or alias (case-insensitive)."""
    key = name.strip().lower()
    key = INSTRUMENT_ALIASES.get(key, key)
    if key not in INSTRUMENTS:
        known = ", ".join(INSTRUMENT_NAMES + tuple(INSTRUMENT_ALIASES))
        raise ValueError(f"unknown instrument {name!r}; known: {known}")
    return key


def get_instrument(name: str) -> Instrument:
    """The registered `Instrument` for a name or alias (ValueError if unknown)."""
    return INSTRUMENTS[resolve_instrument_name(name)]


def instrument_with_id(instrument_id: int) -> Instrument:
    """The registered `Instrument` whose `instrument_id` (a model input) this is (ValueError if none)."""
    for instrument in _INSTRUMENTS:
        if instrument.instrument_id == int(instrument_id):
            return instrument
    raise ValueError(f"no instrument has id {instrument_id}; known: "
                     f"{ {i.name: i.instrument_id for i in _INSTRUMENTS} }")
