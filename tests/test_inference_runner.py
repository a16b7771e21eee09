"""End-to-end `specsr infer`: accounting, resume, kill -9, Dask parity, settings guard."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from specsr_keras.inference.manifest import chunk_path
from specsr_keras.inference.merge import merge_run
from specsr_keras.inference.runner import (
    KILL_AFTER_CHUNKS_ENV,
    KILL_WORKER_ONCE_ENV,
    InferConfig,
    run_inference,
)
from specsr_keras.reporting import Reporter
from tests.inference_fixtures import BAD_ROWS, bad_row_mix, write_ragged_parquet

REPO = Path(__file__).resolve().parents[1]
CONFIG = InferConfig(chunk_rows=6, batch=4, seed=7)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return write_ragged_parquet(tmp_path_factory.mktemp("cat") / "mix.parquet", bad_row_mix())


@pytest.fixture(scope="module")
def reference(catalog, tmp_path_factory):
    """An uninterrupted single-process run: (summary, results, quarantine)."""
    run = tmp_path_factory.mktemp("runs") / "reference"
    summary = run_inference(catalog, "baseline", run, CONFIG)
    return summary, Table.read(summary.results), Table.read(summary.quarantine)


def assert_same_table(a: Table, b: Table):
    assert a.colnames == b.colnames and len(a) == len(b)
    for name in a.colnames:
        left, right = np.asarray(a[name]), np.asarray(b[name])
        if left.dtype.kind == "f":
            np.testing.assert_array_equal(left, right)  # NaN == NaN here
        else:
            assert left.tolist() == right.tolist(), name


def test_every_row_ends_in_results_or_quarantine(reference):
    summary, results, quarantine = reference
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (20, 14, 6)
    assert summary.chunks_total == 4
    assert sorted(quarantine["row"].tolist()) == sorted(BAD_ROWS)
    assert sorted(results["row"].tolist() + quarantine["row"].tolist()) == list(range(20))
    assert summary.reasons == {"no_finite_flux": 2, "no_positive_ivar": 1,
                               "wrong_grid_length": 1, "missing_value": 1,
                               "no_usable_pixels": 1}
    assert np.all(np.isfinite(results["z_p50"]))
    assert results.meta["MODEL"] == "baseline" and results["ha_flux_p50"].unit is not None


def test_a_rerun_skips_finished_chunks_and_changes_nothing(catalog, reference, tmp_path):
    run = tmp_path / "run"
    run_inference(catalog, "baseline", run, CONFIG)
    stamp = chunk_path(run, 2).stat().st_mtime_ns
    again = run_inference(catalog, "baseline", run, CONFIG)
    assert (again.chunks_run, again.chunks_skipped) == (0, 4)
    assert chunk_path(run, 2).stat().st_mtime_ns == stamp
    assert_same_table(Table.read(again.results), reference[1])


def test_other_settings_are_refused_unless_overwrite(catalog, tmp_path):
    run = tmp_path / "run"
    run_inference(catalog, "baseline", run, CONFIG, merge=False)
    with pytest.raises(ValueError, match="different config"):
        run_inference(catalog, "baseline", run, InferConfig(chunk_rows=10))
    summary = run_inference(catalog, "baseline", run, InferConfig(chunk_rows=10), overwrite=True)
    assert (summary.chunks_total, summary.chunks_skipped, summary.rows_in) == (2, 0, 20)
    assert not chunk_path(run, 2).exists()  # the old run's chunks are gone


def test_merge_refuses_an_unfinished_run(catalog, tmp_path):
    run = tmp_path / "run"
    run_inference(catalog, "baseline", run, CONFIG, merge=False)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["chunks"]["1"]
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="1 of 4 chunks are not finished"):
        merge_run(run)


@pytest.mark.parametrize("damage", ["truncate", "random_bytes", "delete"])
def test_a_damaged_finished_chunk_is_recomputed_and_never_merged(catalog, reference, tmp_path, damage):
    run = tmp_path / "run"
    run_inference(catalog, "baseline", run, CONFIG)
    path = chunk_path(run, 1)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-2880])
    elif damage == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
    else:
        path.unlink()
    with pytest.raises(ValueError, match=f"{path.name}.*rerun the same infer command"):
        merge_run(run)
    assert not (run / "results.fits").exists()  # no stale merge beside the damaged chunk
    again = run_inference(catalog, "baseline", run, CONFIG)
    assert (again.chunks_run, again.chunks_skipped) == (1, 3)
    assert_same_table(Table.read(again.results), reference[1])


def _infer_cli(catalog, run, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    command = [sys.executable, "-c", "from cli.main import app; app()", "infer", str(catalog),
               "--model", "baseline", "--out", str(run), "--chunk-rows", "6", "--batch", "4",
               "--seed", "7"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_kill_9_mid_catalog_then_rerun_equals_an_uninterrupted_run(catalog, reference, tmp_path):
    run = tmp_path / "run"
    killed = _infer_cli(catalog, run, {KILL_AFTER_CHUNKS_ENV: "2"})
    assert killed.returncode == -signal.SIGKILL
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["chunks"]) == ["0"]  # chunk 1 was written but not recorded
    assert chunk_path(run, 1).exists() and not (run / "results.fits").exists()

    resumed = _infer_cli(catalog, run)
    assert resumed.returncode == 0, resumed.stderr
    results, quarantine = Table.read(run / "results.fits"), Table.read(run / "quarantine.fits")
    assert len(set(results["row"])) == len(results)
    assert_same_table(results, reference[1])
    assert_same_table(quarantine, reference[2])


class DashboardProbe(Reporter):
    """Fetches the Dask dashboard whose address the run logs, while the cluster is up."""

    link, status = None, None

    def info(self, message: str) -> None:
        if message.startswith("dask dashboard: "):
            import urllib.request

            self.link = message.removeprefix("dask dashboard: ")
            with urllib.request.urlopen(self.link, timeout=30) as page:
                self.status = page.status


def test_dask_workers_give_the_single_process_results_despite_a_lost_worker(
        catalog, reference, tmp_path, monkeypatch):
    marker = tmp_path / "worker-killed"
    monkeypatch.setenv(KILL_WORKER_ONCE_ENV, str(marker))  # inherited by the workers
    summary = run_inference(catalog, "baseline", tmp_path / "dask", CONFIG, workers=2, dashboard=":0",
                            reporter=(dashboard := DashboardProbe()))
    assert marker.exists() and summary.chunks_run == 4
    assert dashboard.status == 200, dashboard.link  # the dashboard served its page while the run went on
    assert_same_table(Table.read(summary.results), reference[1])
    assert_same_table(Table.read(summary.quarantine), reference[2])


def test_dask_reports_a_bad_input_once_without_retrying(tmp_path):
    from tests.test_bad_inputs import text_flux_column

    catalog = text_flux_column(tmp_path)
    with pytest.raises(ValueError, match=r"textflux.fits: column 'flux' \(flux\) holds text") as error:
        run_inference(catalog, "baseline", tmp_path / "run", CONFIG, workers=2, retries=3)
    assert "Traceback" not in str(error.value)


def test_progress_moves_inside_a_chunk_and_logs_plain_lines(catalog, tmp_path, caplog):
    import logging

    from specsr_keras.reporting import LogReporter

    caplog.set_level(logging.INFO, logger="specsr")
    run_inference(catalog, "baseline", tmp_path / "run", InferConfig(chunk_rows=20, batch=4),
                  reporter=LogReporter(unit="rows", every_s=0.0))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("infer mix.parquet")]
    assert any(": 4/20 (20%)" in line for line in lines), lines  # the first batch of the only chunk
    assert lines[-1].startswith("infer mix.parquet (rows): 20/20 (100%)") and "done in" in lines[-1]
