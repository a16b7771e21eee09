"""Quick-look figure of simulated examples: image, low-res spectrum, high-res target."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specsr_keras.instruments import INSTRUMENTS, TARGET_GRID
from specsr_keras.physics import LINE_WAVELENGTHS

_LABELS = {"nii_6550": "[NII]", "halpha": "Hα", "nii_6585": "[NII]", "sii_6718": "[SII]",
           "sii_6733": "[SII]", "hbeta": "Hβ", "oiii_5008": "[OIII]", "oiii_4960": "[OIII]"}


def _instrument_for(n_pixels: int, instrument: str | None):
    if instrument is not None:
        return INSTRUMENTS[instrument]
    matches = [inst for inst in INSTRUMENTS.values() if inst.grid.n_pixels == n_pixels]
    if len(matches) != 1:
        raise ValueError(f"cannot tell the instrument of a {n_pixels}-pixel spectrum; pass it")
    return matches[0]


def _rgb(image: np.ndarray) -> np.ndarray:
    """asinh-stretched colour composite (F160W, F814W, F606W -> R, G, B) in [0, 1]."""
    channels = image[..., [3, 1, 0]]
    scale = np.percentile(channels, 99.5) + 1e-9
    return np.clip(np.arcsinh(channels / (0.1 * scale)) / np.arcsinh(10.0), 0.0, 1.0)


def plot_examples(batch: dict, path, n: int = 4, instrument: str | None = None) -> Path:
    """Write a PNG with n rows: image, low-res spectrum (±1σ), R=3600 target with line labels.

    instrument: name of the low-res instrument (inferred from the spectrum length if None).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(batch["z"]))
    inst = _instrument_for(batch["lowres_flux"].shape[1], instrument)
    fig, axes = plt.subplots(n, 3, figsize=(14, 3 * n), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 3, 3]})
    for row, (ax_img, ax_low, ax_high) in enumerate(axes):
        z = batch["z"][row]
        ax_img.imshow(_rgb(batch["image"][row]), origin="lower")
        ax_img.set_axis_off()
        ax_img.set_title(f"id {batch['object_id'][row]}  logM*={batch['log_mstar'][row]:.2f}",
                         fontsize=8)

        good = ~batch["lowres_mask"][row]
        sigma = np.where(good, 1.0 / np.sqrt(np.maximum(batch["lowres_ivar"][row], 1e-30)), np.nan)
        flux = np.where(good, batch["lowres_flux"][row], np.nan)
        ax_low.fill_between(inst.wavelength, flux - sigma, flux + sigma, color="0.8", step="mid")
        ax_low.step(inst.wavelength, flux, where="mid", color="k", lw=0.7)
        for name in ("hbeta", "oiii_5008", "halpha", "sii_6718"):
            ax_low.axvline(LINE_WAVELENGTHS[name] * (1 + z), color="C3", lw=0.5, ls=":")
        ax_low.set_xlim(inst.wavelength[0], inst.wavelength[-1])
        flags = [name for name in ("is_agn", "has_broad", "is_contaminated") if batch[name][row]]
        ax_low.set_title(f"{inst.name}  z={z:.3f}  Hα S/N={batch['ha_snr'][row]:.1f}  "
                         + " ".join(flags), fontsize=8)
        ax_low.set_xlabel("observed wavelength [Å]", fontsize=8)

        ax_high.step(TARGET_GRID.wavelength, batch["hires_flux"][row], where="mid", color="C0")
        top = batch["hires_flux"][row].max()
        for name in ("nii_6550", "halpha", "nii_6585", "sii_6718", "sii_6733"):
            ax_high.axvline(LINE_WAVELENGTHS[name], color="C3", lw=0.5, ls=":")
            ax_high.text(LINE_WAVELENGTHS[name], top, _LABELS[name], fontsize=7, ha="center",
                         va="bottom")
        ax_high.set_title(f"R=3600 target  N2={batch['n2'][row]:.2f}  "
                          f"σ_v={batch['sigma_v_kms'][row]:.0f} km/s", fontsize=8)
        ax_high.set_xlabel("rest wavelength [Å]", fontsize=8)
        for ax in (ax_low, ax_high):
            ax.set_ylabel("f_λ [1e-17 erg/s/cm²/Å]", fontsize=7)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
