"""`specsr evaluate`: the science report of a model on held-out simulated and real sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, one_line_errors, reporter


@one_line_errors
def evaluate(
    model: Annotated[str, typer.Option(
        help="'baseline' (direct low-res fit on each set's grid), 'baseline:<instrument>', "
        "or an exported model.")],
    data: Annotated[str, typer.Option(
        help="Held-out shard directories, comma-separated (one instrument each, e.g. a "
        "Euclid and a G141 set simulated with a seed never used in training, or a real set "
        "from `specsr build-dataset`).")],
    out: Annotated[Path, typer.Option(help="Report directory, e.g. reports/NAME.")],
    max_examples: Annotated[int | None, typer.Option(
        min=1, help="Evaluate only the first N objects of each set.")] = None,
    samples: Annotated[int | None, typer.Option(
        min=2, help="Posterior samples per object (diffusion models); default: the model's.")] = None,
    sampler: Annotated[str | None, typer.Option(
        help="Change a Keras model's sampler: comma-separated key=value, e.g. "
        "'amortised=true,data_consistency=false' or 'steps=20,eta=1' (see models/samplers.py).")] = None,
    seed: Annotated[int, typer.Option(
        min=0, help="Base seed (model sampling, ceiling noise).")] = 0,
    embeddings_from: Annotated[Path | None, typer.Option(
        exists=True, file_okay=False, help="Training run whose aligner embeds the headline set's "
        "images and spectra for retrieval, kNN redshift/mass R² and anomaly metrics, and whose "
        "super-resolver generates spectra from the images alone (their N2 against the truth).")] = None,
    domain_gap_against: Annotated[Path | None, typer.Option(
        exists=True, file_okay=False, help="Simulated shard directory the real sets of --data "
        "are compared with (continuum slope, Hα σ_v and N2 distributions; default: the first "
        "simulated set of --data).")] = None,
    withhold: Annotated[str | None, typer.Option(
        help="Catalogue inputs to withhold from specsr and the baselines, comma-separated: "
        "'image', 'mass' (e.g. 'image,mass': the spectrum-only mode; the Faisst baselines, "
        "which need a mass, are left out).")] = None,
):
    """Compare a model with the direct low-res fit, the Faisst+18 prior and the R=3600 ceiling.

    Writes OUT/report.md, OUT/report.html (figures embedded) and OUT/metrics.json:
    N2 = log10([NII]6585/Hα) \\[dex], Hα flux \\[fractional], Δz/(1+z) bias and NMAD per
    S/N(Hα) and stellar-mass bin, shrinkage slope and interval coverage. Real sets have no
    line truth: only their redshift errors (vs the catalogue) and the domain gap to a
    simulated set are reported.
    Example: [bold]specsr evaluate --model baseline --data demo/data/heldout --out reports/base[/]
    """
    from specsr_keras.evaluation import evaluate as run_evaluation
    from specsr_keras.models.samplers import parse_sampler_settings

    dirs = [part.strip() for part in data.split(",") if part.strip()]
    metrics = run_evaluation(model, dirs, out, max_examples=max_examples, samples=samples,
                             seed=seed, sampler=parse_sampler_settings(sampler), crossmodal_run=embeddings_from,
                             domain_gap_against=domain_gap_against,
                             withhold=[part.strip() for part in (withhold or "").split(",") if part.strip()],
                             reporter=reporter("objects"))
    console.print(headline_table(metrics))
    for name, gap in ((metrics["domain_gap"] or {}).get("sets") or {}).items():
        console.print(domain_gap_table(name, gap["statistics"]))


def headline_table(metrics: dict):
    """Rich table of the N2 NMAD per S/N bin of the headline set: specsr vs the baselines."""
    from rich.table import Table

    from specsr_keras.evaluation.metrics import ERROR_METHODS
    from specsr_keras.evaluation.plots import METHOD_LABELS

    name = metrics["headline_set"]
    table = Table(title=f"N2 NMAD (dex), {name}, model {metrics['model']['id']}")
    table.add_column("S/N(Hα)")
    table.add_column("N", justify="right")
    methods = ERROR_METHODS["n2"]
    for method in methods:
        table.add_column(METHOD_LABELS[method], justify="right")
    for label, stats in metrics["bins"][name]["snr"].items():
        values = [stats["n2"].get(m, {}).get("nmad", float("nan")) for m in methods]
        table.add_row(label, str(stats["n"]), *(f"{v:.3f}" if v == v else "—" for v in values))
    return table


def domain_gap_table(name: str, statistics: dict):
    """Rich table of one real set's domain gap: medians, shift and KS distance per statistic."""
    from rich.table import Table

    table = Table(title=f"domain gap: simulated reference vs {name}")
    for column in ("statistic", "sim median", "real median", "shift", "KS"):
        table.add_column(column, justify="left" if column == "statistic" else "right")

    def cell(value, fmt=".3g"):
        return "—" if value is None else format(value, fmt)

    for statistic, values in statistics.items():
        table.add_row(statistic, cell(values["simulated"]["median"]), cell(values["real"]["median"]),
                      cell(values["median_shift"], "+.3g"), cell(values["ks"], ".2f"))
    return table
