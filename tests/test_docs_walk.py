"""The README's command tours run as written, on tiny inputs (slow: `make bench`).

Each documented `specsr ...` line of the README's shell blocks runs in order in a scratch
directory, with sizes shrunk (`--n`, training steps) and nothing else changed; the
cross-modal tour runs on the first tour's outputs in place of `make demo`'s.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.test_docs import REPO, documented_commands

pytestmark = pytest.mark.slow

TINY_TRAINING = ["--autoencoder-steps", "2", "--contrastive-steps", "2", "--superres-steps", "4",
                 "--checkpoint-every", "2", "--val-examples", "8", "--batch-size", "8"]


def shrunk(argv: list[str]) -> list[str]:
    """The documented command with tiny sizes: --n 48 and a few training steps."""
    argv = [("48" if previous == "--n" else word) for previous, word in zip(["", *argv[:-1]], argv, strict=True)]
    if argv[0] == "train" and "--resume" not in argv:
        argv += TINY_TRAINING
    return argv


def test_readme_tours_run_as_written_on_tiny_inputs(tmp_path):
    commands = [argv for where, argv in documented_commands() if where == "README.md"]
    assert any(argv[:1] == ["embed"] for argv in commands)
    (tmp_path / "demo" / "runs").mkdir(parents=True)
    (tmp_path / "demo" / "runs" / "quick").symlink_to(tmp_path / "runs" / "mine")  # make demo's quick run
    env = {**os.environ, "SPECSR_DEBUG": "1", "PYTHONPATH": str(REPO)}
    specsr = [sys.executable, "-c", "from cli.main import app; app()"]
    for argv in commands:
        argv = shrunk(argv)
        done = subprocess.run([*specsr, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"specsr {shlex.join(argv)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "reports" / "mine" / "report.html").is_file()
    assert (tmp_path / "demo" / "anomalies").is_dir() and (tmp_path / "demo" / "similar.png").is_file()
    assert re.search(r"rows", (tmp_path / "results" / "run1" / "manifest.json").read_text())
