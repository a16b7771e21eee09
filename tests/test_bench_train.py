"""The training benchmark: FLOP arithmetic (fast) and a full run (slow: `make bench`)."""

import pytest

from benchmarks.bench_train import RESULTS, main, train_flops


def test_train_flops_are_three_denoiser_forwards():  # the embeddings are computed once per training set
    assert train_flops(10.0) == 30.0


@pytest.mark.slow
def test_train_step_times_per_backend_and_preset():
    report = main([])
    assert RESULTS.is_file()
    for backend in ("tensorflow", "jax"):
        tiny = report["runs"][backend]["tiny"]
        assert tiny["step_seconds"] > 0 and 0 < tiny["mfu"] <= 1
    assert report["runs"]["tensorflow"]["base"]["parameters"] > report["runs"]["tensorflow"]["tiny"]["parameters"]
    assert "step_seconds" in report["runs"]["jax"]["base"] or "error" in report["runs"]["jax"]["base"]
