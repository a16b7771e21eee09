"""`specsr simulate`: simulated galaxies (image, grism spectrum, R=3600 target) to HDF5 shards."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cli.common import one_line_errors, reporter

# Galaxy ids of a dataset start at seed * ID_STRIDE, so datasets of different seeds don't clash.
ID_STRIDE = 1_000_000_000


@one_line_errors
def simulate(
    n: Annotated[int, typer.Option(min=1, help="Number of galaxies to simulate.")],
    out: Annotated[Path, typer.Option(help="Output directory for shard-*.h5 and manifest.json.")],
    instrument: Annotated[str, typer.Option(
        help="Low-res instrument: hst_g141 (alias g141, 3dhst), euclid_nisp_red (euclid), "
        "roman_grism (roman), mosfire_j/h/k.")] = "euclid_nisp_red",
    seed: Annotated[int, typer.Option(
        min=0, help="Random seed; the same seed gives the same data.")] = 0,
    shard_size: Annotated[int, typer.Option(min=1, help="Galaxies per HDF5 shard file.")] = 4096,
    plot: Annotated[bool, typer.Option(help="Also write OUT/examples.png (4 examples).")] = False,
    min_ha_snr: Annotated[float, typer.Option(
        help="Keep galaxies whose expected grism Hα S/N (matched filter) is at least this.")] = 3.5,
    snr_weight_power: Annotated[float, typer.Option(
        min=0, help="Stratify by Hα S/N: keep with probability min(1, (S/N/30)^power); "
        "0 = flux-limited sample, 1.5 populates the bright bins for training/evaluation.")] = 0.0,
    n2_offset_dex: Annotated[float, typer.Option(
        help="Stress test: shift star-forming N2 by this many dex above the simulator's "
        "Faisst-based relation (galaxies on it; add --off-relation-fraction 0 to shift every "
        "star former).")] = 0.0,
    ew_offset_dex: Annotated[float, typer.Option(
        help="Stress test: shift the rest EW(Hα) by this many dex (negative: more continuum "
        "and relatively deeper Balmer absorption).")] = 0.0,
    off_relation_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of star formers whose N2 (flat in -1.4..0 dex) and EW(Hα) "
        "ignore the fitted relations (1 = all: a stress set like nearby galaxies).")] = 0.2,
    agn_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of AGN among the galaxies drawn before the flux "
        "selection (broad Hα of FWHM 1,500-6,000 km/s; 0.01 gives ~9 % of a flux-limited sample).")] = 0.01,
    outflow_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of star formers with an outflow (broad wing).")] = 0.10,
    contamination_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share contaminated by a neighbour's spectrum near Hα.")] = 0.05,
    artefact_fraction: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share with an unmasked hot pixel or bad-pixel run near Hα.")] = 0.02,
    noise_scale: Annotated[float, typer.Option(
        min=0.01, help="Multiply the grism noise sigma by this (0.25 = 16x the exposure): "
        "bright S/N bins with the same galaxies.")] = 1.0,
    workers: Annotated[int, typer.Option(
        min=1, help="Processes simulating chunks in parallel (pays off on idle cores).")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in OUT.")] = False,
):
    """Simulate galaxies and write them as HDF5 shards plus manifest.json.

    Example: [bold]specsr simulate --n 4000 --instrument euclid --seed 1 --out demo/data/train[/]
    """
    from specsr_keras.data.shards import write_shards
    from specsr_keras.instruments import get_instrument
    from specsr_keras.simulate import dataset_metadata, iter_simulated_batches

    instrument_ = get_instrument(instrument)
    options = {"min_ha_snr": min_ha_snr, "snr_weight_power": snr_weight_power,
               "n2_offset_dex": n2_offset_dex, "ew_offset_dex": ew_offset_dex, "noise_scale": noise_scale,
               "off_relation_fraction": off_relation_fraction, "agn_fraction": agn_fraction,
               "outflow_fraction": outflow_fraction, "contamination_fraction": contamination_fraction,
               "artefact_fraction": artefact_fraction}
    manifest_extra, attrs = dataset_metadata(instrument_, seed, **options)
    batches = iter_simulated_batches(n, instrument_, seed, workers=workers,
                                     first_object_id=seed * ID_STRIDE, **options)
    report = reporter("galaxies")
    examples = {}
    start = time.perf_counter()
    with report.task(f"simulate {instrument_.name}", total=n) as advance:

        def progress():
            for batch in batches:
                examples.setdefault("batch", batch)
                yield batch
                advance(len(batch["z"]))

        write_shards(out, progress(), manifest_extra, shard_size, attrs=attrs,
                     overwrite=overwrite)
    elapsed = time.perf_counter() - start
    report.info(f"[green]wrote[/] {n} galaxies to {out} in {elapsed:.1f} s "
                f"({n / elapsed:,.0f} galaxies/s)")
    if plot:
        from specsr_keras.simulate.plot import plot_examples

        plot_examples(examples["batch"], out / "examples.png", instrument=instrument_.name)
        report.info(f"plot: {out / 'examples.png'}")
