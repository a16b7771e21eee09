"""Real training data: cross-match low-res grism spectra, hi-res slit spectra and image
cutouts of the same galaxies by sky position and write them as shards (kind "real").

Every example is anchored on a low-res spectrum; a hi-res spectrum and an image are optional
(`has_hires`, `has_image`). Matching is one-to-one: a pair is kept when the two objects are
each other's nearest neighbour within the radius and neither has a second candidate inside
it (such objects are reported as ambiguous and stay unpaired). Hi-res files of one object
(e.g. MOSDEF J, H and K) are grouped by object id and combined on the target window at the
catalogue redshift, masked wherever no band covers a target pixel fully.
Positions [deg] come from the file (meta "ra"/"dec") or the catalogue (columns id, ra, dec,
optional z); redshifts only from the catalogue or a reader's meta "z".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from scipy.ndimage import zoom

from specsr_keras.data.readers import read_cutout, read_spectra
from specsr_keras.data.records import FLUX_UNIT, ImageCutout, SpecsrInputError, Spectrum
from specsr_keras.data.shards import write_shards
from specsr_keras.instruments import TARGET_GRID, Instrument, get_instrument
from specsr_keras.reporting import Reporter
from specsr_keras.simulate import TRUTH_FIELDS
from specsr_keras.simulate.images import BANDS, PIXEL_SCALE_ARCSEC
from specsr_keras.spectral.band import edges_from_centres, resample_flux

IMAGE_SIZE = 64
IMAGE_BANDS = tuple(band.name for band in BANDS)
# Examples per batch handed to the shard writer (bounds the memory of stacked images).
WRITE_BATCH = 256


@dataclass
class Source:
    """One object of one survey: its records, sky position [deg] and file names."""

    object_id: str
    ra: float
    dec: float
    records: list = field(default_factory=list)

    @property
    def files(self) -> list[str]:
        """Source file names, with "[hdu]" for objects of multi-object files."""
        return [Path(_path_of(r)).name + (f"[{r.meta['hdu']}]" if "hdu" in r.meta else "")
                for r in self.records]


@dataclass
class Report:
    """What build_dataset did: counts, rejects (file, reason) and unpaired/ambiguous objects."""

    files_read: Counter = field(default_factory=Counter)
    rejects: list[tuple[str, str]] = field(default_factory=list)
    unmatched: list[tuple[str, str]] = field(default_factory=list)
    ambiguous: list[tuple[str, str]] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"files_read": dict(self.files_read), "rejects": self.rejects,
                "unmatched": self.unmatched, "ambiguous": self.ambiguous, **self.counts}


def _path_of(record) -> str:
    return record.meta.get("path") or record.meta.get("paths", [""])[0]


def read_catalog(path) -> dict[str, dict]:
    """Catalogue rows by id (str): {"ra", "dec" [deg], "z" (NaN if absent)}."""
    try:
        table = Table.read(path)
    except (OSError, ValueError) as exc:
        raise SpecsrInputError(path, f"unreadable catalogue ({exc})") from None
    columns = {name.lower(): name for name in table.colnames}
    missing = [c for c in ("id", "ra", "dec") if c not in columns]
    if missing:
        raise SpecsrInputError(path, f"catalogue lacks column(s) {', '.join(missing)}")
    def floats(name):  # masked or absent entries -> NaN
        if name not in columns:
            return np.full(len(table), np.nan)
        return np.ma.filled(np.ma.asarray(table[columns[name]], dtype=float), np.nan)

    return {str(row_id).strip(): {"ra": ra, "dec": dec, "z": z}
            for row_id, ra, dec, z in zip(table[columns["id"]], floats("ra"), floats("dec"),
                                          floats("z"), strict=True)}


def _position(record, catalog: dict) -> tuple[float, float]:
    if "ra" in record.meta and "dec" in record.meta:
        return float(record.meta["ra"]), float(record.meta["dec"])
    row = catalog.get(record.object_id)
    if row is None or not np.isfinite([row["ra"], row["dec"]]).all():
        raise ValueError(f"no position: no RA/DEC in the file and id {record.object_id!r} "
                         f"not in the catalogue")
    return row["ra"], row["dec"]


def _read_all(paths, read, catalog, report: Report, kind: str) -> list[Source]:
    """Read every file with `read(path) -> (records, rejects)`; one Source per record."""
    sources = []
    for path in paths:
        name = Path(path).name
        try:
            records, rejects = read(path)
        except ValueError as exc:  # SpecsrInputError or an inconsistent record
            report.rejects.append((name, getattr(exc, "problem", str(exc))))
            continue
        report.files_read[kind] += 1
        report.rejects.extend((f"{name}[{label}]", reason) for label, reason in rejects)
        for record in records:
            try:
                ra, dec = _position(record, catalog)
            except ValueError as exc:
                report.rejects.append((name, str(exc)))
                continue
            sources.append(Source(record.object_id, ra, dec, [record]))
    return sources


def _group_by_id(sources: list[Source]) -> list[Source]:
    """Merge sources sharing an object id (one hi-res object observed in several bands)."""
    groups: dict[str, Source] = {}
    for source in sources:
        if source.object_id in groups:
            groups[source.object_id].records.extend(source.records)
        else:
            groups[source.object_id] = source
    return list(groups.values())


def match_one_to_one(anchors: list[Source], others: list[Source], radius_arcsec: float):
    """Mutual-nearest matches within the radius: ({anchor index: other index}, ambiguous).

    ambiguous: {anchor index: other index} of mutual nearest neighbours where one of them
    has a second candidate within the radius; these are not paired.
    """
    if not anchors or not others:
        return {}, {}
    a = SkyCoord([s.ra for s in anchors] * u.deg, [s.dec for s in anchors] * u.deg)
    b = SkyCoord([s.ra for s in others] * u.deg, [s.dec for s in others] * u.deg)
    radius = radius_arcsec * u.arcsec
    a_to_b, a_sep, _ = a.match_to_catalog_sky(b)
    b_to_a, _, _ = b.match_to_catalog_sky(a)

    def crowded(coords, catalog):  # a second neighbour inside the radius
        if len(catalog) < 2:
            return np.zeros(len(coords), bool)
        return coords.match_to_catalog_sky(catalog, nthneighbor=2)[1] <= radius

    a_crowded, b_crowded = crowded(a, b), crowded(b, a)
    pairs, ambiguous = {}, {}
    for i, j in enumerate(a_to_b):
        if a_sep[i] <= radius and b_to_a[j] == i:
            (ambiguous if a_crowded[i] or b_crowded[j] else pairs)[i] = int(j)
    return pairs, ambiguous


def spectrum_on_edges(records: list[Spectrum], edges: np.ndarray):
    """Inverse-variance mean of spectra resampled onto `edges` [Å]: (flux, ivar, mask).

    mask is True where no record covers an output bin fully with unmasked pixels.
    """
    flux_sum = np.zeros(edges.size - 1)
    ivar_sum = np.zeros(edges.size - 1)
    for record in records:
        flux, ivar = resample_flux(edges_from_centres(record.wavelength), record.flux,
                                   record.ivar, edges)
        flux_sum += flux * ivar
        ivar_sum += ivar
    mask = ivar_sum <= 0
    flux = np.divide(flux_sum, ivar_sum, out=np.zeros_like(flux_sum), where=~mask)
    return flux.astype(np.float32), ivar_sum.astype(np.float32), mask


def image_to_model_grid(cutout: ImageCutout) -> tuple[np.ndarray, np.ndarray]:
    """Cutout -> (IMAGE_SIZE, IMAGE_SIZE, 4) float32 on PIXEL_SCALE_ARCSEC pixels, bands
    in IMAGE_BANDS order (missing bands 0), and the (4,) bool band-present flags.

    Resampled by spline zoom (surface brightness kept: values scale with pixel area),
    then centre-cropped or zero-padded.
    """
    factor = cutout.pixel_scale_arcsec / PIXEL_SCALE_ARCSEC
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE, len(IMAGE_BANDS)), np.float32)
    present = np.zeros(len(IMAGE_BANDS), bool)
    names = [b.upper() for b in cutout.bands]
    for slot, band in enumerate(IMAGE_BANDS):
        hits = [i for i, name in enumerate(names) if band in name]
        if not hits:
            continue
        plane = cutout.data[:, :, hits[0]].astype(np.float64)
        if abs(factor - 1.0) > 1e-3:
            plane = zoom(plane, factor, order=1) / factor**2
        out[:, :, slot] = _crop_or_pad(plane, IMAGE_SIZE)
        present[slot] = True
    return out, present


def _crop_or_pad(plane: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    src, dst = [], []
    for n in plane.shape:
        take = min(n, size)
        src.append(slice((n - take) // 2, (n - take) // 2 + take))
        dst.append(slice((size - take) // 2, (size - take) // 2 + take))
    out[dst[0], dst[1]] = plane[src[0], src[1]]
    return out


def _redshift(catalog: dict, *sources: Source | None) -> float:
    for source in filter(None, sources):
        z = catalog.get(source.object_id, {}).get("z", np.nan)
        if np.isfinite(z):
            return z
        z = source.records[0].meta.get("z", np.nan)
        if np.isfinite(z):
            return float(z)
    return np.nan


def _example(index, lowres: Source, hires: Source | None, image: Source | None, z: float,
             instrument: Instrument) -> dict:
    """One example's shard fields (docs/contracts.md; unknown truth NaN / False)."""
    low = lowres.records[0]
    lowres_flux, lowres_ivar, lowres_mask = spectrum_on_edges([low], instrument.bin_edges)
    n_target = TARGET_GRID.n_pixels
    if hires is not None:
        hires_flux, hires_ivar, hires_mask = spectrum_on_edges(
            hires.records, TARGET_GRID.bin_edges * (1.0 + z))
    else:
        hires_flux, hires_ivar = np.zeros(n_target, np.float32), np.zeros(n_target, np.float32)
        hires_mask = np.ones(n_target, bool)
    if image is not None:
        pixels, present = image_to_model_grid(image.records[0])
    else:
        pixels = np.zeros((IMAGE_SIZE, IMAGE_SIZE, len(IMAGE_BANDS)), np.float32)
        present = np.zeros(len(IMAGE_BANDS), bool)
    truth = {name: (np.nan if np.issubdtype(dtype, np.floating) else 0)
             for name, dtype in TRUTH_FIELDS.items()}
    truth.update(object_id=index, z=z, z_prior=z, ra=lowres.ra, dec=lowres.dec)
    return {
        "image": pixels, "image_band_present": present,
        "lowres_flux": lowres_flux, "lowres_ivar": lowres_ivar, "lowres_mask": lowres_mask,
        "hires_flux": hires_flux, "hires_ivar": hires_ivar, "hires_mask": hires_mask,
        "has_hires": hires is not None and not hires_mask.all(), "has_image": image is not None,
        **{name: np.asarray(value, TRUTH_FIELDS[name]) for name, value in truth.items()},
        "source_id": low.object_id, "lowres_file": ";".join(lowres.files),
        "hires_file": ";".join(hires.files) if hires else "",
        "image_file": ";".join(image.files) if image else "",
    }


_STRING_FIELDS = ("source_id", "lowres_file", "hires_file", "image_file")


def _batches(examples: list[dict]):
    """Stacked batches of WRITE_BATCH examples; strings as fixed-width UTF-8 bytes."""
    widths = {name: max(1, *(len(e[name].encode()) for e in examples)) for name in _STRING_FIELDS}
    for start in range(0, len(examples), WRITE_BATCH):
        chunk = examples[start:start + WRITE_BATCH]
        yield {name: (np.array([e[name].encode() for e in chunk], f"S{widths[name]}")
                      if name in _STRING_FIELDS else np.stack([e[name] for e in chunk]))
               for name in chunk[0]}


def build_dataset(lowres_paths, highres_paths, image_paths, out, *, catalog=None,
                  radius_arcsec: float = 0.5, lowres_instrument: str = "hst_g141",
                  overwrite: bool = False, reporter: Reporter | None = None) -> dict:
    """Cross-match real files and write shards + manifest (kind "real") to `out`.

    radius_arcsec: match radius [arcsec]; lowres_instrument: grid of the low-res spectra
    (files of another instrument are rejected). Returns the report dict (also in the
    manifest under "report"): files_read, rejects, unmatched, ambiguous and counts.
    Raises ValueError when no example survives.
    """
    reporter = reporter or Reporter()
    instrument = get_instrument(lowres_instrument)
    table = read_catalog(catalog) if catalog else {}
    report = Report()
    lowres = _read_all(lowres_paths, read_spectra, table, report, "lowres")
    report.rejects.extend((s.files[0], f"instrument {s.records[0].instrument}, expected "
                                       f"{instrument.name}")
                          for s in lowres if s.records[0].instrument != instrument.name)
    lowres = [s for s in lowres if s.records[0].instrument == instrument.name]
    hires = _group_by_id(_read_all(highres_paths, read_spectra, table, report, "hires"))
    images = _read_all(image_paths, lambda p: ([read_cutout(p)], []), table, report, "images")
    reporter.info(f"read {len(lowres)} low-res, {len(hires)} hi-res objects, "
                  f"{len(images)} images")

    hires_of, image_of = {}, {}
    for kind, others, paired in (("hires", hires, hires_of), ("image", images, image_of)):
        pairs, ambiguous = match_one_to_one(lowres, others, radius_arcsec)
        paired.update(pairs)
        report.ambiguous += [(lowres[i].object_id, f"{kind} {others[j].object_id} "
                              f"({', '.join(others[j].files)})") for i, j in ambiguous.items()]
        seen = set(pairs.values()) | set(ambiguous.values())
        report.unmatched += [(s.object_id, f"{kind} {', '.join(s.files)}")
                             for j, s in enumerate(others) if j not in seen]

    examples = []
    for i, low in enumerate(lowres):
        hi = hires[hires_of[i]] if i in hires_of else None
        image = images[image_of[i]] if i in image_of else None
        z = _redshift(table, low, hi)
        if not np.isfinite(z):
            report.rejects.append((low.files[0], "no redshift (catalogue z or file meta)"))
            continue
        examples.append(_example(len(examples), low, hi, image, z, instrument))
    if not examples:
        raise ValueError(f"{out}: no example survived (rejects: {len(report.rejects)})")
    has_hires = np.array([e["has_hires"] for e in examples])
    has_image = np.array([e["has_image"] for e in examples])
    report.counts = {"examples": len(examples), "pairs_hires": int((has_hires & ~has_image).sum()),
                     "pairs_image": int((has_image & ~has_hires).sum()),
                     "triples": int((has_hires & has_image).sum()),
                     "lowres_only": int((~has_hires & ~has_image).sum())}
    surveys = sorted({r.meta.get("format", "cutouts")
                      for s in lowres + hires + images for r in s.records})
    manifest_extra = {
        "kind": "real", "instrument": instrument.name, "lowres_grid": instrument.describe(),
        "target_grid": TARGET_GRID.describe(), "simulator_version": None, "seed": None,
        "flux_unit": FLUX_UNIT.to_string(), "surveys": surveys,
        "image_bands": list(IMAGE_BANDS), "match_radius_arcsec": radius_arcsec,
        "catalog": str(catalog) if catalog else None, "report": report.to_dict(),
    }
    attrs = {"instrument": instrument.name, "lowres_wavelength": instrument.wavelength,
             "hires_wavelength_rest": TARGET_GRID.wavelength, "flux_unit": FLUX_UNIT.to_string(),
             "kind": "real"}
    write_shards(out, _batches(examples), manifest_extra, attrs=attrs, overwrite=overwrite)
    return report.to_dict()
