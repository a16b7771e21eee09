"""`specsr build-dataset`: cross-match real grism, slit spectra and cutouts into shards."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors, reporter


def _expand(pattern: str | None) -> list[str]:
    return sorted(glob.glob(pattern, recursive=True)) if pattern else []


@one_line_errors
def build_dataset(
    lowres: Annotated[str, typer.Option(
        help="Quoted glob of low-res grism spectra (3D-HST *.1D.fits, Euclid SIR), e.g. "
        "'raw/3dhst/*.1D.fits'. Every example is anchored on one of these.")],
    out: Annotated[Path, typer.Option(help="Output directory, e.g. datasets/real/goodss.")],
    highres: Annotated[str, typer.Option(
        help="Quoted glob of hi-res slit spectra (MOSDEF *.1d.fits, KBSS).")] = "",
    images: Annotated[str, typer.Option(
        help="Quoted glob of multi-extension FITS cutouts (one band per HDU).")] = "",
    catalog: Annotated[Path | None, typer.Option(
        help="FITS/CSV/ECSV table with columns id, ra, dec \\[deg] and z (needed for the "
        "hi-res window; also gives positions of files without RA/DEC).")] = None,
    radius: Annotated[float, typer.Option(min=0.0, help="Match radius \\[arcsec].")] = 0.5,
    lowres_instrument: Annotated[str, typer.Option(
        help="Instrument grid of the low-res spectra (hst_g141, euclid_nisp_red, ...).")]
        = "hst_g141",
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in OUT.")] = False,
):
    """Pair real low-res spectra with hi-res spectra and images by sky position.

    Example: [bold]specsr build-dataset --lowres 'raw/3dhst/*.1D.fits' --highres
    'raw/mosdef/*.1d.fits' --images 'raw/cutouts/*.fits' --catalog raw/matches.fits
    --out datasets/real/goodss[/]
    """
    from rich.table import Table

    from specsr_keras.data.pairing import build_dataset as build

    lowres_files = _expand(lowres)
    if not lowres_files:
        raise FileNotFoundError(f"no file matches --lowres {lowres!r}")
    summary = build(lowres_files, _expand(highres), _expand(images), out, catalog=catalog,
                    radius_arcsec=radius, lowres_instrument=lowres_instrument,
                    overwrite=overwrite, reporter=reporter("files"))
    table = Table(title=f"build-dataset -> {out}")
    table.add_column("item")
    table.add_column("count", justify="right")
    for kind, count in summary["files_read"].items():
        table.add_row(f"{kind} files read", str(count))
    for key in ("examples", "triples", "pairs_hires", "pairs_image", "lowres_only"):
        table.add_row(key.replace("_", " "), str(summary[key]))
    for key in ("rejects", "unmatched", "ambiguous"):
        table.add_row(key, str(len(summary[key])))
    console.print(table)
    for key, label in (("rejects", "rejected"), ("unmatched", "unmatched"),
                       ("ambiguous", "ambiguous")):
        for what, reason in summary[key]:
            console.print(f"[yellow]{label}:[/] {what}: {reason}", highlight=False)
