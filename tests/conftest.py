"""Shared pytest set-up: quiet TensorFlow, default backend, small deterministic RNGs."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests compile many small shapes: cheap XLA optimisation pays off (2x faster under JAX).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
