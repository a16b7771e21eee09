"""Write a FITS binary table of known length piece by piece, in bounded memory, atomically.

astropy writes a table only from a whole in-memory array; a 1e5-row catalog with
500-pixel spectra is ~0.5 GB. `FitsTableWriter` writes the header once (NAXIS2 = the
final row count) and then the raw big-endian rows of each piece, so memory holds one
piece at a time. The file appears under its name only when complete (temp + rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits

__all__ = ["FitsTableWriter", "atomic_path"]


def atomic_path(path) -> Path:
    """Temporary sibling of `path` (same directory, so os.replace is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _raw_dtype(dtype: np.dtype) -> np.dtype:
    """On-disk FITS row layout of a structured dtype: big-endian, L as 1 byte, A as bytes."""
    fields = []
    for name in dtype.names:
        base, shape = dtype[name].base, dtype[name].shape
        if base.kind == "b":
            raw = np.dtype("u1")
        elif base.kind == "U":
            raw = np.dtype(f"S{base.itemsize // 4}")
        elif base.kind == "S":
            raw = base
        else:
            raw = base.newbyteorder(">")
        fields.append((name, raw, shape))
    return np.dtype(fields)


class FitsTableWriter:
    """FITS file with an empty primary HDU and one BINTABLE of `n_rows` rows of `dtype`.

    dtype: numpy structured dtype (numbers, bool, fixed-width str/bytes, fixed-shape
    sub-arrays). header: extra cards (EXTNAME, provenance); units: {column: astropy unit
    or string}, written in the FITS unit syntax.
    Use as a context manager; `write(rows)` takes a structured array or a dict of
    column arrays. Raises ValueError if the rows written differ from `n_rows`.
    """

    def __init__(self, path, dtype, n_rows: int, header: dict | None = None,
                 units: dict[str, str] | None = None):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.raw_dtype = _raw_dtype(self.dtype)
        self.n_rows = int(n_rows)
        self.written = 0
        self._tmp = atomic_path(self.path)
        hdu = fits.BinTableHDU.from_columns(np.zeros(0, dtype=self.dtype))
        if hdu.header["NAXIS1"] != self.raw_dtype.itemsize:
            raise ValueError(f"cannot stream columns {self.dtype} as a FITS table")
        hdu.header["NAXIS2"] = self.n_rows
        for key, value in (header or {}).items():
            hdu.header[key] = value
        for index, name in enumerate(self.dtype.names, start=1):
            if units and name in units:
                hdu.header[f"TUNIT{index}"] = u.Unit(units[name]).to_string("fits")
        self._header = hdu.header

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp.unlink(missing_ok=True)
        self._stream = fits.StreamingHDU(str(self._tmp), self._header)  # adds a primary HDU
        return self

    def write(self, rows) -> None:
        """Append rows (structured array or dict of (n, ...) arrays with this dtype's names)."""
        n = len(rows) if isinstance(rows, np.ndarray) else len(rows[self.dtype.names[0]])
        if n == 0:
            return
        if self.written + n > self.n_rows:
            raise ValueError(f"{self.path}: more than the {self.n_rows} rows declared")
        raw = np.empty(n, dtype=self.raw_dtype)
        for name in self.dtype.names:
            values = np.asarray(rows[name])
            if self.dtype[name].base.kind == "b":
                values = np.where(values, ord("T"), ord("F"))
            elif values.dtype.kind == "U":
                values = np.char.encode(values, "ascii")
            raw[name] = values
        try:
            self._stream.write(raw.view(np.uint8))
        except OSError as exc:  # e.g. disk full; __exit__ removes the partial file
            raise OSError(f"{self.path}: cannot write ({exc})") from None
        self.written += n

    def __exit__(self, exc_type, exc, traceback):
        self._stream.close()
        if exc_type is None and self.written != self.n_rows:
            self._tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: wrote {self.written} rows of {self.n_rows}")
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
        return False
