"""`specsr infer`: stream a catalog through a predictor, chunk by chunk, resumably.

The catalog is cut into chunks of `chunk_rows` units (table rows, or files in directory
mode). `run_chunk` reads one chunk, validates it onto the model grid, predicts in batches
of `batch` rows and writes the chunk file; it depends only on its task, so it runs the
same in this process or on a Dask worker (each worker process loads the model once).
Random seeds are derived from (seed, chunk index, batch index), never from the worker.
The driver records finished chunks in the manifest, skips them on a rerun, and merges
the chunk files into `results.fits` and `quarantine.fits` at the end.
"""

from __future__ import annotations

import functools
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from specsr_keras.data.fits_table import atomic_path
from specsr_keras.inference.catalog import Catalog, open_catalog, prepare_rows
from specsr_keras.inference.manifest import (
    Manifest,
    chunk_path,
    clear_run,
    file_checksum,
    input_fingerprint,
    remove_stale_temporaries,
)
from specsr_keras.inference.merge import RESULT_UNITS, merge_run
from specsr_keras.inference.predictors import cached_predictor, empty_outputs, output_columns
from specsr_keras.instruments import resolve_instrument_name
from specsr_keras.reporting import Reporter

__all__ = ["InferConfig", "InferSummary", "ChunkTask", "chunk_seed", "predict_rows", "run_chunk", "run_inference"]

# Test hooks. Kill the driver with SIGKILL after this many chunks were written (their files
# in place, the manifest not yet updated): the worst moment for a crash.
KILL_AFTER_CHUNKS_ENV = "SPECSR_TEST_KILL_AFTER_CHUNKS"
# Kill the process that starts chunk 1 unless this marker file exists (creating it first):
# one lost Dask worker.
KILL_WORKER_ONCE_ENV = "SPECSR_TEST_KILL_WORKER_ONCE"
# Keys of a prepared batch that the predictor sees.
PREDICTOR_INPUTS = ("lowres_flux", "lowres_ivar", "lowres_mask", "z_prior", "instrument_id",
                    "source_sigma_arcsec", "log_mstar_catalog")


@dataclass(frozen=True)
class InferConfig:
    """Settings that change the results (all recorded in the manifest).

    chunk_rows: rows (files in directory mode) per chunk and output file; batch: rows per
    predictor call; samples: posterior samples per object (diffusion models; None = the
    model's own setting, resolved before the run starts); save_spectra: also write the
    super-resolved spectrum mean/std (320 pixels each); seed: base seed.
    """

    chunk_rows: int = 4096
    batch: int = 256
    samples: int | None = None
    save_spectra: bool = False
    seed: int = 0

    def __post_init__(self):
        for name in ("chunk_rows", "batch", "samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class ChunkTask:
    """Everything one chunk needs; small and picklable (sent to Dask workers)."""

    catalog: Catalog
    model: str
    config: InferConfig
    run_dir: str
    index: int

    @property
    def start(self) -> int:
        return self.index * self.config.chunk_rows


@dataclass
class InferSummary:
    """Counts of a whole run (done chunks, including those of earlier invocations)."""

    run_dir: str
    rows_in: int = 0
    rows_out: int = 0
    rows_quarantined: int = 0
    chunks_total: int = 0
    chunks_run: int = 0
    chunks_skipped: int = 0
    seconds: float = 0.0
    rows_per_s: float = 0.0
    reasons: dict = field(default_factory=dict)
    results: str | None = None
    quarantine: str | None = None
    rows_duplicate_id: int = 0  # result rows whose object_id occurs more than once
    rows_amplitude_ignored: int = 0  # result rows whose flux level the model did not trust (units?)


def chunk_seed(seed: int, index: int, batch: int = 0) -> int:
    """Seed of batch `batch` of chunk `index`: a function of (seed, index, batch) only."""
    return int(np.random.SeedSequence([seed, index, batch]).generate_state(1)[0])


def run_chunk(task: ChunkTask, progress: Callable[[int], None] | None = None) -> dict:
    """Read, validate, predict and write one chunk; returns its manifest entry.

    progress(n): called after each predicted batch of n rows (in-process runs show it)."""
    started = time.perf_counter()
    marker = os.environ.get(KILL_WORKER_ONCE_ENV)
    if marker and task.index == 1 and not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    config = task.config
    predictor = cached_predictor(task.model)
    raw = task.catalog.read(task.start, task.start + config.chunk_rows)
    results, quarantine = predict_rows(raw, predictor, config, task.index, progress)
    n_out, n_quarantined = len(results), len(quarantine)
    n_in = n_out + n_quarantined
    reasons = list(quarantine["reason"])
    path = chunk_path(task.run_dir, task.index)
    _write_chunk_file(path, results, quarantine)
    return {"index": task.index, **file_checksum(path), "rows_in": n_in, "rows_out": n_out,
            "rows_quarantined": n_quarantined,
            "units": min(config.chunk_rows, task.catalog.n_units - task.start),
            "reasons": dict(Counter(reason.split(":")[0] for reason in reasons)),
            "seconds": round(time.perf_counter() - started, 3)}


def predict_rows(raw, predictor, config: InferConfig, index: int = 0, progress=None) -> tuple[Table, Table]:
    """(results, quarantine) astropy Tables of raw rows: every row in exactly one of them.

    results: object_id, row, the predictor's columns (with units) and flags; quarantine: row,
    object_id, reason. index: the chunk number (it seeds the sampling with config.seed).
    """
    batch, predictions, entries = _prepare_and_predict(raw, predictor, config, index, progress)
    if len(batch["row"]) + len(entries) != len(raw.row) + len(raw.rejects):  # no row may be lost
        raise RuntimeError(f"chunk {index}: {len(batch['row']) + len(entries)} rows accounted for, "
                           f"{len(raw.row) + len(raw.rejects)} read")
    results = Table({"object_id": batch["object_id"].astype(str), "row": batch["row"], **predictions})
    for name, unit in RESULT_UNITS.items():
        if name in results.colnames:
            results[name].unit = unit
    quarantine = Table({"row": np.array([row for row, _, _ in entries], np.int64),
                        "object_id": np.array([oid for _, oid, _ in entries], dtype=str),
                        "reason": np.array([reason for _, _, reason in entries], dtype=str)})
    return results, quarantine


def _prepare_and_predict(raw, predictor, config: InferConfig, index: int, progress=None):
    """(batch, predictions, quarantine) of a chunk's rows, in row order.

    Spectra observed with another instrument than the predictor's are read on their own grid
    by the predictor retargeted to that instrument (`for_instrument`: the model then applies
    that instrument's LSF); a predictor that cannot be retargeted (a SavedModel's grid is fixed)
    quarantines them (`other_instrument`) rather than treat them as its own instrument's.
    Rows without a known instrument are read as the predictor's.
    """
    if predictor_modality(predictor) == "image":
        from specsr_keras.inference.images import prepare_image_rows

        prepared = prepare_image_rows(raw, tuple(getattr(predictor, "image_shape", (64, 64, 4))))
        return prepared.batch, _predict(predictor, prepared.batch, config, index, progress=progress), \
            prepared.quarantine
    quarantine, parts = [], []
    for number, (target, positions) in enumerate(_instrument_groups(raw, predictor).items()):
        part = raw.take(positions, keep_rejects=number == 0)
        if isinstance(target, str):  # not servable: quarantined with the reason
            quarantine += list(part.rejects) + [(int(r), str(o), target)
                                                for r, o in zip(part.row, part.object_id, strict=True)]
            continue
        prepared = prepare_rows(part, target.instrument)
        quarantine += prepared.quarantine
        parts.append((prepared.batch, _predict(target, prepared.batch, config, index, 1000 * number, progress)))
    if not parts:
        parts.append((prepare_rows(raw.take([], keep_rejects=False), predictor.instrument).batch,
                      empty_outputs(predictor, config.save_spectra)))
    order = np.argsort(np.concatenate([batch["row"] for batch, _ in parts]), kind="stable")
    batch = {key: np.concatenate([b[key] for b, _ in parts])[order] for key in ("row", "object_id")}
    predictions = {key: np.concatenate([p[key] for _, p in parts])[order] for key in parts[0][1]}
    return batch, predictions, sorted(quarantine, key=lambda entry: entry[0])


def _instrument_groups(raw, predictor) -> dict:
    """{predictor for the group, or the quarantine reason: positions of its rows}."""
    groups, targets = {}, {}
    for pos, name in enumerate(raw.instrument):
        if name not in targets:
            targets[name] = _target_predictor(predictor, str(name))
        groups.setdefault(targets[name], []).append(pos)
    return groups


def _target_predictor(predictor, name: str):
    """The predictor that reads spectra of instrument `name` on their grid, or why none can."""
    try:
        source = resolve_instrument_name(name) if name else predictor.instrument
    except ValueError:
        return predictor  # prepare_rows quarantines it as unknown_instrument
    if source == predictor.instrument or not hasattr(predictor, "for_instrument"):
        return predictor
    try:
        return _retargeted(predictor, source)
    except ValueError:
        return (f"other_instrument: observed with {source}; {predictor.model_id} reads "
                f"{predictor.instrument} spectra only (use its Keras run or --model baseline)")


@functools.lru_cache(maxsize=8)
def _retargeted(predictor, instrument: str):
    return predictor.for_instrument(instrument)


def predictor_modality(predictor) -> str:
    """"spectrum" (low-res spectra, the default) or "image" (cutouts) a predictor reads."""
    return getattr(predictor, "modality", "spectrum")


def _predict(predictor, batch: dict, config: InferConfig, index: int, first_batch: int = 0,
             progress=None) -> dict:
    """Predictor outputs for all rows of a prepared chunk, in batches of config.batch
    (numbered from first_batch for their seeds); the validation flags of the batch are
    added to the predictor's."""
    columns = output_columns(predictor, config.save_spectra)
    n = len(batch["row"])
    pieces = []
    for number, start in enumerate(range(0, n, config.batch), start=first_batch):
        keys = getattr(predictor, "input_keys", PREDICTOR_INPUTS)
        part = {key: batch[key][start:start + config.batch] for key in keys}
        out = predictor.predict(part, samples=config.samples,
                                seed=chunk_seed(config.seed, index, number),
                                save_spectra=config.save_spectra)
        pieces.append({name: np.asarray(out[name]) for name in columns})
        if progress is not None:
            progress(min(config.batch, n - start))
    if not pieces:  # every row quarantined
        pieces.append(empty_outputs(predictor, config.save_spectra))
    out = {name: np.concatenate([piece[name] for piece in pieces]) for name in columns}
    out["flags"] = out["flags"] | batch["flags"]
    return out


def _write_chunk_file(path: Path, results: Table, quarantine: Table) -> None:
    for table in (results, quarantine):  # FITS text is ASCII: keep other characters as escapes
        for name in ("object_id", "reason"):
            if name in table.colnames:
                table[name] = [text.encode("ascii", "backslashreplace").decode() for text in table[name]]
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(results),
                         fits.table_to_hdu(quarantine)])
    hdus[1].name, hdus[2].name = "RESULTS", "QUARANTINE"
    tmp = atomic_path(path)
    try:
        hdus.writeto(tmp, overwrite=True)
    except OSError as exc:  # e.g. disk full: no half-written file stays behind
        tmp.unlink(missing_ok=True)
        raise OSError(f"{path}: cannot write the chunk ({exc})") from None
    os.replace(tmp, path)


def run_inference(catalog_path, model: str, run_dir, config: InferConfig = InferConfig(), *,
                  workers: int | None = None, scheduler: str | None = None, dashboard: str | None = ":8787",
                  overwrite: bool = False, merge: bool = True, retries: int = 3,
                  reporter: Reporter | None = None) -> InferSummary:
    """Run (or resume) inference of `model` on a catalog into run_dir; see the module doc.

    workers: start a local Dask cluster of that many single-threaded processes;
    scheduler: address of an existing Dask scheduler (tcp://host:port); neither: run in
    this process; dashboard: address of the local cluster's Dask dashboard (None: none; a
    busy port moves to a free one), its URL logged. A chunk whose worker dies is rerun
    elsewhere by the scheduler (up to its allowed-failures, 3 by default); retries: reruns of a
    chunk that raised (not of a bad-input ValueError, which fails the same way again and is
    raised at once). overwrite: delete an earlier run in run_dir first. Raises
    SpecsrInputError for an unusable catalog and ValueError when run_dir holds a run of another input/model/config.
    """
    started, reporter = time.perf_counter(), reporter or Reporter()
    if Path(model).exists():  # workers may run elsewhere: absolute paths only
        model = str(Path(model).resolve())
    predictor = cached_predictor(model)
    config = replace(config, samples=resolved_samples(predictor, config.samples))
    catalog = open_catalog(catalog_path, predictor_modality(predictor))
    run_dir = Path(run_dir).resolve()
    if overwrite:
        clear_run(run_dir)
    identity = {
        "input": {"path": str(catalog.path), **input_fingerprint(catalog)},
        "model": {"argument": model, "id": predictor.model_id,
                  "version": getattr(predictor, "version", None),
                  "instrument": predictor.instrument},
        "config": asdict(config),
    }
    n_chunks = -(-catalog.n_units // config.chunk_rows)
    manifest = Manifest.open_or_create(run_dir, identity, n_chunks, catalog.n_units)
    remove_stale_temporaries(run_dir)
    damaged = manifest.damaged_chunks()
    for why in damaged.values():
        reporter.info(f"recomputing a damaged chunk: {why}")
    manifest.forget_chunks(damaged)
    skipped = set(manifest.done)
    tasks = [ChunkTask(catalog, model, config, str(run_dir), index)
             for index in range(n_chunks) if index not in skipped]
    pending_units = sum(min(config.chunk_rows, catalog.n_units - t.start) for t in tasks)
    if workers or scheduler:
        reporter.info(f"dask: {scheduler or f'local cluster of {workers} workers'}")
    kill_after = int(os.environ.get(KILL_AFTER_CHUNKS_ENV, "0"))
    unit = "files" if catalog.kind == "files" else "rows"
    quarantined = 0
    with reporter.task(f"infer {Path(catalog.path).name} ({unit})", pending_units) as advance:
        shown = 0  # rows of the running chunk already shown (in-process runs, tables)

        def show_rows(n: int) -> None:
            nonlocal shown
            shown += n
            advance(n, quarantined=quarantined)

        in_chunk = show_rows if unit == "rows" else None
        cluster = DaskSettings(workers, scheduler, dashboard, retries)
        for finished, entry in enumerate(_execute(tasks, cluster, reporter, in_chunk), start=1):
            if finished == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            manifest.record_chunk(entry)
            quarantined += entry["rows_quarantined"]
            advance(entry["units"] - shown, quarantined=quarantined)
            shown = 0

    summary = summarise(manifest, len(tasks), len(skipped), pending_units,
                        time.perf_counter() - started)
    if merge:
        merged = merge_run(run_dir, reporter=reporter, verify=False)  # chunks checked or just written
        summary.results, summary.quarantine = merged["results"], merged["quarantine"]
        summary.rows_duplicate_id = merged["rows_duplicate_id"]
        summary.rows_amplitude_ignored = merged["rows_amplitude_ignored"]
    return summary


def resolved_samples(predictor, samples: int | None) -> int:
    """The samples per object a run uses: `samples`, or the predictor's own default; an
    export's fixed K (a SavedModel) cannot be changed (ValueError, before any work)."""
    fixed = getattr(predictor, "signatures", None) is not None
    default = int(getattr(predictor, "samples", 1))
    if samples is None:
        return default
    if fixed and samples != default:
        raise ValueError(f"{predictor.model_id} draws {default} samples per object (fixed at export); "
                         f"leave --samples out or re-export with --samples {samples}")
    return int(samples)


@dataclass(frozen=True)
class DaskSettings:
    """Where chunks run: `workers` local processes or the cluster at `scheduler` (neither:
    this process); `dashboard` the local cluster's dashboard address; `retries` per chunk."""

    workers: int | None = None
    scheduler: str | None = None
    dashboard: str | None = ":8787"
    retries: int = 3


def _execute(tasks, dask: DaskSettings, reporter: Reporter, progress=None):
    """Chunk summaries as chunks finish: in this process, or on a Dask cluster."""
    if not (dask.workers or dask.scheduler):
        for task in tasks:
            yield run_chunk(task, progress)
        return
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if dask.scheduler is None:
        cluster = LocalCluster(n_workers=dask.workers, threads_per_worker=1, processes=True,
                               dashboard_address=dask.dashboard)
    try:
        with Client(dask.scheduler or cluster) as client:
            if cluster is None or dask.dashboard is not None:
                reporter.info(f"dask dashboard: {client.dashboard_link}")
            token = uuid.uuid4().hex[:8]
            futures = [client.submit(_run_chunk_or_input_error, task, retries=dask.retries, pure=False,
                                     key=f"specsr-chunk-{token}-{task.index:06d}")
                       for task in tasks]
            for future in as_completed(futures):
                entry = future.result()
                if "input_error" in entry:  # deterministic: reported once, never retried
                    raise ValueError(entry["input_error"])
                yield entry
                future.release()
    finally:
        if cluster is not None:
            cluster.close()


def _run_chunk_or_input_error(task: ChunkTask) -> dict:
    """run_chunk on a Dask worker; a bad-input error (ValueError) comes back as
    {"input_error": message} so that the scheduler does not retry what would fail again."""
    try:
        return run_chunk(task)
    except ValueError as exc:
        return {"input_error": str(exc)}


def summarise(manifest: Manifest, chunks_run: int, chunks_skipped: int, units_run: int,
              seconds: float) -> InferSummary:
    """Totals over the manifest's done chunks; the rate counts this invocation's units."""
    done = list(manifest.done.values())
    reasons = Counter()
    for entry in done:
        reasons.update(entry["reasons"])
    return InferSummary(
        run_dir=str(manifest.run_dir),
        rows_in=sum(entry["rows_in"] for entry in done),
        rows_out=sum(entry["rows_out"] for entry in done),
        rows_quarantined=sum(entry["rows_quarantined"] for entry in done),
        chunks_total=manifest.n_chunks, chunks_run=chunks_run, chunks_skipped=chunks_skipped,
        seconds=seconds, rows_per_s=units_run / seconds if seconds > 0 else 0.0,
        reasons=dict(reasons.most_common()))
