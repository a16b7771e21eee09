# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # specsr from Python: super-resolve grism spectra, read N2 with its interval, look at the posterior
#
# A notebook in jupytext's percent format: JupyterLab or VS Code open it as a notebook
# where the jupytext extension is installed (it is not a specsr dependency), or run it as
# a script, `python docs/notebook.py`, from the repository root (the tests run it top to
# bottom).
# It uses the shipped model `saved_models/specsr/11` and simulated Euclid spectra as
# stand-ins for yours; figures go to `$SPECSR_OUT` (default `results/notebook/`).

# %%
import os
from pathlib import Path

import astropy.units as u
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import specsr_keras as specsr
from specsr_keras.instruments import TARGET_GRID, get_instrument
from specsr_keras.simulate import simulate_galaxies

OUT = Path(os.environ.get("SPECSR_OUT", "results/notebook"))
OUT.mkdir(parents=True, exist_ok=True)
model = specsr.load("saved_models/specsr/11")  # a SavedModel, a training run, or "baseline"
print(model.instrument, "grid")

# %% [markdown]
# ## Spectra in, one table row per spectrum out
# Four simulated Euclid galaxies with Hα S/N >= 10 (the truth is known, so we can check).
# A spectrum is a (wavelength, flux, ivar) tuple, a `Spectrum` or a FITS file; astropy
# Quantities are converted to specsr's units. The z prior is a grism redshift (here the
# simulator's, good to 0.0015 (1+z)); the catalogue stellar mass is optional.

# %%
galaxies = simulate_galaxies(4, "euclid", seed=11, min_ha_snr=10.0)
wave = get_instrument("euclid").wavelength * u.AA
flux_unit = 1e-17 * u.erg / u.s / u.cm**2 / u.AA
spectra = [(wave, galaxies["lowres_flux"][i] * flux_unit, galaxies["lowres_ivar"][i]) for i in range(4)]
table = model.super_resolve(spectra, z_prior=galaxies["z_prior"], log_mstar=galaxies["log_mstar_catalog"])
table["true_n2"] = galaxies["n2"]
table["true_n2"].unit = table["n2_p50"].unit
print(table["object_id", "n2_p16", "n2_p50", "n2_p84", "true_n2", "ha_flux_p50", "z_p50", "flags"])

# %% [markdown]
# `n2_p16`/`n2_p84` are predictive percentiles of the posterior samples (68 % of truths
# inside on the held-out sets, MODEL_CARD.md); `flags` are quality bits (docs/scale-out.md).
# Every row also carries the line-model anomaly tests: `anomaly_fpr` bounds the share of
# normal galaxies flagged at that value.

# %%
print(table["object_id", "broad_line_p", "narrow_model_p", "anomaly_fpr"])
inside = (table["n2_p16"] <= table["true_n2"]) & (table["true_n2"] <= table["n2_p84"])
print(f"{int(inside.sum())} of {len(table)} true N2 inside the 68 % interval")

# %% [markdown]
# ## The super-resolved window
# `sr_mean` and `sr_std` are the posterior mean and spread of the R = 3600 window in
# observed flux density, on the rest-frame grid 6460-6780 Å placed at `sr_z_place` (the
# grism redshift that placed it): observed wavelength = rest x (1 + sr_z_place). Shown in
# observed wavelength with the input spectrum and the simulator's R = 3600 truth (placed
# at the true z).

# %%
row = 0
rest = TARGET_GRID.wavelength
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.step(wave.value, galaxies["lowres_flux"][row], where="mid", color="0.6", label="Euclid grism (input)")
observed = rest * (1 + float(table["sr_z_place"][row]))
mean, std = np.asarray(table["sr_mean"][row]), np.asarray(table["sr_std"][row])
ax.plot(observed, mean, color="C3", label="specsr posterior mean")
ax.fill_between(observed, mean - std, mean + std, color="C3", alpha=0.3, label="± 1σ")
ax.plot(rest * (1 + galaxies["z"][row]), galaxies["hires_flux"][row], color="k", lw=0.6, label="R = 3600 truth")
ax.set_xlim(observed[0], observed[-1])
ax.set_xlabel("observed wavelength [Å]")
ax.set_ylabel("flux density [1e-17 erg s$^{-1}$ cm$^{-2}$ Å$^{-1}$]")
ax.set_title(f"N2 = {table['n2_p50'][row]:.2f} (+{table['n2_p84'][row] - table['n2_p50'][row]:.2f} "
             f"-{table['n2_p50'][row] - table['n2_p16'][row]:.2f}) dex, truth {galaxies['n2'][row]:.2f}")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "super_resolved.png", dpi=100)
print("wrote", OUT / "super_resolved.png")

# %% [markdown]
# ## What the catalogue mass adds
# Where the grism does not resolve [NII] the prior decides; given a catalogue mass, it is
# the prior of galaxies of that mass. Without it (the column missing or NaN) the same
# spectra get the population's prior: compare the interval widths.

# %%
without_mass = model.super_resolve(spectra, z_prior=galaxies["z_prior"])
width = lambda t: np.asarray(t["n2_p84"] - t["n2_p16"])  # noqa: E731
print("68 % interval width [dex] with mass:   ", np.round(width(table), 3))
print("68 % interval width [dex] without mass:", np.round(width(without_mass), 3))

# %% [markdown]
# ## specutils in and out
# A `specutils.Spectrum` with an uncertainty goes in as it is (any spectral and flux-density
# unit; the spectral axis taken as vacuum), and `specsr.super_resolved_spectra` gives each
# row's R = 3600 window back as a `specutils.Spectrum` in observed wavelength, with the
# posterior spread as its uncertainty, ready for specutils' own tools.

# %%
from astropy.nddata import InverseVariance
from specutils import SpectralRegion
from specutils import Spectrum as SpecutilsSpectrum
from specutils.analysis import line_flux

observed = SpecutilsSpectrum(spectral_axis=wave, flux=galaxies["lowres_flux"][row] * flux_unit,
                             uncertainty=InverseVariance(galaxies["lowres_ivar"][row] * flux_unit**-2))
one = model.super_resolve(observed, z_prior=galaxies["z_prior"][row], log_mstar=galaxies["log_mstar_catalog"][row])
window = specsr.super_resolved_spectra(one)[0]
placed = 1 + float(one["sr_z_place"][0])
halpha = SpectralRegion(6556 * placed * u.AA, 6570 * placed * u.AA)  # ± 7 Å rest around Hα, continuum included
print(window.spectral_axis[[0, -1]], window.flux.unit)
print("specutils line_flux over Hα:", line_flux(window, halpha).to(u.erg / u.s / u.cm**2))

# %% [markdown]
# A whole catalogue runs like `specsr infer` (chunked, resumable, with a manifest):
# `model.infer("cat.fits", "results/run1")`.
