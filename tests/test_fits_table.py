"""Streaming FITS table writer: round trip, atomicity, row-count check."""

import numpy as np
import pytest
from astropy.table import Table

from specsr_keras.data.fits_table import FitsTableWriter

DTYPE = np.dtype([("name", "U6"), ("flux", "f4", (3,)), ("bad", "?", (3,)),
                  ("image", "f4", (2, 3, 4)), ("count", "i8"), ("z", "f8")])


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, DTYPE)
    rows["name"] = [f"obj{i}" for i in range(n)]
    rows["flux"] = rng.normal(size=(n, 3))
    rows["bad"] = rng.random((n, 3)) > 0.5
    rows["image"] = rng.normal(size=(n, 2, 3, 4))
    rows["count"] = np.arange(n) * 10**12
    rows["z"] = np.where(np.arange(n) == 1, np.nan, rng.random(n))
    return rows


def test_pieces_written_stream_read_back_equal(tmp_path):
    rows = _rows(7)
    path = tmp_path / "t.fits"
    with FitsTableWriter(path, DTYPE, 7, header={"EXTNAME": "DATA", "INSTRUME": "x"},
                         units={"flux": "Angstrom"}) as writer:
        writer.write(rows[:3])
        writer.write({name: rows[name][3:] for name in DTYPE.names})
    table = Table.read(path, hdu="DATA")
    assert table.meta["INSTRUME"] == "x" and str(table["flux"].unit) == "Angstrom"
    assert table["name"].astype(str).tolist() == rows["name"].tolist()
    for name in DTYPE.names[1:]:
        np.testing.assert_array_equal(np.asarray(table[name]), rows[name])


def test_a_short_write_leaves_no_file(tmp_path):
    path = tmp_path / "t.fits"
    with pytest.raises(ValueError, match="wrote 2 rows of 5"):
        with FitsTableWriter(path, DTYPE, 5) as writer:
            writer.write(_rows(2))
    assert list(tmp_path.iterdir()) == []
