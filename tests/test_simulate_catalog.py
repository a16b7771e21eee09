"""`simulate_catalog`: a streamed Euclid-like catalog plus its held-back truth."""

import numpy as np
from astropy.table import Table

from specsr_keras.instruments import get_instrument
from specsr_keras.simulate.catalog import simulate_catalog, truth_path


def test_catalog_and_truth_rows_match_and_the_seed_fixes_them(tmp_path):
    n = 1030  # two simulator chunks of 1024
    first = simulate_catalog(n, "euclid", tmp_path / "a.fits", seed=4, z_prior_fraction=0.5,
                             min_ha_snr=0.0)
    catalog, truth = Table.read(first["catalog"]), Table.read(truth_path(tmp_path / "a.fits"))
    n_pixels = get_instrument("euclid").grid.n_pixels
    assert len(catalog) == len(truth) == n
    assert catalog["flux"].shape == (n, n_pixels) and catalog["mask"].dtype == bool
    assert catalog.meta["INSTRUME"] == "euclid_nisp_red"
    assert np.array_equal(catalog["object_id"], truth["object_id"])
    assert len(set(catalog["object_id"])) == n
    assert "z" not in catalog.colnames and "n2" in truth.colnames
    z_prior = np.ma.filled(catalog["z_prior"], np.nan)
    assert abs(np.isnan(z_prior).mean() - 0.5) < 0.05
    assert np.nanmedian(np.abs(z_prior - truth["z"])) < 0.2
    again = Table.read(simulate_catalog(n, "euclid", tmp_path / "b.fits", seed=4,
                                        z_prior_fraction=0.5, min_ha_snr=0.0)["catalog"])
    np.testing.assert_array_equal(np.asarray(again["flux"]), np.asarray(catalog["flux"]))


def test_images_are_an_optional_column(tmp_path):
    result = simulate_catalog(3, "euclid", tmp_path / "c.fits", images=True)
    assert Table.read(result["catalog"])["image"].shape == (3, 64, 64, 4)
