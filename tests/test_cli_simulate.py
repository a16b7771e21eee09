"""`specsr simulate` through Typer's CliRunner, with tiny datasets."""

import json

import typer
from typer.testing import CliRunner

from cli.simulate import simulate

runner = CliRunner()


def simulate_app():
    """A command group holding `simulate`, as `specsr` does."""
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("simulate")(simulate)
    return app


def run(*args):
    return runner.invoke(simulate_app(), ["simulate", *args])


def test_main_app_registers_simulate():
    from cli.main import app

    assert "simulate" in [command.name for command in app.registered_commands]


def test_simulate_writes_shards_manifest_and_plot(tmp_path):
    out = tmp_path / "sim"
    result = run("--n", "6", "--instrument", "3dhst", "--out", str(out), "--seed", "2",
                 "--shard-size", "4", "--workers", "1", "--plot")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["instrument"] == "hst_g141" and manifest["count"] == 6
    assert [s["count"] for s in manifest["shards"]] == [4, 2]
    assert manifest["seed"] == 2 and manifest["kind"] == "simulated"
    assert (out / "examples.png").stat().st_size > 1000
    assert "galaxies/s" in result.output


def test_unknown_instrument_fails_with_one_error_line(tmp_path):
    result = run("--n", "2", "--instrument", "jwst", "--out", str(tmp_path / "x"))
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unknown instrument 'jwst'" in errors[0]
    assert "Traceback" not in result.output


def test_existing_output_needs_overwrite(tmp_path):
    args = ("--n", "2", "--instrument", "euclid", "--out", str(tmp_path), "--workers", "1")
    assert run(*args).exit_code == 0
    second = run(*args)
    assert second.exit_code == 1 and "already there" in second.output
    assert run(*args, "--overwrite").exit_code == 0
