"""Simulator: contract fields, determinism, line physics of the targets, population trends."""

import dataclasses

import numpy as np
import pytest

from specsr_keras import physics, simulate
from specsr_keras.instruments import INSTRUMENTS, TARGET_GRID, LineLimit, get_instrument
from specsr_keras.simulate import TRUTH_FIELDS, iter_simulated_batches, simulate_galaxies
from specsr_keras.simulate.population import SimulationOptions, draw_population, redshift_range

# Only the emission lines: no continuum, absorption, broad lines or contamination.
LINES_ONLY = dict(continuum=False, stellar_absorption=False, agn_fraction=0.0,
                  outflow_fraction=0.0, contamination_fraction=0.0, artefact_fraction=0.0,
                  cosmic_rate=0.0, min_ha_snr=0.0)


@pytest.fixture(scope="module")
def batch():
    return simulate_galaxies(48, "euclid_nisp_red", seed=3)


def test_batch_has_every_contract_field_with_shape_and_dtype(batch):
    n, n_pix = 48, get_instrument("euclid_nisp_red").grid.n_pixels
    expected = {
        "image": ((n, 64, 64, 4), np.float32), "lowres_flux": ((n, n_pix), np.float32),
        "lowres_ivar": ((n, n_pix), np.float32), "lowres_mask": ((n, n_pix), np.bool_),
        "hires_flux": ((n, 320), np.float32), "hires_ivar": ((n, 320), np.float32),
        "hires_mask": ((n, 320), np.bool_),
        **{name: ((n,), dtype) for name, dtype in TRUTH_FIELDS.items()},
    }
    assert set(batch) == set(expected)
    for name, (shape, dtype) in expected.items():
        assert batch[name].shape == shape, name
        assert batch[name].dtype == dtype, name
        defined = ~batch["off_relation"] if name == "oh12" else True  # N2 is no metallicity off the relation
        assert np.all(np.isfinite(batch[name]) | ~defined), name
    np.testing.assert_array_equal(batch["lowres_mask"], batch["lowres_ivar"] == 0)
    assert not batch["hires_mask"].any() and np.all(batch["hires_ivar"] > 0)
    assert np.all(batch["ha_snr"] >= SimulationOptions().min_ha_snr)
    assert np.unique(batch["object_id"]).size == n


def test_same_seed_is_identical_and_other_seed_differs():
    first = simulate_galaxies(12, "g141", seed=7)
    again = simulate_galaxies(12, "g141", seed=7)
    other = simulate_galaxies(12, "g141", seed=8)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
    for name in ("image", "lowres_flux", "hires_flux", "z", "log_mstar"):
        assert not np.array_equal(first[name], other[name]), name


@pytest.mark.parametrize("name", sorted(INSTRUMENTS))
def test_redshift_range_keeps_target_window_inside_instrument(name):
    inst = get_instrument(name)
    z_lo, z_hi = redshift_range(inst)
    assert TARGET_GRID.bin_edges[0] * (1 + z_lo) == pytest.approx(inst.wave_min)
    assert TARGET_GRID.bin_edges[-1] * (1 + z_hi) == pytest.approx(inst.wave_max)


def window_flux(batch, lo, hi):
    """Line flux [1e-17 erg/s/cm²] of the target between rest wavelengths lo and hi [Å]."""
    inside = (TARGET_GRID.bin_edges[:-1] >= lo) & (TARGET_GRID.bin_edges[1:] <= hi)
    return batch["hires_flux"][:, inside].astype(float).sum(-1) * (1 + batch["z"]) * 1.0


def test_noiseless_target_recovers_nii_ratios_by_direct_integration():
    batch = simulate_galaxies(160, "euclid", seed=11, **LINES_ONLY)
    narrow = batch["sigma_v_kms"] < 60.0  # lines separated by > 4.5 sigma
    assert narrow.sum() >= 20
    nii_6550 = window_flux(batch, 6535.0, 6557.0)[narrow]
    halpha = window_flux(batch, 6557.0, 6575.0)[narrow]
    nii_6585 = window_flux(batch, 6575.0, 6600.0)[narrow]
    np.testing.assert_allclose(nii_6585 / nii_6550, physics.NII_DOUBLET_RATIO, rtol=0.01)
    np.testing.assert_allclose(np.log10(nii_6585 / halpha), batch["n2"][narrow], atol=0.0043)
    np.testing.assert_allclose(halpha, batch["ha_flux"][narrow], rtol=0.01)


def test_lowres_spectrum_conserves_line_flux_through_lsf_and_resampling():
    euclid = get_instrument("euclid")
    noiseless = dataclasses.replace(euclid, line_limit=LineLimit(1e-9, 3.5, 15500.0))
    batch = simulate_galaxies(80, noiseless, seed=5, **LINES_ONLY)
    compact = batch["r_eff_arcsec"] < 0.3  # LSF sigma < 16 Å: a +-95 Å window holds it
    centre = physics.LINE_WAVELENGTHS["halpha"] * (1 + batch["z"][compact])
    inside = np.abs(euclid.wavelength - centre[:, None]) < 95.0
    measured = (batch["lowres_flux"][compact] * inside).sum(-1) * euclid.dispersion
    expected = (batch["ha_flux"] + batch["nii_6585_flux"] + batch["nii_6550_flux"])[compact]
    assert compact.sum() >= 10
    np.testing.assert_allclose(measured, expected, rtol=0.01)


def test_median_n2_rises_with_mass_along_faisst():
    rng = np.random.default_rng(4)
    options = SimulationOptions(**{**LINES_ONLY, "log_mstar_range": (8.5, 11.0)})
    pop = draw_population(6000, get_instrument("euclid"), rng, options)
    pop = {key: value[~pop["off_relation"]] for key, value in pop.items()}
    edges = [8.5, 9.25, 10.0, 10.5, 11.0]
    medians = [np.median(pop["n2"][(pop["log_mstar"] >= lo) & (pop["log_mstar"] < hi)])
               for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    assert np.all(np.diff(medians) > 0.05)
    residual = pop["n2"] - physics.faisst_n2(pop["log_mstar"], np.round(pop["z"], 2))
    assert abs(np.median(residual)) < 0.05
    assert np.std(residual) == pytest.approx(np.mean(physics.faisst_n2_scatter(pop["z"])), rel=0.2)


def test_population_flags_match_requested_fractions():
    pop = draw_population(8000, get_instrument("euclid"), np.random.default_rng(9),
                          SimulationOptions(min_ha_snr=0.0, agn_fraction=0.03))
    assert pop["is_agn"].mean() == pytest.approx(0.03, abs=0.01)
    assert pop["is_contaminated"].mean() == pytest.approx(0.05, abs=0.01)
    assert pop["has_broad"][~pop["is_agn"]].mean() == pytest.approx(0.10, abs=0.015)
    agn = pop["is_agn"]
    assert pop["n2"][agn].min() >= -0.2 and pop["n2"][agn].max() <= 0.3
    # Broad-line regions: FWHM 1,500-6,000 km/s, broad/narrow Hα log-uniform 0.5-20, so a
    # fifth have hardly any narrow lines (ratio > 10 ** (log10(0.5) + 0.8 * log10(40)) = 9.5).
    fwhm = pop["broad_sigma_kms"][agn] * physics.FWHM_PER_SIGMA
    assert fwhm.min() >= 1500.0 and fwhm.max() <= 6000.0 and np.median(fwhm) == pytest.approx(3750, rel=0.1)
    ratio = pop["broad_ha_flux"][agn] / pop["ha_flux"][agn]
    assert ratio.min() >= 0.5 and ratio.max() <= 20.0
    assert np.mean(ratio > 9.5) == pytest.approx(0.2, abs=0.06)
    sf_sigma = pop["sigma_v_kms"][~pop["is_agn"]]
    assert 40.0 < np.median(sf_sigma) < 150.0


def test_off_relation_galaxies_ignore_mass_and_reach_local_n2():
    options = SimulationOptions(min_ha_snr=0.0, agn_fraction=0.0, off_relation_fraction=0.3)
    pop = draw_population(8000, get_instrument("euclid"), np.random.default_rng(5), options)
    off = pop["off_relation"]
    assert off.mean() == pytest.approx(0.3, abs=0.02)
    # On the relation N2 follows mass; off it N2 is flat in -1.4..0 whatever the mass.
    assert np.corrcoef(pop["log_mstar"][~off], pop["n2"][~off])[0, 1] > 0.5
    assert abs(np.corrcoef(pop["log_mstar"][off], pop["n2"][off])[0, 1]) < 0.05
    assert pop["n2"][off].min() >= -1.4 and pop["n2"][off].max() <= 0.0
    assert np.mean(pop["n2"][off] > -0.2) == pytest.approx(0.2 / 1.4, abs=0.03)
    assert pop["n2"][~off].max() < -0.1  # the relation's soft cap
    assert np.isnan(pop["oh12"][off]).all() and np.isfinite(pop["oh12"][~off]).all()
    # EW(Hα) offset flat in -0.5..+0.2 dex: -0.15 dex in the median, same sSFR mix.
    log_ew = np.log10(pop["ew_ha_rest"])
    assert np.median(log_ew[off]) - np.median(log_ew[~off]) == pytest.approx(-0.15, abs=0.05)
    every = draw_population(500, get_instrument("euclid"), np.random.default_rng(6),
                            SimulationOptions(min_ha_snr=0.0, off_relation_fraction=1.0))
    assert every["off_relation"][~every["is_agn"]].all()


def test_selection_counts_the_broad_line_so_agn_without_narrow_lines_pass():
    pop = draw_population(3000, get_instrument("euclid"), np.random.default_rng(7),
                          SimulationOptions(agn_fraction=0.5))
    agn = pop["is_agn"]
    assert np.all(pop["ha_snr"] >= 3.5)
    np.testing.assert_allclose(pop["ha_snr"][~pop["has_broad"]], pop["narrow_ha_snr"][~pop["has_broad"]])
    assert np.all(pop["ha_snr"][agn] > pop["narrow_ha_snr"][agn])
    assert np.mean(pop["narrow_ha_snr"][agn] < 3.5) > 0.2  # kept for their broad line alone
    # the total lies between the quadrature sum (no overlap) and the plain sum (same profile)
    narrow, broad_only = pop["narrow_ha_snr"][agn], pop["ha_snr"][agn]
    assert np.all(broad_only <= narrow * (1 + pop["broad_ha_flux"][agn] / pop["ha_flux"][agn]) + 1e-9)


def test_artefacts_are_unmasked_strong_near_halpha_and_change_nothing_else():
    kwargs = dict(n=256, instrument="euclid", seed=12)
    clean = simulate_galaxies(**kwargs, artefact_fraction=0.0)
    dirty = simulate_galaxies(**kwargs, artefact_fraction=0.5)
    hit = dirty["has_artefact"]
    assert not clean["has_artefact"].any() and hit.mean() == pytest.approx(0.5, abs=0.1)
    for name, value in clean.items():
        if name not in ("lowres_flux", "has_artefact"):
            np.testing.assert_array_equal(value, dirty[name], err_msg=name)
    np.testing.assert_array_equal(clean["lowres_flux"][~hit], dirty["lowres_flux"][~hit])
    wave = get_instrument("euclid").wavelength
    halpha = physics.LINE_WAVELENGTHS["halpha"] * (1.0 + dirty["z"])
    for row in np.flatnonzero(hit):
        offset = (dirty["lowres_flux"][row] - clean["lowres_flux"][row]) * np.sqrt(dirty["lowres_ivar"][row])
        pixels = np.flatnonzero(np.abs(offset) > 1e-3)
        assert 1 <= pixels.size <= 6 and np.all(np.abs(offset[pixels]) >= 5.0 - 1e-3)
        assert not dirty["lowres_mask"][row, pixels].any()
        assert pixels[-1] - pixels[0] < 6  # one spike or one run of neighbours (masked ones left alone)
        assert abs(wave[pixels[0]] - halpha[row]) <= 400.0 + np.diff(wave).max()  # starting near Hα


def test_unknown_option_is_a_value_error():
    with pytest.raises(ValueError, match="bad simulation option"):
        simulate_galaxies(2, "euclid", seed=0, colour="blue")


def test_iter_batches_are_independent_of_workers(monkeypatch):
    monkeypatch.setattr(simulate, "CHUNK_SIZE", 8)
    serial = list(iter_simulated_batches(20, "euclid", seed=2, first_object_id=100))
    parallel = list(iter_simulated_batches(20, "euclid", seed=2, workers=2, first_object_id=100))
    assert [len(b["z"]) for b in serial] == [8, 8, 4]
    np.testing.assert_array_equal(np.concatenate([b["object_id"] for b in serial]),
                                  np.arange(100, 120))
    for one, two in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(one["lowres_flux"], two["lowres_flux"])


def test_plot_examples_writes_a_png(batch, tmp_path):
    from specsr_keras.simulate.plot import plot_examples

    path = plot_examples(batch, tmp_path / "examples.png", n=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_snr_weighting_populates_bright_bins_and_keeps_the_selection_cut():
    plain = simulate_galaxies(600, "euclid_nisp_red", seed=5)["ha_snr"]
    stratified = simulate_galaxies(600, "euclid_nisp_red", seed=5, snr_weight_power=1.5)["ha_snr"]
    assert stratified.min() >= 3.5
    assert np.mean(stratified >= 5) > np.mean(plain >= 5) + 0.05
