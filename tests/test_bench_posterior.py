"""The posterior-variant benchmark: its table from evaluation metrics (fast), a run on the
shipped model (slow: `make bench`)."""

import pytest

from benchmarks.bench_posterior import METHODS, VARIANTS, collect, markdown
from specsr_keras.models.samplers import Sampler


def _stats(nmad):
    return {"nmad": nmad, "nmad_lo": nmad - 0.01, "nmad_hi": nmad + 0.01, "bias": 0.01, "bias_lo": 0.0,
            "bias_hi": 0.02, "slope": 0.9, "calibration_slope": 1.0}


def test_table_has_one_row_per_populated_bin_and_names_the_verdict():
    n2 = {m: _stats(0.2 + 0.01 * i) for i, m in enumerate(METHODS)}
    populated = {"n": 40, "n2": n2, "n2_verdict": {"best_competitor": "lowres_fit", "difference": -0.01,
                                                   "lo": -0.02, "hi": -0.005, "beats": True, "ties": False},
                 "coverage": {"n2": {"specsr": {"68": 0.7, "68_lo": 0.65, "68_hi": 0.75, "95": 0.95,
                                                "95_lo": 0.93, "95_hi": 0.97}}},
                 "ha_flux": {"specsr": {"bias": -0.01}}}
    metrics = {"bins": {"euclid": {"snr": {"3-5": populated, ">20": {"n": 0}}}}}
    sets = collect(metrics)
    assert list(sets["euclid"]) == ["3-5"] and sets["euclid"]["3-5"]["specsr"]["nmad"] == pytest.approx(0.2)
    table = markdown({"variants": {"guided": {"samples_per_s": 10.0, "sets": sets}}})
    rows = [line for line in table.splitlines() if line.startswith("| guided")]
    assert len(rows) == 1 and "| beats |" in rows[0] and "0.200 [0.190, 0.210]" in rows[0]


def test_every_variant_is_a_valid_sampler_setting():
    for changes in VARIANTS.values():
        assert isinstance(Sampler().replace(**changes), Sampler)


def test_variants_merge_by_the_weights_not_by_the_path(tmp_path):
    from benchmarks.bench_posterior import model_fingerprint

    weights = tmp_path / "run" / "models" / "superres.keras"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"first training")
    first = model_fingerprint(str(tmp_path / "run"))
    weights.write_bytes(b"retrained in place")  # same path, new weights: a new model
    assert model_fingerprint(str(tmp_path / "run")) != first
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "fingerprint.pb").write_bytes(b"saved model")
    assert model_fingerprint(str(tmp_path / "export")) not in (first, str(tmp_path / "export"))
    assert model_fingerprint("baseline") == "baseline"
