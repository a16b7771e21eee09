"""Galaxy population: stellar mass, redshift, star formation, dust, lines, sizes, oddities.

Every draw is vectorised over galaxies. Line fluxes are observed (dust-attenuated) in
1e-17 erg s^-1 cm^-2; wavelengths in Å; sizes in arcsec. Published relations live in
`specsr_keras.physics`; the simulator's own (unconfirmed) choices are the constants below.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from specsr_keras import physics
from specsr_keras.instruments import TARGET_GRID, Instrument, dispersion_axis_sigma

# Star-forming stellar mass function: Schechter in log M* (Tomczak et al. 2014, ApJ 783, 85,
# star-forming, 1.5 < z < 2; unconfirmed round values).
SMF_LOG_MSTAR = 10.7
SMF_ALPHA = -1.3
# Scatter of the star-forming main sequence [dex] (Speagle et al. 2014).
MS_SCATTER_DEX = 0.2
# Fundamental-metallicity-relation-like term: dN2 = -FMR_N2_SLOPE * (log SFR - <log SFR>_MS)
# (Mannucci et al. 2010 μ0.32 with an MZR slope ~0.3 dex/dex and PP04; unconfirmed).
FMR_N2_SLOPE = 0.2
# Star-forming N2 saturates smoothly below this value (top of the Faisst inversion grid).
N2_STAR_FORMING_CAP = -0.1
# Star formers outside the fitted relations (unconfirmed choices): galaxies like those of the
# local universe at the same mass (SDSS star formers and composites reach N2 ~ 0), metal-poor
# dwarfs, and spectra dominated by diffuse ionised gas or shocks. Their N2 is drawn flat in
# OFF_RELATION_N2_RANGE whatever their mass, and their rest EW(Hα) is offset by a flat draw
# in OFF_RELATION_EW_OFFSET_DEX (older, continuum-rich galaxies as well as starbursts).
# Without them a model trained on the relations follows its prior where real galaxies do not.
OFF_RELATION_N2_RANGE = (-1.4, 0.0)
OFF_RELATION_EW_OFFSET_DEX = (-0.5, 0.2)
# Scatter of A_Hα about Garn & Best 2010 [mag].
A_HALPHA_SCATTER_MAG = 0.28
# Gas velocity dispersion, Faber-Jackson-like: sigma = SIGMA_V_AT_1E10 (M*/1e10)^SLOPE
# (integrated gas dispersions, e.g. Bezanson et al. 2018; unconfirmed).
SIGMA_V_AT_1E10_KMS = 80.0
SIGMA_V_MASS_SLOPE = 0.2
SIGMA_V_SCATTER_DEX = 0.08
SIGMA_V_RANGE_KMS = (30.0, 300.0)
# [OIII]5008/Hβ of star formers: OFFSET below the Kewley et al. 2013 classification line.
O3HB_BELOW_CLASSIFICATION_DEX = 0.3
O3HB_SCATTER_DEX = 0.1
# log([SII]6718+6733 / Hα) = SII_HA_AT_N2_M07 + SII_HA_N2_SLOPE (N2 + 0.7)
#   + SII_HA_LOGU_SLOPE ΔlogU + N(0, SII_HA_SCATTER_DEX): [SII] has its own dependence on the
# ionisation parameter (ΔlogU ~ N(0, LOGU_SCATTER_DEX) at fixed metallicity; [SII]/Hα falls
# with log U much faster than [NII]/Hα, e.g. Kewley & Dopita 2002, Dopita et al. 2016), so
# the total [SII]/Hα scatter at fixed N2 is ~0.18 dex, as in SDSS star formers (unconfirmed
# round values).
SII_HA_AT_N2_M07 = -0.6
SII_HA_N2_SLOPE = 0.3
SII_HA_LOGU_SLOPE = -0.5
LOGU_SCATTER_DEX = 0.3
SII_HA_SCATTER_DEX = 0.1
# [SII]6718/6733 ~ 1.2 at n_e ~ 250 cm^-3 (Sanders et al. 2016), physical range 0.45-1.45.
SII_DOUBLET_MEAN, SII_DOUBLET_SCATTER = 1.2, 0.1
# [SIII]9533/Hα and 9533/9071 (theoretical ~2.47); unconfirmed round value.
SIII_9533_TO_HALPHA = 0.15
SIII_DOUBLET_RATIO = 2.47
# AGN / LINER: N2, [OIII]/Hβ, [SII]/Hα ranges; broad-line region FWHM and log10 of its Hα
# flux / narrow Hα, uniform: from Seyfert-1.9-like hosts whose narrow lines dominate (0.5) to
# broad-line AGN with hardly any narrow lines (20: narrow Hα 5 % of the broad), as in SDSS
# type-1 AGN (Stern & Laor 2012, MNRAS 423, 600: broad/narrow Hα mostly 3-30).
AGN_N2_RANGE = (-0.2, 0.3)
AGN_LOG_O3HB_RANGE = (0.3, 1.0)
AGN_LOG_SII_HA_RANGE = (-0.4, 0.0)
AGN_BROAD_FWHM_KMS = (1500.0, 6000.0)
AGN_LOG_BROAD_TO_NARROW = (np.log10(0.5), np.log10(20.0))
# Star-formation-driven outflows (Förster Schreiber et al. 2019, ApJ 875, 21): FWHM,
# flux / narrow, blueshift; outflow [NII]/Hα higher by OUTFLOW_N2_EXCESS dex (shocks).
OUTFLOW_FWHM_KMS = (400.0, 1000.0)
OUTFLOW_TO_NARROW = (0.2, 0.6)
OUTFLOW_VELOCITY_KMS = (-100.0, 0.0)
OUTFLOW_N2_EXCESS = 0.2
# Rest-frame EW(Hα) vs sSFR: log EW = EW_AT_SSFR_M87 + EW_SSFR_SLOPE (log sSFR + 8.7)
# (Fumagalli et al. 2012, ApJL 757, L22; Sobral et al. 2014; unconfirmed).
EW_HA_AT_SSFR_M87 = 2.0
EW_HA_SSFR_SLOPE = 0.8
EW_HA_SCATTER_DEX = 0.15
EW_HA_RANGE = (10.0, 1000.0)
# Stellar Balmer absorption under the emission: EW(Hα) [Å, rest], Hβ/Hα EW ratio, width.
ABSORPTION_EW_HA = (2.0, 5.0)
ABSORPTION_HB_TO_HA = 1.3
ABSORPTION_SIGMA_REST = (8.0, 15.0)
# Continuum shape: optical slope f_λ ∝ λ^β, a 4000 Å break and the Meurer et al. 1999
# dust-free UV slope (-2.23); dust added with Calzetti et al. 2000.
BETA_OPT_AT_SSFR_M87 = -1.3
BETA_OPT_SSFR_SLOPE = -0.6
D4000_AT_SSFR_M87 = 1.15
D4000_SSFR_SLOPE = -0.25
BETA_UV_DUST_FREE = -2.23
# Sizes (van der Wel et al. 2014) clipped to what a 64x64 0.06" stamp can hold; Sérsic n
# rises from ~1 (discs) to ~2.5 with mass; axis ratio b/a uniform (discs, unconfirmed).
R_EFF_RANGE_ARCSEC = (0.05, 1.5)
AXIS_RATIO_RANGE = (0.2, 1.0)
# Contamination by a neighbour's spectrum (slitless only in reality; always simulated as
# such): half a compact zeroth-order peak, half a smooth first-order continuum, placed
# within CONTAMINATION_REACH_A of observed Hα so that it can bias the line fit.
CONTAMINATION_REACH_A = 400.0
ZEROTH_ORDER_TO_HALPHA = (0.3, 3.0)
ZEROTH_ORDER_SIGMA_PIXELS = (1.0, 2.5)
FIRST_ORDER_TO_HALPHA_PEAK = (0.05, 0.5)
FIRST_ORDER_LENGTH_A = (1000.0, 4000.0)
# Artefacts a pipeline left unmasked, within CONTAMINATION_REACH_A of observed Hα: kind 1 = a
# hot pixel or cosmic ray (one pixel, ARTEFACT_SPIKE_SIGMAS x its noise), kind 2 = a run of
# ARTEFACT_RUN_PIXELS bad pixels (dead or persistent: each offset by ± ARTEFACT_RUN_SIGMAS).
ARTEFACT_SPIKE_SIGMAS = (10.0, 100.0)
ARTEFACT_RUN_PIXELS = (2, 6)
ARTEFACT_RUN_SIGMAS = (5.0, 30.0)
# Catalogue stellar masses scatter around the truth like SED-fit masses [dex] (unconfirmed).
LOG_MSTAR_CATALOG_SCATTER_DEX = 0.15
# Grism-like redshift prior: sigma_z = Z_PRIOR_SCATTER (1 + z) (3D-HST quote 0.003(1+z),
# Momcheva et al. 2016; Euclid target 0.001(1+z)).
Z_PRIOR_SCATTER = 0.0015
# Hα S/N above which a stratified sample keeps every galaxy (see `snr_weight_power`).
SNR_WEIGHT_PIVOT = 30.0
# Sky position: a 1 deg² COSMOS-like field.
FIELD_CENTRE_DEG = (150.1, 2.2)


@dataclass(frozen=True)
class SimulationOptions:
    """Switches and rates of the simulator (defaults: the full realistic mix)."""

    min_ha_snr: float = 3.5  # Euclid-like 3.5 sigma line-flux selection on expected Hα S/N (narrow + broad)
    # Stratified (training / evaluation) samples: keep a galaxy with probability
    # min(1, (narrow Hα S/N / SNR_WEIGHT_PIVOT)**snr_weight_power); 0 = the plain flux-limited
    # sample, ~1.5 flattens its steep S/N distribution so that bright bins are populated. The
    # weight reads the narrow lines, so that it does not also multiply the share of AGN (whose
    # broad line adds S/N) in the bright bins.
    snr_weight_power: float = 0.0
    agn_fraction: float = 0.01  # of candidates: ~9 % of a flux-limited sample (broad lines add flux)
    outflow_fraction: float = 0.10  # of star formers
    contamination_fraction: float = 0.05
    artefact_fraction: float = 0.02  # unmasked hot pixels / bad-pixel runs near Hα
    continuum: bool = True
    stellar_absorption: bool = True
    cosmic_rate: float = 0.5  # mean hot pixels / cosmics per low-res spectrum
    hires_snr_factor: float = 1.0  # Hα S/N at R=3600 / Hα S/N of the grism (docs/science.md ceiling)
    log_mstar_range: tuple[float, float] = (8.5, 11.5)
    # Share of star formers outside the fitted relations (OFF_RELATION_*; 1 = all of them).
    off_relation_fraction: float = 0.2
    # Stress tests of galaxies outside the fitted relations: star-forming N2 shifted by this
    # [dex] above the Faisst-based relation (before the soft cap), and rest EW(Hα) by this
    # [dex] (negative = more continuum and relatively deeper Balmer absorption).
    n2_offset_dex: float = 0.0
    ew_offset_dex: float = 0.0
    # Depth: the low-res noise sigma is multiplied by this (0.25 = 16x the exposure; the
    # expected Hα S/N and the selection follow), e.g. to populate bright S/N bins with the
    # same galaxy population, as real spectra degraded to a fixed S/N are.
    noise_scale: float = 1.0
    first_object_id: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def redshift_range(instrument: Instrument) -> tuple[float, float]:
    """Redshifts at which the whole rest TARGET_GRID window lands inside the instrument."""
    return (instrument.wave_min / TARGET_GRID.bin_edges[0] - 1.0,
            instrument.wave_max / TARGET_GRID.bin_edges[-1] - 1.0)


def _schechter_log_mass(rng, n, log_range):
    grid = np.linspace(*log_range, 2001)
    x = 10.0 ** (grid - SMF_LOG_MSTAR)
    cdf = np.cumsum(x ** (SMF_ALPHA + 1.0) * np.exp(-x))
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    return np.interp(rng.random(n), cdf, grid)


@functools.lru_cache(maxsize=1)
def _faisst_interpolator():
    z_grid = np.arange(0.0, 2.705, 0.01)
    mass_grid = np.arange(8.0, 12.005, 0.01)
    table = np.stack([physics.faisst_n2(mass_grid, z) for z in z_grid])
    return RegularGridInterpolator((z_grid, mass_grid), table, bounds_error=False, fill_value=None)


def faisst_n2_fast(log_mass, z):
    """physics.faisst_n2 interpolated bilinearly from a 0.01 x 0.01 dex (z, log M*) table.

    physics.faisst_n2 inverts the relation once per distinct z, too slow for continuous z.
    """
    return _faisst_interpolator()(np.column_stack([z, log_mass]))


def _soft_cap(x, cap, softness=0.05):
    """Smooth min(x, cap): x well below the cap, tending to the cap above it."""
    return cap - softness * np.logaddexp(0.0, (cap - x) / softness)


def _uniform(rng, bounds, n):
    return rng.uniform(bounds[0], bounds[1], n)


def _draw_candidates(rng, n, instrument, options):
    """All intrinsic properties of n galaxies (before the S/N selection)."""
    z_lo, z_hi = redshift_range(instrument)
    if z_hi <= z_lo:
        raise ValueError(f"{instrument.name} cannot hold the rest window {TARGET_GRID.name}")
    g = {}
    g["log_mstar"] = log_mass = _schechter_log_mass(rng, n, options.log_mstar_range)
    g["z"] = z = rng.uniform(z_lo, z_hi, n)
    ms = physics.speagle_log_sfr(log_mass, physics.age_of_universe_gyr(z))
    g["log_sfr"] = log_sfr = ms + rng.normal(0.0, MS_SCATTER_DEX, n)

    a_halpha = np.maximum(physics.garn_best_halpha_attenuation(log_mass)
                          + rng.normal(0.0, A_HALPHA_SCATTER_MAG, n), 0.0)
    g["av"] = av = a_halpha / physics.cardelli_extinction(physics.LINE_WAVELENGTHS["halpha"])
    g["av_stellar"] = (physics.CALZETTI_STELLAR_TO_GAS_EBV * physics.CALZETTI_RV
                       / physics.CARDELLI_RV * av)

    # [NII]/Hα: Faisst relation, FMR-like SFR term, scatter so the total matches Faisst's.
    fmr = -FMR_N2_SLOPE * (log_sfr - ms)
    total_scatter = physics.faisst_n2_scatter(z)
    extra = np.sqrt(np.maximum(total_scatter**2 - (FMR_N2_SLOPE * MS_SCATTER_DEX) ** 2, 0.0))
    n2_sf = faisst_n2_fast(log_mass, z) + fmr + extra * rng.standard_normal(n) + options.n2_offset_dex
    n2_sf = _soft_cap(n2_sf, N2_STAR_FORMING_CAP)
    g["is_agn"] = is_agn = rng.random(n) < options.agn_fraction
    g["off_relation"] = off = ~is_agn & (rng.random(n) < options.off_relation_fraction)
    # N2 measures metallicity (Pettini & Pagel 2004) on the relation only: off it N2 may be
    # set by diffuse gas or shocks, so their 12 + log(O/H) is unknown (NaN).
    g["oh12"] = np.where(off, np.nan, physics.n2_to_metallicity(n2_sf))
    n2_sf = np.where(off, _uniform(rng, OFF_RELATION_N2_RANGE, n), n2_sf)
    g["n2"] = n2 = np.where(is_agn, _uniform(rng, AGN_N2_RANGE, n), n2_sf)

    # Line fluxes [1e-17 erg/s/cm²], observed (attenuated).
    distance = physics.luminosity_distance_cm(z)
    halpha_intrinsic = (physics.sfr_to_halpha_luminosity(10.0**log_sfr)
                        / (4.0 * np.pi * distance**2) / 1e-17)
    g["ha_flux"] = ha = halpha_intrinsic * 10.0 ** (-0.4 * a_halpha)
    g["nii_6585_flux"] = ha * 10.0**n2
    g["nii_6550_flux"] = g["nii_6585_flux"] / physics.NII_DOUBLET_RATIO
    a_hbeta = av * physics.cardelli_extinction(physics.LINE_WAVELENGTHS["hbeta"])
    g["hb_flux"] = hb = halpha_intrinsic / physics.BALMER_DECREMENT * 10.0 ** (-0.4 * a_hbeta)
    log_o3hb = (physics.kewley13_classification_o3hb(np.minimum(n2, N2_STAR_FORMING_CAP), z)
                - O3HB_BELOW_CLASSIFICATION_DEX + rng.normal(0.0, O3HB_SCATTER_DEX, n))
    log_o3hb = np.where(is_agn, _uniform(rng, AGN_LOG_O3HB_RANGE, n), log_o3hb)
    g["oiii_5008_flux"] = hb * 10.0**log_o3hb
    log_s2 = (SII_HA_AT_N2_M07 + SII_HA_N2_SLOPE * (n2 + 0.7)
              + SII_HA_LOGU_SLOPE * rng.normal(0.0, LOGU_SCATTER_DEX, n) + rng.normal(0.0, SII_HA_SCATTER_DEX, n))
    log_s2 = np.where(is_agn, _uniform(rng, AGN_LOG_SII_HA_RANGE, n), log_s2)
    sii_ratio = np.clip(rng.normal(SII_DOUBLET_MEAN, SII_DOUBLET_SCATTER, n), 0.45, 1.45)
    sii_total = ha * 10.0**log_s2
    g["sii_6718_flux"] = sii_total * sii_ratio / (1.0 + sii_ratio)
    g["sii_6733_flux"] = sii_total / (1.0 + sii_ratio)

    sigma_v = SIGMA_V_AT_1E10_KMS * 10.0 ** (SIGMA_V_MASS_SLOPE * (log_mass - 10.0)
                                            + rng.normal(0.0, SIGMA_V_SCATTER_DEX, n))
    g["sigma_v_kms"] = np.clip(sigma_v, *SIGMA_V_RANGE_KMS)

    _draw_broad(g, rng, n, options)
    _draw_continuum(g, rng, n, options)
    g["log_mstar_catalog"] = log_mass + rng.normal(0.0, LOG_MSTAR_CATALOG_SCATTER_DEX, n)
    _draw_morphology(g, rng, n)
    _draw_contamination(g, rng, n, instrument, options)
    return g


def _draw_broad(g, rng, n, options):
    """Broad Hα (+[NII], Hβ): AGN broad-line regions and star-formation-driven outflows."""
    outflow = ~g["is_agn"] & (rng.random(n) < options.outflow_fraction)
    g["has_broad"] = outflow | g["is_agn"]
    fwhm = np.where(g["is_agn"], _uniform(rng, AGN_BROAD_FWHM_KMS, n),
                    _uniform(rng, OUTFLOW_FWHM_KMS, n))
    ratio = np.where(g["is_agn"], 10.0 ** _uniform(rng, AGN_LOG_BROAD_TO_NARROW, n),
                     _uniform(rng, OUTFLOW_TO_NARROW, n))
    g["broad_sigma_kms"] = fwhm / physics.FWHM_PER_SIGMA
    g["broad_velocity_kms"] = np.where(outflow, _uniform(rng, OUTFLOW_VELOCITY_KMS, n), 0.0)
    g["broad_ha_flux"] = np.where(g["has_broad"], ratio * g["ha_flux"], 0.0)
    g["broad_nii_6585_flux"] = np.where(
        outflow, g["broad_ha_flux"] * 10.0 ** (g["n2"] + OUTFLOW_N2_EXCESS), 0.0)
    g["broad_hb_flux"] = g["broad_ha_flux"] * g["hb_flux"] / g["ha_flux"]


def _draw_continuum(g, rng, n, options):
    """Continuum at observed Hα from EW(Hα) vs sSFR, its shape, and Balmer absorption."""
    log_ssfr = g["log_sfr"] - g["log_mstar"] + 8.7
    ew_offset = options.ew_offset_dex + np.where(
        g["off_relation"], _uniform(rng, OFF_RELATION_EW_OFFSET_DEX, n), 0.0)
    ew = np.clip(10.0 ** (EW_HA_AT_SSFR_M87 + EW_HA_SSFR_SLOPE * log_ssfr + ew_offset
                          + rng.normal(0.0, EW_HA_SCATTER_DEX, n)), *EW_HA_RANGE)
    g["ew_ha_rest"] = ew
    scale = 1.0 if options.continuum else 0.0
    # f_λ per observed Å at observed Hα: F / (EW_rest (1+z)).
    g["continuum_at_ha"] = scale * g["ha_flux"] / (ew * (1.0 + g["z"]))
    g["beta_optical"] = np.clip(BETA_OPT_AT_SSFR_M87 + BETA_OPT_SSFR_SLOPE * log_ssfr
                                + rng.normal(0.0, 0.15, n), -2.5, 0.5)
    g["d4000"] = np.clip(D4000_AT_SSFR_M87 + D4000_SSFR_SLOPE * log_ssfr, 1.0, 1.8)
    absorb = 1.0 if options.stellar_absorption else 0.0
    g["absorption_ew_ha"] = absorb * _uniform(rng, ABSORPTION_EW_HA, n)
    g["absorption_sigma_rest"] = _uniform(rng, ABSORPTION_SIGMA_REST, n)


def _draw_morphology(g, rng, n):
    """Sérsic index, half-light radius (van der Wel et al. 2014), axis ratio, angle, position."""
    log_mass, z = g["log_mstar"], g["z"]
    log_r_kpc = (physics.van_der_wel_log_reff_kpc(log_mass, z)
                 + physics.van_der_wel_scatter(z) * rng.standard_normal(n))
    g["r_eff_arcsec"] = np.clip(10.0**log_r_kpc / physics.kpc_per_arcsec(z), *R_EFF_RANGE_ARCSEC)
    bulge = 1.0 / (1.0 + np.exp(-2.0 * (log_mass - 10.5)))
    g["sersic_n"] = np.clip(1.0 + 1.5 * bulge + rng.normal(0.0, 0.2, n), 0.5, 4.0)
    g["axis_ratio"] = _uniform(rng, AXIS_RATIO_RANGE, n)
    g["position_angle"] = rng.uniform(0.0, np.pi, n)  # major axis from the dispersion axis [rad]
    g["dispersion_sigma_arcsec"] = dispersion_axis_sigma(
        g["r_eff_arcsec"], g["axis_ratio"], g["position_angle"])
    half = 0.5
    g["ra"] = FIELD_CENTRE_DEG[0] + rng.uniform(-half, half, n) / np.cos(
        np.radians(FIELD_CENTRE_DEG[1]))
    g["dec"] = FIELD_CENTRE_DEG[1] + rng.uniform(-half, half, n)


def _draw_contamination(g, rng, n, instrument, options):
    """Neighbour contamination: kind 1 = zeroth-order peak, 2 = first-order continuum."""
    contaminated = rng.random(n) < options.contamination_fraction
    g["is_contaminated"] = contaminated
    g["contamination_kind"] = np.where(contaminated, 1 + (rng.random(n) < 0.5), 0)
    halpha_obs = physics.LINE_WAVELENGTHS["halpha"] * (1.0 + g["z"])
    g["contamination_centre"] = halpha_obs + rng.uniform(-1, 1, n) * CONTAMINATION_REACH_A
    g["contamination_sigma"] = _uniform(rng, ZEROTH_ORDER_SIGMA_PIXELS, n) * instrument.dispersion
    g["contamination_length"] = _uniform(rng, FIRST_ORDER_LENGTH_A, n)
    peak = g["ha_flux"] / (np.sqrt(2 * np.pi) * instrument.lsf_sigma(halpha_obs))
    g["contamination_flux"] = np.where(
        g["contamination_kind"] == 1, _uniform(rng, ZEROTH_ORDER_TO_HALPHA, n) * g["ha_flux"],
        _uniform(rng, FIRST_ORDER_TO_HALPHA_PEAK, n) * peak)
    g["contamination_flux"] *= contaminated


def halpha_snr(instrument: Instrument, g: dict) -> tuple[np.ndarray, np.ndarray]:
    """Expected matched-filter S/N of the narrow Hα and of all Hα (narrow + broad component)
    on `instrument` (before noise_scale). Two Gaussians of S/N s_n, s_b and observed sigmas
    t_n, t_b add as s² = s_n² + s_b² + 2 s_n s_b √(2 t_n t_b / (t_n² + t_b²)) (their overlap),
    so a survey selecting on line flux keeps a broad-line AGN whatever its narrow lines."""
    halpha_obs = physics.LINE_WAVELENGTHS["halpha"] * (1.0 + g["z"])
    size = g["dispersion_sigma_arcsec"]
    sigmas = [physics.velocity_to_sigma_angstrom(g[key], halpha_obs) for key in ("sigma_v_kms", "broad_sigma_kms")]
    narrow, broad = (instrument.line_snr(flux, halpha_obs, sigma, size)
                     for flux, sigma in zip((g["ha_flux"], g["broad_ha_flux"]), sigmas, strict=True))
    t_n, t_b = (np.hypot(instrument.lsf_sigma(halpha_obs, size), sigma) for sigma in sigmas)
    overlap = np.sqrt(2.0 * t_n * t_b / (t_n**2 + t_b**2))
    return narrow, np.sqrt(narrow**2 + broad**2 + 2.0 * narrow * broad * overlap)


def draw_artefacts(pop: dict, rng: np.random.Generator, fraction: float) -> dict[str, np.ndarray]:
    """Unmasked artefacts of the low-res spectra (see ARTEFACT_*), as (n,) arrays:
    has_artefact, artefact_kind (0 none, 1 spike, 2 bad-pixel run), artefact_centre [Å],
    artefact_pixels, artefact_sigmas (signed offset in units of the pixel noise)."""
    n = len(pop["z"])
    has = rng.random(n) < fraction
    kind = np.where(has, 1 + (rng.random(n) < 0.5), 0)
    halpha_obs = physics.LINE_WAVELENGTHS["halpha"] * (1.0 + pop["z"])
    run_sigmas = _uniform(rng, ARTEFACT_RUN_SIGMAS, n) * rng.choice([-1.0, 1.0], n)
    return {
        "has_artefact": has, "artefact_kind": kind,
        "artefact_centre": halpha_obs + rng.uniform(-1, 1, n) * CONTAMINATION_REACH_A,
        "artefact_pixels": np.where(kind == 2, rng.integers(ARTEFACT_RUN_PIXELS[0], ARTEFACT_RUN_PIXELS[1] + 1, n),
                                    np.where(has, 1, 0)),
        "artefact_sigmas": np.where(kind == 1, _uniform(rng, ARTEFACT_SPIKE_SIGMAS, n), run_sigmas) * has,
    }


def draw_population(n: int, instrument: Instrument, rng: np.random.Generator,
                    options: SimulationOptions) -> dict[str, np.ndarray]:
    """n galaxies whose expected low-res Hα S/N passes `options.min_ha_snr`.

    Draws candidates in vectorised rounds until n pass. Returns a dict of (n,) arrays:
    the truth columns of docs/contracts.md plus the simulator's internal parameters.
    """
    kept, total, drawn = [], 0, 0
    for _ in range(100):
        acceptance = max(total / drawn, 0.002) if drawn else 0.25
        batch = min(int(1.2 * (n - total) / acceptance) + 64, 1_000_000)
        g = _draw_candidates(rng, batch, instrument, options)
        g["narrow_ha_snr"], g["ha_snr"] = (snr / options.noise_scale for snr in halpha_snr(instrument, g))
        passed = g["ha_snr"] >= options.min_ha_snr
        if options.snr_weight_power > 0:
            keep = np.minimum(1.0, (g["narrow_ha_snr"] / SNR_WEIGHT_PIVOT) ** options.snr_weight_power)
            passed &= rng.random(batch) < keep
        kept.append({key: value[passed] for key, value in g.items()})
        total += int(passed.sum())
        drawn += batch
        if total >= n:
            break
    else:
        raise ValueError(f"fewer than {n} galaxies reach Hα S/N >= {options.min_ha_snr} "
                         f"with {instrument.name}")
    pop = {key: np.concatenate([part[key] for part in kept])[:n] for key in kept[0]}
    pop["z_prior"] = pop["z"] + rng.normal(0.0, Z_PRIOR_SCATTER, n) * (1.0 + pop["z"])
    pop["object_id"] = options.first_object_id + np.arange(n, dtype=np.int64)
    return pop
