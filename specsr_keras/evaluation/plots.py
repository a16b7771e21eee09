"""Report figures (matplotlib, Agg canvas via `Figure`: no pyplot state, no display).

Each function draws one PNG at `path` and returns the path. Inputs are a held-out set's
truth columns and per-method estimate columns (evaluation/heldout.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from specsr_keras.evaluation.crossmodal import roc_curve
from specsr_keras.evaluation.metrics import robust_slope
from specsr_keras.instruments import TARGET_GRID
from specsr_keras.physics import LINE_WAVELENGTHS, faisst_n2, faisst_n2_scatter

__all__ = ["METHOD_LABELS", "plot_bias_vs_n2", "plot_calibration", "plot_embedding_pca", "plot_examples",
           "plot_n2_mass", "plot_n2_vs_truth", "plot_roc"]

METHOD_LABELS = {"specsr": "specsr", "lowres_fit": "low-res fit", "fit_population": "fit x population prior",
                 "fit_faisst": "fit x Faisst(cat. M*)", "faisst": "Faisst+18 (cat. M*)",
                 "constant": "constant (no skill)", "ceiling": "ceiling (R=3600 fit)",
                 "centroid": "naive centroid (no [NII])"}
_COLORS = {"specsr": "C3", "lowres_fit": "C0", "fit_population": "C4", "fit_faisst": "C5", "faisst": "C2",
           "constant": "0.6", "ceiling": "k", "centroid": "C1", "truth": "0.3"}
# Martens et al. 2019 (MNRAS 485, 211) centroid shift ignoring [NII], Δz/(1+z) at N2
# (derived from the line positions; docs/science.md).
MARTENS_N2 = np.array([-1.2, -0.8, -0.5, -0.3])
MARTENS_DZ = np.array([1.4e-4, 3.2e-4, 5.4e-4, 7.3e-4])
_LINES = {"Hα": LINE_WAVELENGTHS["halpha"], "[NII]": LINE_WAVELENGTHS["nii_6585"],
          "": LINE_WAVELENGTHS["nii_6550"]}


def _curve_style(method: str) -> dict:
    """Line style of a method's binned curve; specsr is wide and pale so a baseline that
    coincides with it (model = baseline) stays visible on top."""
    wide = {"lw": 3.5, "alpha": 0.5} if method == "specsr" else {"lw": 1.2}
    return {"marker": "o", "ms": 3, "color": _COLORS.get(method),
            "label": METHOD_LABELS.get(method, method), **wide}


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def binned_median(x, y, edges, min_count: int = 5):
    """Bin centres and median y of the finite pairs in each bin with >= min_count points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    good = np.isfinite(x) & np.isfinite(y)
    centres, medians = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = good & (x >= lo) & (x < hi)
        if sel.sum() >= min_count:
            centres.append(0.5 * (lo + hi))
            medians.append(np.median(y[sel]))
    return np.array(centres), np.array(medians)


def plot_examples(examples: dict, truth: dict, estimates: dict, path) -> Path:
    """Example galaxies on the rest-frame target window: low-res input, true R=3600
    spectrum, specsr mean ± spread (or, without it, the low-res and ceiling fit models)."""
    index = examples["index"]
    fig = Figure(figsize=(9, 2.4 * max(len(index), 1)))
    rest = TARGET_GRID.wavelength
    for row, i in enumerate(index):
        ax = fig.add_subplot(len(index), 1, row + 1)
        opz = 1.0 + truth["z"][i]
        ax.step(examples["lowres_wave"] / opz, examples["lowres_flux"][row], where="mid",
                color="0.6", lw=0.8, label="low-res input")
        ax.plot(rest, examples["hires_truth"][row], color="k", lw=1.0, label="truth (R=3600)")
        if "sr_mean" in examples:
            mean, std = examples["sr_mean"][row], examples["sr_std"][row]
            # specsr's window is placed at the redshift prior: move it to the true rest frame.
            placed = rest * (1.0 + truth["z_prior"][i]) / opz
            ax.plot(placed, mean, color=_COLORS["specsr"], lw=1.0, label="specsr mean")
            ax.fill_between(placed, mean - std, mean + std, color=_COLORS["specsr"], alpha=0.3,
                            lw=0, label="specsr ±1σ")
        else:
            ax.plot(rest, examples["lowres_fit_model"][row], color=_COLORS["lowres_fit"], lw=1.0,
                    label="low-res fit model")
            ax.plot(rest, examples["ceiling_model"][row], color="C4", lw=0.8, ls="--",
                    label="ceiling fit model")
        for name, wave in _LINES.items():
            ax.axvline(wave, color="0.8", lw=0.6, zorder=0)
            if name:
                ax.text(wave, 1.0, name, transform=ax.get_xaxis_transform(), fontsize=7,
                        ha="center", va="bottom")
        ax.set_xlim(rest[0], rest[-1])
        ax.set_title(f"object {truth['object_id'][i]}  z={truth['z'][i]:.3f}  "
                     f"S/N(Hα)={truth['ha_snr'][i]:.1f}  N2 true {truth['n2'][i]:+.2f}, "
                     f"specsr {estimates['specsr']['n2_p50'][i]:+.2f}, "
                     f"low-res fit {estimates['lowres_fit']['n2_p50'][i]:+.2f}",
                     fontsize=8, loc="left", pad=10)
        ax.set_ylabel("f_λ [1e-17 cgs/Å]", fontsize=8)
        if row == 0:
            ax.legend(fontsize=7, ncol=4, loc="upper right")
    if len(index):
        ax.set_xlabel("rest wavelength [Å]")
    fig.tight_layout()
    return _save(fig, path)


def plot_n2_mass(truth: dict, estimates: dict, path, n_z_bins: int = 3) -> Path:
    """N2 vs stellar mass in redshift bins (equal counts): running medians of truth,
    specsr and the low-res fit, and the Faisst et al. 2018 relation ± its scatter."""
    z, mass = truth["z"], truth["log_mstar"]
    z_edges = np.quantile(z, np.linspace(0, 1, n_z_bins + 1))
    z_edges[-1] += 1e-9
    mass_edges = np.arange(8.5, 11.76, 0.25)
    mass_grid = np.linspace(8.5, 11.5, 61)
    fig = Figure(figsize=(4 * n_z_bins, 3.6))
    for k in range(n_z_bins):
        ax = fig.add_subplot(1, n_z_bins, k + 1)
        sel = (z >= z_edges[k]) & (z < z_edges[k + 1])
        ax.scatter(mass[sel], truth["n2"][sel], s=3, color="0.75", label="truth (objects)")
        series = (("truth", truth["n2"]), ("specsr", estimates["specsr"]["n2_p50"]),
                  ("lowres_fit", estimates["lowres_fit"]["n2_p50"]))
        for name, n2 in series:
            centres, med = binned_median(mass[sel], n2[sel], mass_edges)
            ax.plot(centres, med, **{**_curve_style(name),
                                     "label": f"{METHOD_LABELS.get(name, name)} median"})
        z_mid = np.median(z[sel]) if sel.any() else np.mean(z_edges[k:k + 2])
        curve, scatter = faisst_n2(mass_grid, z_mid), faisst_n2_scatter(z_mid)
        ax.plot(mass_grid, curve, color=_COLORS["faisst"], label="Faisst+18")
        ax.fill_between(mass_grid, curve - scatter, curve + scatter, color=_COLORS["faisst"],
                        alpha=0.15, lw=0)
        ax.set_title(f"{z_edges[k]:.2f} <= z < {z_edges[k + 1]:.2f}  (n={int(sel.sum())})",
                     fontsize=9)
        ax.set_xlabel("log M* [Msun]")
        ax.set_ylim(-2.0, 0.5)
        if k == 0:
            ax.set_ylabel("N2 = log [NII]6585/Hα")
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_n2_vs_truth(truth: dict, estimates: dict, path,
                     methods=("specsr", "lowres_fit", "faisst", "ceiling")) -> Path:
    """Estimated vs true N2 per method, coloured by Hα S/N, with the 1:1 line and the
    robust slope (1 = no shrinkage)."""
    methods = [m for m in methods if "n2_p50" in estimates.get(m, {})]
    fig = Figure(figsize=(3.4 * len(methods), 3.4))
    lims = (-2.0, 0.5)
    for k, method in enumerate(methods):
        ax = fig.add_subplot(1, len(methods), k + 1)
        estimate = estimates[method]["n2_p50"]
        points = ax.scatter(truth["n2"], estimate, s=3, c=np.log10(truth["ha_snr"]),
                            cmap="viridis", vmin=np.log10(3), vmax=np.log10(50))
        ax.plot(lims, lims, color="k", lw=0.8)
        ax.set_xlim(lims)
        ax.set_ylim(lims)
        ax.set_title(f"{METHOD_LABELS[method]}\nslope {robust_slope(truth['n2'], estimate):.2f}",
                     fontsize=9)
        ax.set_xlabel("true N2")
        if k == 0:
            ax.set_ylabel("estimated N2")
    fig.colorbar(points, ax=fig.axes, label="log S/N(Hα)", shrink=0.8)
    return _save(fig, path)


def plot_calibration(calibration: dict, path,
                     quantities=("n2", "ha_flux", "z")) -> Path:
    """Empirical vs nominal coverage of central intervals, per quantity and method."""
    fig = Figure(figsize=(3.6 * len(quantities), 3.4))
    for k, quantity in enumerate(quantities):
        ax = fig.add_subplot(1, len(quantities), k + 1)
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8)
        for method, curve in calibration.get(quantity, {}).items():
            ax.plot(curve["nominal"], curve["empirical"], **_curve_style(method))
        ax.set_title(quantity, fontsize=9)
        ax.set_xlabel("nominal interval")
        if k == 0:
            ax.set_ylabel("fraction of truths inside")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_bias_vs_n2(truth: dict, estimates: dict, path) -> Path:
    """Median N2 error and redshift bias Δz/(1+z) vs true N2; the latter with the
    Martens et al. 2019 expectation for a centroid that ignores [NII]."""
    edges = np.arange(-2.0, 0.51, 0.1)
    fig = Figure(figsize=(10, 3.6))
    ax_n2, ax_z = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for method in ("specsr", "lowres_fit", "faisst", "ceiling"):
        if "n2_p50" in estimates.get(method, {}):
            centres, med = binned_median(truth["n2"], estimates[method]["n2_p50"] - truth["n2"],
                                         edges)
            ax_n2.plot(centres, med, **_curve_style(method))
    for method in ("centroid", "lowres_fit", "specsr", "ceiling"):
        if "z_p50" in estimates.get(method, {}):
            dz = (estimates[method]["z_p50"] - truth["z"]) / (1.0 + truth["z"])
            centres, med = binned_median(truth["n2"], dz, edges)
            ax_z.plot(centres, med, **_curve_style(method))
    ax_z.plot(MARTENS_N2, MARTENS_DZ, "s", mfc="none", color="C1", ms=7,
              label="Martens+19 (centroid)")
    for ax, label in ((ax_n2, "median N2 error [dex]"), (ax_z, "median Δz/(1+z)")):
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel("true N2")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


# Quantities that colour the shared-space picture, with their colour-bar labels.
PCA_COLOURS = {"z": "redshift z", "log_mstar": "log10 M* [Msun]", "n2": "N2 [dex]"}


def principal_components(embeddings, count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """First `count` principal-component coordinates (N, count) of (N, D) embeddings and
    the share of variance each explains (count,)."""
    centred = np.asarray(embeddings, np.float64) - np.mean(embeddings, axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:count].T, singular[:count] ** 2 / np.sum(singular**2)


def plot_embedding_pca(embeddings: dict[str, np.ndarray], truth: dict, path) -> Path:
    """The shared space projected on its first two principal components, one row per
    modality ({name: (N, D)}), coloured by each PCA_COLOURS quantity in truth."""
    colours = {q: label for q, label in PCA_COLOURS.items()
               if q in truth and np.isfinite(np.asarray(truth[q], float)).any()}
    fig = Figure(figsize=(4.2 * len(colours), 3.0 * len(embeddings)))
    for row, (name, emb) in enumerate(embeddings.items()):
        coords, share = principal_components(emb)
        for col, (quantity, label) in enumerate(colours.items()):
            ax = fig.add_subplot(len(embeddings), len(colours), row * len(colours) + col + 1)
            values = np.asarray(truth[quantity], float)[: len(coords)]
            lo, hi = np.nanpercentile(values, [2, 98])
            points = ax.scatter(coords[:, 0], coords[:, 1], c=values, s=4, cmap="viridis", vmin=lo, vmax=hi)
            fig.colorbar(points, ax=ax, label=label)
            ax.set_xlabel(f"{name} PC1 ({100 * share[0]:.0f} % of variance)")
            ax.set_ylabel(f"{name} PC2 ({100 * share[1]:.0f} %)")
    fig.tight_layout()
    return _save(fig, path)


def plot_roc(scores, labels, auroc: float, path) -> Path:
    """ROC curve of an anomaly score against true anomaly labels."""
    roc = roc_curve(scores, labels)
    fig = Figure(figsize=(3.8, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(roc["fpr"], roc["tpr"], color="C3", label=f"AUROC {auroc:.3f}")
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8)
    ax.axvline(0.01, color="0.8", lw=0.6, ls=":")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)
