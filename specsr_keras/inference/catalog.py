"""Catalog input of `specsr infer`: open, read rows in chunks, validate onto the model grid.

A catalog is a FITS binary table, an HDF5 table (one compound dataset, or one dataset per
column), a Parquet file, or a directory / glob of per-object spectrum files read by
`specsr_keras.data.readers`. `open_catalog(path)` inspects it (no data read) and returns a
picklable `Catalog`; `Catalog.read(start, stop)` reads units [start, stop) (table rows;
files in directory mode) in memory proportional to stop - start: FITS through a memmap row
slice, HDF5 through dataset slices, Parquet through record batches of the row groups
that overlap. `prepare_rows` turns what was read into the predictor batch on the model
grid, and every row it cannot use into a quarantine entry with a reason.

Table columns (case-insensitive; first match wins): id (`object_id`, `id`, `objid`,
`source_id`), `flux` / `lowres_flux` [1e-17 erg s^-1 cm^-2 Å^-1], `ivar` / `lowres_ivar`
(or a 1σ `flux_err` / `error`), optional `mask` (True/nonzero = bad), `wavelength` [Å,
vacuum, observed] per row, `z_prior` (NaN = none), `instrument` per row,
`source_sigma_arcsec`. Without a wavelength column a spectrum is on the grid of its
instrument: the `instrument` column, else the table's INSTRUME / instrument keyword,
else the model's. Spectra on another grid are resampled onto the model grid with the
one flux-conserving resampler.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from specsr_keras.data.records import SpecsrInputError, ivar_from_sigma
from specsr_keras.instruments import Instrument, get_instrument, resolve_instrument_name
from specsr_keras.measure.flags import QualityFlag
from specsr_keras.spectral.band import edges_from_centres, finer_grid_ivar_factor, resample_flux
from specsr_keras.units import FLUX_UNIT, IVAR_UNIT, WAVELENGTH_UNIT

__all__ = ["Catalog", "PreparedRows", "RawRows", "cell_problem", "open_catalog", "prepare_rows"]

# Column roles and the names that fill them, in order of preference.
COLUMN_NAMES = {
    "object_id": ("object_id", "id", "objid", "source_id"),
    "flux": ("flux", "lowres_flux"),
    "ivar": ("ivar", "lowres_ivar"),
    "error": ("flux_err", "error", "err", "sigma"),
    "mask": ("mask", "lowres_mask"),
    "wavelength": ("wavelength", "wave", "lowres_wavelength"),
    "z_prior": ("z_prior", "zprior"),
    "instrument": ("instrument",),
    "source_sigma_arcsec": ("source_sigma_arcsec",),
    "log_mstar_catalog": ("log_mstar", "log_mstar_catalog", "lmass"),
    "image": ("image", "cutout"),
}
# Roles a catalog must have for each modality (besides object_id).
REQUIRED_ROLES = {"spectrum": ("flux",), "image": ("image",)}
SPECTRUM_ROLES = ("flux", "ivar", "error", "mask", "wavelength")
INSTRUMENT_KEYS = ("INSTRUME", "instrument")
TABLE_SUFFIXES = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".h5": "hdf5",
                  ".hdf5": "hdf5", ".parquet": "parquet", ".pq": "parquet"}
SPECTRUM_FILE_PATTERNS = ("*.fits", "*.fit", "*.fits.gz")
# A z prior outside this range (or inf) is ignored and flagged Z_PRIOR_INVALID.
Z_PRIOR_RANGE = (0.0, 20.0)
# Pixel-centre tolerance [Å] within which a given wavelength grid counts as the model's.
SAME_GRID_TOLERANCE_A = 1e-3


@dataclass
class RawRows:
    """Units [start, stop) as read, before validation.

    row: (n,) int64 input row (file index in directory mode); object_id: (n,) str;
    flux, ivar, mask, wavelength: (n, L) arrays or lists of 1-D arrays (None = null), or
    None when the column is absent; instrument: (n,) canonical names ("" = unknown);
    z_prior, source_sigma_arcsec, log_mstar_catalog: (n,) float (NaN = none; the last a
    catalogue log10 M*/Msun); rejects: (row, object_id, reason) of units that could not be
    read at all; bad_cells: (n,) str, why a row's scalar cell could not be parsed ("" = fine;
    the row is quarantined with that reason).
    """

    row: np.ndarray
    object_id: np.ndarray
    flux: object
    ivar: object
    mask: object = None
    wavelength: object = None
    instrument: np.ndarray | None = None
    z_prior: np.ndarray | None = None
    source_sigma_arcsec: np.ndarray | None = None
    log_mstar_catalog: np.ndarray | None = None
    rejects: list = field(default_factory=list)
    image: object = None  # (n, H, W, bands) array or list (None = null), or None if absent
    bad_cells: np.ndarray | None = None

    def take(self, positions, keep_rejects: bool = True) -> RawRows:
        """The rows at `positions` (in that order); the rejects stay only if keep_rejects."""
        positions = np.asarray(positions, np.int64)

        def pick(values):
            if values is None:
                return None
            if isinstance(values, list):
                return [values[p] for p in positions]
            return np.asarray(values)[positions]

        return RawRows(**{name: pick(getattr(self, name)) for name in
                          ("row", "object_id", "flux", "ivar", "mask", "wavelength", "instrument",
                           "z_prior", "source_sigma_arcsec", "log_mstar_catalog", "image", "bad_cells")},
                       rejects=list(self.rejects) if keep_rejects else [])


@dataclass
class PreparedRows:
    """Rows ready for a predictor, plus the quarantined ones.

    batch: lowres_flux/ivar (B, L) float32, lowres_mask (B, L) bool on the model grid,
    z_prior, source_sigma_arcsec, log_mstar_catalog (B,) float64, instrument_id (B,) int64; row (B,) int64,
    object_id (B,) str and flags (B,) int64 (QualityFlag bits from validation).
    quarantine: list of (row, object_id, reason).
    """

    batch: dict
    quarantine: list


@dataclass(frozen=True)
class Catalog:
    """An opened catalog (see module docstring). n_units: rows, or files in directory mode."""

    path: str
    kind: str  # "fits", "hdf5", "parquet" or "files"
    n_units: int
    columns: dict = field(default_factory=dict)  # role -> column name (tables)
    instrument: str = ""  # table-level instrument ("" = unknown)
    location: str = ""  # FITS HDU index or HDF5 dataset path ("" = one dataset per column)
    files: tuple = ()  # directory mode
    scales: dict = field(default_factory=dict)  # role -> factor to specsr's unit, from column units

    def read(self, start: int, stop: int) -> RawRows:
        """Units [start, stop) as RawRows."""
        stop = min(stop, self.n_units)
        if self.kind == "files":
            return _read_files(self.files, start, stop)
        reader = {"fits": _read_fits, "hdf5": _read_hdf5, "parquet": _read_parquet}[self.kind]
        try:
            columns = reader(self, start, stop)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise SpecsrInputError(self.path, f"cannot read rows {start}-{stop - 1} "
                                              f"(truncated or damaged file?): {exc}") from None
        for role in SPECTRUM_ROLES + ("image",):
            if role in columns and not isinstance(columns[role], list) \
                    and np.asarray(columns[role]).dtype.kind in "USO":
                raise SpecsrInputError(self.path, f"column {self.columns[role]!r} ({role}) holds text, "
                                                  "expected numbers")
        for role, factor in self.scales.items():
            columns[role] = _map_rows(columns[role], lambda values, f=factor: np.asarray(values, np.float64) * f)
        return _raw_from_columns(columns, start, stop, self.instrument)


# --- opening -----------------------------------------------------------------------------

def open_catalog(path, modality: str = "spectrum") -> Catalog:
    """Inspect a table file, a directory or a glob of spectrum files; no data are read.

    modality: "spectrum" (flux + ivar columns required) or "image" (an `image` column
    of cutouts required; table files only).

    Raises SpecsrInputError (one line naming the path) for a missing or empty catalog,
    an unknown format or missing required columns.
    """
    text = str(path)
    if any(char in text for char in "*?["):
        return _open_files(os.path.abspath(text), sorted(glob.glob(os.path.abspath(text))))
    path = Path(text)
    if path.is_dir() and modality == "image":
        raise SpecsrInputError(path, "image catalogs must be tables (.fits, .h5, .parquet)")
    if path.is_dir():
        path = path.resolve()
        found = {str(p) for pattern in SPECTRUM_FILE_PATTERNS for p in path.glob(pattern)}
        return _open_files(str(path), sorted(found))
    if not path.is_file():
        raise SpecsrInputError(path, "no such file or directory")
    kind = next((kind for suffix, kind in TABLE_SUFFIXES.items() if text.endswith(suffix)), None)
    if kind is None:
        raise SpecsrInputError(path, "unknown catalog format (expected .fits, .h5/.hdf5, "
                                     ".parquet, a directory or a glob of spectrum files)")
    try:
        n_rows, names, meta, location = {"fits": _inspect_fits, "hdf5": _inspect_hdf5,
                                         "parquet": _inspect_parquet}[kind](path)
        units = meta.pop("__units__", {})
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, SpecsrInputError):
            raise
        raise SpecsrInputError(path, f"cannot read the catalog: {exc}") from None
    columns = _match_columns(path, names, modality)
    if n_rows == 0:
        raise SpecsrInputError(path, "the catalog is empty (0 rows)")
    instrument = next((str(meta[key]) for key in INSTRUMENT_KEYS if meta.get(key)), "")
    try:
        instrument = resolve_instrument_name(instrument) if instrument else ""
    except ValueError as exc:
        raise SpecsrInputError(path, str(exc)) from None
    scales = _unit_scales(path, columns, units)
    return Catalog(str(path.resolve()), kind, n_rows, columns, instrument, location, scales=scales)


# Column roles that carry a physical unit, and specsr's unit for each (docs/contracts.md).
ROLE_UNITS = {"wavelength": WAVELENGTH_UNIT, "flux": FLUX_UNIT, "error": FLUX_UNIT, "ivar": IVAR_UNIT,
              "source_sigma_arcsec": "arcsec"}


def _unit_scales(path, columns: dict, units: dict) -> dict:
    """{role: factor} turning columns given in other units (TUNIT / astropy meta) into
    specsr's; a unit that cannot be converted is a one-line error naming the column."""
    import astropy.units as u

    scales = {}
    for role, target in ROLE_UNITS.items():
        text = str(units.get(columns.get(role), "") or "").strip()
        if not text:
            continue  # no unit given: specsr's is assumed (documented)
        try:
            factor = _parse_unit(text).to(target, equivalencies=u.spectral())
        except (ValueError, u.UnitsError) as exc:
            detail = " ".join(str(exc).split())[:120]
            raise SpecsrInputError(path, f"column {columns[role]!r} has unit {text!r}, which cannot be "
                                         f"converted to {u.Unit(target).to_string()} ({detail})") from None
        if not np.isclose(factor, 1.0, rtol=1e-9):
            scales[role] = float(factor)
    return scales


def _open_files(text: str, files: list[str]) -> Catalog:
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise SpecsrInputError(text, "no spectrum files found (the catalog is empty)")
    return Catalog(text, "files", len(files), files=tuple(files))


def _match_columns(path, names, modality: str = "spectrum") -> dict:
    lower = {name.lower(): name for name in names}
    columns = {}
    for role, candidates in COLUMN_NAMES.items():
        match = next((lower[c] for c in candidates if c in lower), None)
        if match is not None:
            columns[role] = match
    missing = [role for role in ("object_id", *REQUIRED_ROLES[modality]) if role not in columns]
    if modality == "spectrum" and "ivar" not in columns and "error" not in columns:
        missing.append("ivar")
    if missing:
        wanted = "; ".join(f"{role} (one of {', '.join(COLUMN_NAMES[role])})"
                           for role in missing)
        raise SpecsrInputError(path, f"missing required column(s): {wanted}; "
                                     f"found: {', '.join(names) or 'none'}")
    return columns


def _inspect_fits(path):
    from astropy.io import fits

    with warnings.catch_warnings(), fits.open(path, memmap=True) as hdul:
        warnings.simplefilter("ignore")  # astropy's truncation warning: the error below says it
        for index, hdu in enumerate(hdul):
            if isinstance(hdu, fits.BinTableHDU):
                header = hdu.header
                end = hdul.fileinfo(index)["datLoc"] + header["NAXIS1"] * header["NAXIS2"] + header.get("PCOUNT", 0)
                if not str(path).endswith(".gz") and end > Path(path).stat().st_size:
                    raise SpecsrInputError(path, f"truncated: the table needs {end} bytes, the file has "
                                                 f"{Path(path).stat().st_size}")
                meta = {key: header.get(key) for key in INSTRUMENT_KEYS}
                meta["__units__"] = {column.name: column.unit for column in hdu.columns if column.unit}
                return header["NAXIS2"], list(hdu.columns.names), meta, str(index)
    raise SpecsrInputError(path, "no binary table HDU")


def _inspect_hdf5(path):
    import h5py

    with h5py.File(path, "r") as handle:
        meta = dict(handle.attrs)
        datasets = {name: item for name, item in handle.items()
                    if isinstance(item, h5py.Dataset) and item.ndim >= 1}
        table = next((d for d in datasets.values() if d.dtype.names and d.ndim == 1), None)
        if table is not None:  # one compound dataset (astropy's layout)
            meta.update(table.attrs)
            serialized = handle.get(f"{table.name}.__table_column_meta__")  # astropy serialize_meta=True
            if serialized is not None:
                from astropy.table.meta import get_header_from_yaml

                lines = [line.decode() if isinstance(line, bytes) else str(line) for line in serialized[()]]
                header = get_header_from_yaml(lines)
                meta.update(header.get("meta", {}))
                meta["__units__"] = _yaml_units(header)
            return table.shape[0], list(table.dtype.names), meta, table.name
        # One dataset per column: the columns are the datasets as long as the flux one
        # (others, such as a wavelength grid, are not per object).
        flux = next((d for name, d in datasets.items()
                     if name.lower() in COLUMN_NAMES["flux"] + COLUMN_NAMES["image"]), None)
        if flux is None:
            return 0, list(datasets), meta, ""
        rows = flux.shape[0]
        return rows, [name for name, d in datasets.items() if d.shape[0] == rows], meta, ""


def _inspect_parquet(path):
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema_meta = {k.decode(): v.decode() for k, v in (parquet.schema_arrow.metadata or {}).items()}
    meta = dict(schema_meta)
    if "table_meta_yaml" in schema_meta:  # written by astropy
        from astropy.table.meta import get_header_from_yaml

        header = get_header_from_yaml(schema_meta["table_meta_yaml"].splitlines())
        meta.update(header.get("meta", {}))
        meta["__units__"] = _yaml_units(header)
    return parquet.metadata.num_rows, parquet.schema_arrow.names, meta, ""


def _parse_unit(text: str):
    """An astropy unit from FITS (TUNIT) or astropy's generic text."""
    import astropy.units as u

    for fmt in ("fits", "generic"):
        try:
            return u.Unit(text, format=fmt, parse_strict="raise")
        except ValueError as exc:
            error = exc
    raise error


def _yaml_units(header: dict) -> dict:
    """{column: unit text} from astropy's serialised table header."""
    return {column["name"]: column["unit"] for column in header.get("datatype", []) if column.get("unit")}


# --- reading -----------------------------------------------------------------------------

def _read_fits(catalog: Catalog, start: int, stop: int) -> dict:
    """Rows [start, stop) of a FITS binary table through a numpy memmap of its bytes.

    astropy's `hdu.data` converts logical (L) columns for the whole table at once (the
    whole file in memory); this reads only the chunk's rows, and for variable-length
    (P/Q) columns only their heap arrays. TSCAL/TZERO are applied. A gzipped file (.fits.gz)
    cannot be memory-mapped and is read through astropy (decompressed in memory).
    """
    from astropy.io import fits

    index = int(catalog.location)
    if catalog.path.endswith(".gz"):  # no memmap of compressed bytes: astropy decompresses
        with fits.open(catalog.path) as hdul:
            rows = hdul[index].data[start:stop]
            return {role: [np.asarray(v) for v in rows[name]] if _is_variable_length(rows.columns[name])
                    else _plain(rows[name]) for role, name in catalog.columns.items()}
    with fits.open(catalog.path, memmap=False) as hdul:  # headers only
        hdu, data_offset = hdul[index], hdul.fileinfo(index)["datLoc"]
        header, columns = hdu.header, hdu.columns
        raw_dtype = np.dtype([(name, columns.dtype[name].base.newbyteorder(">"),
                               columns.dtype[name].shape) for name in columns.dtype.names])
    n_rows = header["NAXIS2"]
    rows = np.memmap(catalog.path, dtype=raw_dtype, mode="r", offset=data_offset,
                     shape=(n_rows,))[start:stop]
    heap_offset = data_offset + header.get("THEAP", header["NAXIS1"] * n_rows)
    out = {}
    for role, name in catalog.columns.items():
        column = columns[name]
        code = str(column.format).lstrip("0123456789")
        if _is_variable_length(column):  # (count, offset) descriptors into the heap
            element = np.dtype(_FITS_CODES[code[1]])
            heap = np.memmap(catalog.path, dtype=np.uint8, mode="r", offset=heap_offset)
            values = [np.frombuffer(heap[offset:offset + count * element.itemsize], element)
                      for count, offset in rows[name]]
            values = [_fits_values(v, code[1], column) for v in values]
        else:
            values = _fits_values(rows[name], code[0], column)
        out[role] = _plain(values) if not isinstance(values, list) else values
    return out


def _is_variable_length(column) -> bool:
    """A FITS P/Q (variable-length array) column."""
    return str(column.format).lstrip("0123456789")[0] in "PQ"


# FITS binary-table element codes -> on-disk numpy dtypes (L is stored as b"T" / b"F").
_FITS_CODES = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


def _fits_values(values, code: str, column) -> np.ndarray:
    """Native copy of raw FITS values: logical -> bool, TSCAL/TZERO applied."""
    if code == "L":
        return np.asarray(values) == ord("T")
    values = np.array(values, dtype=np.asarray(values).dtype.newbyteorder("="))
    if column.bscale not in (None, 1) or column.bzero not in (None, 0):
        values = values * (column.bscale or 1) + (column.bzero or 0)
    return values


def _read_hdf5(catalog: Catalog, start: int, stop: int) -> dict:
    import h5py

    with h5py.File(catalog.path, "r") as handle:
        if catalog.location:
            data = handle[catalog.location][start:stop]
            return {role: _plain(data[name]) for role, name in catalog.columns.items()}
        return {role: _plain(handle[name][start:stop]) for role, name in catalog.columns.items()}


def _read_parquet(catalog: Catalog, start: int, stop: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(catalog.path)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    group_start = np.concatenate([[0], np.cumsum(sizes)])
    groups = [i for i in range(len(sizes)) if group_start[i] < stop and group_start[i + 1] > start]
    names = list(catalog.columns.values())
    pieces, offset = [], group_start[groups[0]]
    for batch in parquet.iter_batches(batch_size=max(stop - start, 1), row_groups=groups,
                                      columns=names):
        lo, hi = max(start - offset, 0), min(stop - offset, batch.num_rows)
        if hi > lo:
            pieces.append(batch.slice(lo, hi - lo))
        offset += batch.num_rows
        if offset >= stop:
            break
    table = pa.Table.from_batches(pieces)
    return {role: _arrow_column(table.column(name)) for role, name in catalog.columns.items()}


def _arrow_column(column):
    """Numpy (n,) / (n, L) array, or a list of 1-D arrays (None = null) if ragged."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks()
    if not pa.types.is_list(column.type) and not pa.types.is_fixed_size_list(column.type) \
            and not pa.types.is_large_list(column.type):
        return _plain(column.to_numpy(zero_copy_only=False))
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if column.null_count == 0 and len(column) and np.all(lengths == lengths[0]):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return [None if value is None else np.asarray(value) for value in
            column.to_numpy(zero_copy_only=False)]


def _plain(values):
    """Native-endian numpy array; object arrays (variable-length columns) become lists."""
    values = np.asarray(values)
    if values.dtype == object and len(values) and isinstance(values[0], bytes | str):
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=str)
    if values.dtype == object:  # variable-length arrays
        return [None if v is None else np.asarray(v) for v in values]
    if values.dtype.kind == "S":  # FITS pads strings with spaces
        return np.char.rstrip(np.char.decode(values, "ascii", "replace"))
    return values.astype(values.dtype.newbyteorder("="), copy=False)


def _read_files(files, start: int, stop: int) -> RawRows:
    """Spectrum files [start, stop): every record a row (row = file index)."""
    from specsr_keras.data.readers import read_spectra

    rows, ids, instruments, spectra, rejects = [], [], [], [], []
    for index in range(start, stop):
        path = Path(files[index])
        try:
            records, bad = read_spectra(path)
        except Exception as exc:  # noqa: BLE001 - any failure of one file quarantines only it
            message = str(exc) if isinstance(exc, SpecsrInputError) else f"{path}: {exc}"
            rejects.append((index, path.name, f"unreadable_file: {message}"))
            continue
        rejects.extend((index, str(label), f"unreadable_spectrum: {reason}")
                       for label, reason in bad)
        if not records and not bad:
            rejects.append((index, path.name, "unreadable_file: no spectrum in the file"))
        for record in records:
            rows.append(index)
            ids.append(record.object_id or path.name)
            instruments.append(record.instrument)
            spectra.append(record)
    return RawRows(
        row=np.array(rows, np.int64), object_id=np.array(ids, dtype=str),
        flux=[s.flux for s in spectra], ivar=[s.ivar for s in spectra],
        mask=[s.mask for s in spectra], wavelength=[s.wavelength for s in spectra],
        instrument=np.array(instruments, dtype=str), rejects=rejects)


def _raw_from_columns(columns: dict, start: int, stop: int, table_instrument: str) -> RawRows:
    n = stop - start
    ivar = columns.get("ivar")
    if ivar is None and "error" in columns:
        ivar = _map_rows(columns["error"], ivar_from_sigma)
    mask = columns.get("mask")
    if mask is not None:
        mask = _map_rows(mask, lambda m: np.asarray(m).astype(bool))
    instrument = np.full(n, table_instrument, dtype=object)
    if "instrument" in columns:
        given = np.char.strip(np.asarray(columns["instrument"], dtype=str))
        instrument = np.where(given == "", instrument, given)

    bad_cells = np.full(n, "", dtype=object)

    def scalar(role):
        values = columns.get(role)
        if values is None:
            return np.full(n, np.nan)
        parsed, unparsed = parse_numbers(values)
        first = (unparsed != "") & (bad_cells == "")
        bad_cells[first] = [f"unparseable_value: {role} = {text} is not a number" for text in unparsed[first]]
        return parsed

    return RawRows(
        row=np.arange(start, stop, dtype=np.int64),
        object_id=np.asarray(columns["object_id"]).astype(str),
        flux=columns.get("flux"), ivar=ivar, image=columns.get("image"), mask=mask,
        wavelength=columns.get("wavelength"),
        instrument=instrument.astype(str), z_prior=scalar("z_prior"),
        source_sigma_arcsec=scalar("source_sigma_arcsec"), log_mstar_catalog=scalar("log_mstar_catalog"),
        bad_cells=bad_cells.astype(str))


def parse_numbers(values) -> tuple[np.ndarray, np.ndarray]:
    """(float64 (n,), why (n,) str): a numeric column as is; text cells parsed one by one, an
    empty or null cell as NaN, and a cell that is not a number as NaN with its text quoted."""
    values = np.asarray(values)
    why = np.full(len(values), "", dtype=object)
    if values.dtype.kind in "biuf":
        return values.astype(np.float64), why.astype(str)
    parsed = np.full(len(values), np.nan)
    for pos, value in enumerate(values):
        text = "" if value is None else (value.decode(errors="replace") if isinstance(value, bytes)
                                         else str(value)).strip()
        if text == "" or text.lower() in ("nan", "none", "null"):
            continue
        try:
            parsed[pos] = float(text)
        except ValueError:
            why[pos] = repr(text[:40])
    return parsed, why.astype(str)


def _map_rows(values, function):
    if isinstance(values, list):
        return [None if v is None else function(v) for v in values]
    return function(values)


# --- validation --------------------------------------------------------------------------

def _lengths(values, n: int) -> np.ndarray:
    """Pixels per row; -1 for a null row; None column -> all -2 (absent)."""
    if values is None:
        return np.full(n, -2)
    if isinstance(values, list):
        return np.array([-1 if v is None or np.ndim(v) != 1 or len(v) == 0 else len(v)
                         for v in values])
    values = np.asarray(values)
    return np.full(n, values.shape[1] if values.ndim == 2 else -1)


def _stack(values, positions, dtype=np.float64) -> np.ndarray:
    if isinstance(values, list):
        return np.array([values[p] for p in positions], dtype=dtype)
    return np.asarray(values[positions], dtype=dtype)


def prepare_rows(raw: RawRows, model_instrument: Instrument | str) -> PreparedRows:
    """Validate raw rows and put them on the model's grid; see PreparedRows.

    Quarantine reasons: unparseable_value, missing_value, length_mismatch, unknown_instrument,
    wrong_grid_length, bad_wavelength, no_finite_flux, no_positive_ivar,
    no_usable_pixels, no_overlap (after resampling), plus the reader's unreadable_*.
    Single bad pixels (NaN/inf flux, non-positive ivar) are masked, not quarantined.
    Rows are grouped by source grid so each group is validated and resampled at once.
    """
    model = get_instrument(model_instrument) if isinstance(model_instrument, str) \
        else model_instrument
    n = len(raw.row)
    quarantine = list(raw.rejects)
    lengths = {role: _lengths(getattr(raw, role), n)
               for role in ("flux", "ivar", "mask", "wavelength")}
    instruments = {name: _resolve_or_none(name or model.name) for name in set(raw.instrument)}
    groups = defaultdict(list)
    for pos in range(n):
        source = instruments[raw.instrument[pos]]
        problem = cell_problem(raw, pos) or _row_problem(pos, lengths) or (
            "" if source else f"unknown_instrument: {str(raw.instrument[pos])!r}")
        if problem:
            quarantine.append((int(raw.row[pos]), str(raw.object_id[pos]), problem))
        else:
            groups[(source, int(lengths["flux"][pos]), bool(lengths["wavelength"][pos] > 0))
                   ].append(pos)

    parts = []
    for (source, length, has_wave), positions in groups.items():
        part, bad = _prepare_group(raw, np.array(positions), get_instrument(source), length,
                                   has_wave, model)
        parts.append(part)
        quarantine.extend(bad)
    batch = _concatenate_in_row_order(parts, model.grid.n_pixels)
    return PreparedRows(batch, sorted(quarantine, key=lambda entry: entry[0]))


def _resolve_or_none(name: str) -> str | None:
    try:
        return resolve_instrument_name(name)
    except ValueError:
        return None


def cell_problem(raw: RawRows, pos: int) -> str:
    """The reason a scalar cell of row `pos` could not be parsed ("" = none)."""
    return "" if raw.bad_cells is None else str(raw.bad_cells[pos])


def _row_problem(pos: int, lengths: dict) -> str:
    n_flux = lengths["flux"][pos]
    for role in ("flux", "ivar"):
        if lengths[role][pos] == -1:
            return f"missing_value: {role} is null or empty"
    for role in ("ivar", "mask", "wavelength"):
        if lengths[role][pos] not in (-2, n_flux):
            return f"length_mismatch: flux has {n_flux} pixels, {role} {lengths[role][pos]}"
    return ""


def _source_grid(raw, positions, source: Instrument, length: int, has_wave: bool,
                 model: Instrument):
    """(input edges (L+1,) or (B, L+1) [Å], native (B,) bool, reason (B,) object)."""
    n_model = model.grid.n_pixels
    reason = np.full(len(positions), "", dtype=object)
    if not has_wave:
        if length != source.grid.n_pixels:
            reason[:] = (f"wrong_grid_length: {length} pixels, the {source.name} grid has "
                         f"{source.grid.n_pixels}")
        return source.bin_edges, np.full(len(positions), source.name == model.name), reason
    wave = _stack(raw.wavelength, positions)
    valid = np.isfinite(wave).all(axis=1) & (np.diff(wave, axis=1) > 0).all(axis=1)
    reason[~valid] = "bad_wavelength: wavelengths are not finite and strictly increasing"
    native = np.zeros(len(positions), bool)
    if length == n_model:
        native = np.all(np.abs(wave - model.wavelength) <= SAME_GRID_TOLERANCE_A, axis=1)
    return edges_from_centres(np.where(valid[:, None], wave, np.arange(length))), native, reason


def _prepare_group(raw, positions, source: Instrument, length: int, has_wave: bool,
                   model: Instrument):
    """Validate and resample rows sharing a source grid; returns (batch part, quarantine)."""
    edges_in, native, reason = _source_grid(raw, positions, source, length, has_wave, model)
    flux = _stack(raw.flux, positions)
    ivar = _stack(raw.ivar, positions)
    mask = np.zeros(flux.shape, bool) if raw.mask is None else _stack(raw.mask, positions, bool)
    flags = np.zeros(len(positions), np.int64)

    finite_flux = np.isfinite(flux)
    positive_ivar = np.isfinite(ivar) & (ivar > 0)
    usable = finite_flux & positive_ivar & ~mask
    for test, text in ((finite_flux, "no_finite_flux: flux is NaN or inf in every pixel"),
                       (positive_ivar, "no_positive_ivar: ivar <= 0 or not finite in every pixel"),
                       (usable, "no_usable_pixels: every pixel is masked")):
        reason[(reason == "") & ~test.any(axis=1)] = text
    flags[(~finite_flux | ~np.isfinite(ivar) | (ivar < 0)).any(axis=1)] |= \
        QualityFlag.BAD_PIXELS_MASKED
    flux, ivar = np.where(usable, flux, 0.0), np.where(usable, ivar, 0.0)

    out_flux = np.zeros((len(positions), model.grid.n_pixels))
    out_ivar = np.zeros_like(out_flux)
    keep = (reason == "") & native  # native rows have the model's length
    if keep.any():
        out_flux[keep], out_ivar[keep] = flux[keep], ivar[keep]
    moved = (reason == "") & ~native
    if moved.any():
        row_edges = edges_in[moved] if edges_in.ndim == 2 else edges_in
        out_flux[moved], out_ivar[moved] = resample_flux(row_edges, flux[moved], ivar[moved],
                                                         model.bin_edges)
        out_ivar[moved] *= finer_grid_ivar_factor(row_edges, model.bin_edges)
        flags[moved] |= QualityFlag.RESAMPLED
        no_overlap = moved & ~(out_ivar > 0).any(axis=1)
        reason[no_overlap] = [f"no_overlap: no pixel of the spectrum covers the {model.name} grid "
                              f"({model.wavelength[0]:.0f}-{model.wavelength[-1]:.0f} Angstrom){_unit_hint(edges)}"
                              for edges in (edges_in[no_overlap] if edges_in.ndim == 2
                                            else [edges_in] * int(no_overlap.sum()))]

    z_prior = raw.z_prior[positions] if raw.z_prior is not None else np.full(len(positions), np.nan)
    invalid_prior = ~np.isnan(z_prior) & ~((z_prior >= Z_PRIOR_RANGE[0])
                                           & (z_prior <= Z_PRIOR_RANGE[1]))
    flags[invalid_prior] |= QualityFlag.Z_PRIOR_INVALID
    size = (raw.source_sigma_arcsec[positions] if raw.source_sigma_arcsec is not None
            else np.full(len(positions), np.nan))
    mass = (raw.log_mstar_catalog[positions] if raw.log_mstar_catalog is not None
            else np.full(len(positions), np.nan))

    good = reason == ""
    bad = [(int(raw.row[p]), str(raw.object_id[p]), r)
           for p, r in zip(positions[~good], reason[~good], strict=True)]
    part = {
        "lowres_flux": out_flux[good].astype(np.float32),
        "lowres_ivar": out_ivar[good].astype(np.float32),
        "lowres_mask": ~(out_ivar[good] > 0),
        "z_prior": np.where(invalid_prior, np.nan, z_prior)[good],
        "source_sigma_arcsec": size[good],
        "log_mstar_catalog": mass[good],
        "instrument_id": np.full(good.sum(), source.instrument_id, np.int64),
        "row": raw.row[positions[good]],
        "object_id": raw.object_id[positions[good]],
        "flags": flags[good],
        "_order": positions[good],
    }
    return part, bad


def _unit_hint(edges) -> str:
    """A hint when wavelengths [Å] look like µm or nm (the spectrum then misses every grid);
    ASCII, as it goes into a FITS quarantine table."""
    middle = float(np.median(edges))
    for factor, unit in ((1e4, "micron"), (10.0, "nm")):
        if 3e3 < middle * factor < 3e4 and middle < 3e3:
            return f"; the wavelengths look like {unit} (median {middle:.4g}): give them in Angstrom"
    return ""


def _concatenate_in_row_order(parts: list, n_pixels: int) -> dict:
    """Join group parts back into input order (positions), dropping the helper key."""
    if not parts:
        empty = {"lowres_flux": np.zeros((0, n_pixels), np.float32),
                 "lowres_ivar": np.zeros((0, n_pixels), np.float32),
                 "lowres_mask": np.zeros((0, n_pixels), bool)}
        for key, dtype in (("z_prior", float), ("source_sigma_arcsec", float), ("log_mstar_catalog", float),
                           ("instrument_id", np.int64), ("row", np.int64),
                           ("object_id", str), ("flags", np.int64)):
            empty[key] = np.zeros(0, dtype)
        return empty
    order = np.argsort(np.concatenate([p["_order"] for p in parts]), kind="stable")
    return {key: np.concatenate([p[key] for p in parts])[order]
            for key in parts[0] if key != "_order"}
