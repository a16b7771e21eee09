"""The sampler speed/accuracy benchmark: N2 metrics (fast) and a full run (slow: `make bench`)."""

import numpy as np
import pytest

from benchmarks.bench_ddim_steps import RESULTS, main, n2_metrics


def test_n2_metrics_of_exact_estimates_with_unit_intervals():
    truth = {"n2": np.linspace(-1.2, -0.2, 50)}
    columns = {"n2_p16": truth["n2"] - 0.1, "n2_p50": truth["n2"], "n2_p84": truth["n2"] + 0.1}
    metrics = n2_metrics(truth, columns, np.arange(50) < 40)
    assert metrics["n"] == 40 and metrics["nmad"] == 0.0 and metrics["bias"] == 0.0
    assert metrics["coverage_68"] == 1.0


@pytest.mark.slow
def test_ddim_steps_gives_finite_nmad_and_speed_per_setting():
    report = main([])
    assert RESULTS.is_file() and report["simulate_galaxies_per_s"] > 0
    if "skipped" in report:
        pytest.skip(report["skipped"])
    assert RESULTS.with_suffix(".png").is_file()
    ddim = [s for s in report["settings"] if s["sampler"] == "ddim"]
    assert [s["steps"] for s in ddim] == [5, 10, 20, 50]
    assert {s["steps"] for s in report["settings"] if s["sampler"] == "dpm++2m"} == {5, 10, 20}
    for setting in report["settings"]:
        assert setting["spectra_per_s"] > 0 and setting["n2_all"]["n"] > 0
        assert np.isfinite(setting["n2_all"]["nmad"]) and np.isfinite(setting["n2_snr_ge_10"]["nmad"])
        assert 0 <= setting["n2_all"]["coverage_68"] <= 1
