"""Domain gap between simulated and real shards: per-example statistics and their histograms.

Statistics (NaN where not measurable):
- `continuum_slope`: ivar-weighted linear slope of the low-res spectrum divided by its
  weighted mean [per µm], i.e. d ln f_λ / dλ near the middle of the grism range;
- `ha_sigma_v_kms`, `n2`: Hα velocity dispersion [km/s] and log10([NII]6585/Hα) from
  `measure.fit_target_grid` on the hi-res target (real: observed pixels only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specsr_keras.data.shards import load_shards, read_manifest
from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.measure import fit_target_grid

STATISTICS = ("continuum_slope", "ha_sigma_v_kms", "n2")
# Examples per set by default (the line fit of every hi-res target is the slow part).
DOMAIN_GAP_MAX_EXAMPLES = 5000
_AXIS_LABELS = {"continuum_slope": "low-res continuum slope d ln f_λ/dλ [1/µm]",
                "ha_sigma_v_kms": "Hα σ_v [km/s]", "n2": "N2 = log10([NII]6585/Hα)"}
_FIELDS = ["lowres_flux", "lowres_ivar", "lowres_mask", "hires_flux", "hires_ivar",
           "hires_mask", "z"]


def continuum_slope(wave, flux, ivar) -> np.ndarray:
    """(N,) weighted slope of flux over wave [µm] divided by the weighted mean flux [1/µm]."""
    x = np.asarray(wave, float) / 1e4
    w = np.asarray(ivar, float)
    sw = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * x).sum(axis=1) / sw
        my = (w * flux).sum(axis=1) / sw
        dx = x[None, :] - mx[:, None]
        slope = (w * dx * (flux - my[:, None])).sum(axis=1) / (w * dx**2).sum(axis=1)
        return np.where((w > 0).sum(axis=1) >= 3, slope / my, np.nan)


def shard_statistics(directory, max_examples: int | None = None) -> dict[str, np.ndarray]:
    """STATISTICS of the examples of one shard directory, as (N,) arrays."""
    instrument = get_instrument(read_manifest(directory)["instrument"])
    batch = load_shards(directory, fields=_FIELDS, max_examples=max_examples)
    lowres_ivar = np.where(batch["lowres_mask"], 0.0, batch["lowres_ivar"])
    hires_ivar = np.where(batch["hires_mask"], 0.0, batch["hires_ivar"])
    fit = fit_target_grid(batch["hires_flux"].astype(float), hires_ivar, batch["z"],
                          TARGET_GRID.bin_edges, TARGET_GRID.lsf_sigma(TARGET_GRID.wavelength))
    return {"continuum_slope": continuum_slope(instrument.wavelength, batch["lowres_flux"],
                                               lowres_ivar),
            "ha_sigma_v_kms": np.where(fit["ok"], fit["sigma_v_kms"], np.nan),
            "n2": np.where(fit["ok"], fit["n2"], np.nan)}


def _summary(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"n": 0, "median": None, "p16": None, "p84": None}
    p16, median, p84 = np.percentile(finite, [16, 50, 84])
    return {"n": int(finite.size), "median": float(median), "p16": float(p16), "p84": float(p84)}


def domain_gap(simulated, real, plot_path=None,
               max_examples: int | None = DOMAIN_GAP_MAX_EXAMPLES) -> dict:
    """Compare STATISTICS of two shard directories; optional histogram figure at plot_path.

    Returns {statistic: {"simulated": summary, "real": summary, "ks": two-sample KS
    statistic, "median_shift": real - simulated median}} (None where a side has no
    measurable example), summary = n, median, p16, p84 of the measurable examples.
    """
    from scipy.stats import ks_2samp

    stats = {"simulated": shard_statistics(simulated, max_examples),
             "real": shard_statistics(real, max_examples)}
    result = {}
    for name in STATISTICS:
        sim, obs = (v[name][np.isfinite(v[name])] for v in (stats["simulated"], stats["real"]))
        both = bool(sim.size and obs.size)
        result[name] = {"simulated": _summary(sim), "real": _summary(obs),
                        "ks": float(ks_2samp(sim, obs).statistic) if both else None,
                        "median_shift": float(np.median(obs) - np.median(sim)) if both else None}
    if plot_path is not None:
        plot_domain_gap(stats, plot_path)
    return result


def plot_domain_gap(stats: dict[str, dict[str, np.ndarray]], path) -> Path:
    """One histogram panel per statistic, simulated vs real (density-normalised)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(STATISTICS), figsize=(4 * len(STATISTICS), 3.2))
    for ax, name in zip(axes, STATISTICS, strict=True):
        values = {kind: v[name][np.isfinite(v[name])] for kind, v in stats.items()}
        pooled = np.concatenate(list(values.values()))
        bins = np.histogram_bin_edges(pooled, bins=20) if pooled.size else 10
        for kind, data in values.items():
            if data.size:
                ax.hist(data, bins=bins, density=True, histtype="step",
                        label=f"{kind} ({data.size})")
        ax.set_xlabel(_AXIS_LABELS[name])
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
