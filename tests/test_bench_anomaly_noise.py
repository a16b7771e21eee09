"""The anomaly tests on a mis-stated ivar: a smoke run (fast) and the full set (slow: `make bench`)."""

import pytest

from benchmarks.bench_anomaly_noise import RESULTS, main


def _by_setting(report):
    return {(s["ivar_factor"], s["check_noise"]): s for s in report["settings"]}


def test_the_noise_check_keeps_the_stated_rate_when_the_errors_are_too_small(tmp_path):
    settings = _by_setting(main(["--quick", "--out", str(tmp_path / "anomaly_noise.json")]))
    assert (tmp_path / "anomaly_noise.json").is_file()
    understated_off, understated_on = settings[(1.5625, False)], settings[(1.5625, True)]
    assert understated_off["normal_flagged"]["narrow_model_p"] > 0.3  # what the check prevents
    assert understated_on["normal_flagged"]["anomaly_fpr"] <= 0.05
    assert understated_on["median_noise_scale"] == pytest.approx(1.25, rel=0.05)
    right = settings[(1.0, True)]
    assert right["median_noise_scale"] == pytest.approx(1.0, abs=0.05)
    assert right["normal_flagged"]["anomaly_fpr"] <= 0.03
    assert settings[(0.64, True)]["normal_flagged"]["anomaly_fpr"] <= 0.01  # errors too large: conservative


@pytest.mark.slow
def test_anomaly_noise_full_set():
    report = main([])
    assert RESULTS.is_file() and report["galaxies"] == 2500
    for setting in report["settings"]:
        assert all(0 <= rate <= 1 for rate in setting["normal_flagged"].values())
        assert all(r["n"] >= 50 for r in setting["anomaly_fpr_by_class"].values())
