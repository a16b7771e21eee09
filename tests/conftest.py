"""Shared pytest set-up: quiet TensorFlow, default backend, small deterministic RNGs; the
tiny real survey (files and shards) shared by the real-data tests."""

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests compile many small shapes: cheap XLA optimisation pays off (2x faster under JAX).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")


@pytest.fixture(scope="session")
def survey(tmp_path_factory):
    """The files of `fixtures_formats.write_survey`: (directory, catalogue path)."""
    from tests.fixtures_formats import write_survey

    root = tmp_path_factory.mktemp("survey")
    return root, write_survey(root)


@pytest.fixture(scope="session")
def real_shards(survey):
    """Real-kind shards (5 G141 examples, 2 with MOSDEF spectra) built from `survey` by the
    `specsr build-dataset` command."""
    from typer.testing import CliRunner

    from cli.main import app
    from tests.fixtures_formats import build_dataset_args

    root, catalog = survey
    out = root / "real"
    result = CliRunner().invoke(app, build_dataset_args(root, catalog, out))
    assert result.exit_code == 0, result.output
    return out
