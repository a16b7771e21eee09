"""`specsr infer` and `specsr simulate-catalog` on the command line: summaries and errors."""

from astropy.table import Table
from typer.testing import CliRunner

from cli.main import app
from tests.inference_fixtures import simulated_columns, write_table

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_error_line(output: str) -> str:
    """The error message (rich may soft-wrap it) after checking it is the only output."""
    assert output.count("error:") == 1 and "Traceback" not in output
    return " ".join(output.split())


def test_simulate_catalog_then_infer_prints_a_summary_and_merges(tmp_path):
    catalog = tmp_path / "cat.fits"
    made = _invoke("simulate-catalog", "--n", 12, "--out", catalog, "--seed", 2, "--workers", 1)
    assert made.exit_code == 0, made.output
    run = tmp_path / "run"
    result = _invoke("infer", catalog, "--model", "baseline", "--out", run, "--chunk-rows", 5,
                     "--save-spectra")
    assert result.exit_code == 0, result.output
    assert "rows quarantined" in result.output and "3 / 0 / 3" in result.output
    table = Table.read(run / "results.fits")
    assert len(table) == 12 and table["sr_mean"].shape == (12, 320)
    (run / "results.fits").unlink()
    merged = _invoke("infer", "--merge", "--out", run)
    assert merged.exit_code == 0, merged.output
    assert len(Table.read(run / "results.fits")) == 12


def test_an_empty_catalog_exits_nonzero_with_one_line(tmp_path):
    columns = {k: v[:0] for k, v in simulated_columns(2).items()}
    result = _invoke("infer", write_table(tmp_path / "empty.fits", columns), "--model",
                     "baseline", "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "the catalog is empty (0 rows)" in _one_error_line(result.output)


def test_missing_required_columns_exit_nonzero_with_one_line(tmp_path):
    columns = simulated_columns(3)
    path = write_table(tmp_path / "noflux.h5", {"object_id": columns["object_id"],
                                                "ivar": columns["ivar"]})
    result = _invoke("infer", path, "--model", "baseline", "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "missing required column(s): flux" in _one_error_line(result.output)
    assert not (tmp_path / "run").exists()


def test_scheduler_and_workers_together_are_refused(tmp_path):
    path = write_table(tmp_path / "c.fits", simulated_columns(3))
    result = _invoke("infer", path, "--model", "baseline", "--out", tmp_path / "run",
                     "--workers", 2, "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 1 and "not both" in _one_error_line(result.output)


def test_units_in_brackets_survive_the_help_markup():
    assert "[arcsec]" in " ".join(_invoke("build-dataset", "--help").output.split())
    assert "[dex]" in " ".join(_invoke("evaluate", "--help").output.split())


def test_version():
    import specsr_keras

    result = _invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"specsr {specsr_keras.__version__}"
