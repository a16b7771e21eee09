"""Helpers shared by the benchmarks: child processes per Keras backend, timing, machine, JSON.

The Keras backend is fixed per process, so a benchmark that compares backends runs one
child process per backend (`run_child`). Children get XLA's default optimisation level
(the test suite lowers it, tests/conftest.py) and a persistent JAX compilation cache, so
a JAX child does not spend a minute compiling weight initialisers every run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from specsr_keras.hardware import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
JAX_CACHE = Path(tempfile.gettempdir()) / "specsr-bench-jax-cache"
_TEST_XLA_FLAG = "--xla_backend_optimization_level=0"


def child_env(backend: str | None = None) -> dict[str, str]:
    """Environment of a benchmark child process (repo importable, given Keras backend)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend:
        env["KERAS_BACKEND"] = backend
    flags = env.pop("XLA_FLAGS", "").replace(_TEST_XLA_FLAG, "").strip()
    if flags:
        env["XLA_FLAGS"] = flags
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(JAX_CACHE))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return env


def run_child(module: str, args: list[str], backend: str | None = None,
              timeout: float | None = None) -> dict:
    """Run `python -m module *args` in a fresh process; the JSON object on its last stdout line."""
    done = subprocess.run([sys.executable, "-m", module, *args], env=child_env(backend), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"{module} {' '.join(args)} ({backend or 'default backend'}) failed: "
                           f"{lines[-1] if lines else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_seconds(function, repeats: int = 3, warmup: int = 1) -> float:
    """Fastest of `repeats` timed calls after `warmup` untimed ones [s].

    `function()` must return only when its work is done (e.g. convert the result to numpy).
    """
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> dict:
    """Python, logical CPU count, CPU model and platform of this machine."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "cpu": cpu_model(),
            "platform": platform.platform()}


def write_report(path: Path, report: dict) -> None:
    """Write `report` as indented JSON to `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
