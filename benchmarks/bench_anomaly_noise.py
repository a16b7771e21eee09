"""The line-model anomaly tests on spectra whose ivar mis-states the noise.

Real pipelines' errors are often off by tens of per cent; the tests of `measure.broadline`
are χ² tests, so an ivar too large would flag normal galaxies. This benchmark simulates an
anomaly set in memory (the options of the shipped anomaly set, `datasets/sim/anomalies-euclid`,
with another seed: Euclid, 0.4x the survey's noise, a quarter AGN, outflows, contamination,
artefacts), scales every ivar by a factor (1.5625 = errors 20 % too small, 0.64 = 25 % too
large) and runs the tests at the true redshift with and without the noise check
(`broad_line_test(check_noise=...)`). Per setting: the share of normal galaxies flagged at
p < 0.01 by `broad_line_p`, `narrow_model_p` and `anomaly_fpr` (the rate they state is <= 0.01),
the AUROC and recall at 1 % false-positive rate of `anomaly_fpr` per anomaly class
(`evaluation.crossmodal.anomaly_by_class`), and the median measured `noise_scale`. Writes
benchmarks/results/anomaly_noise.json.

    python -m benchmarks.bench_anomaly_noise [--n 2500] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, machine, write_report

RESULTS = RESULTS_DIR / "anomaly_noise.json"
INSTRUMENT = "euclid_nisp_red"
SEED = 146
# The shipped anomaly set's simulation options (Makefile, anomalies-euclid).
ANOMALY_OPTIONS = {"noise_scale": 0.4, "snr_weight_power": 1.0, "agn_fraction": 0.25, "outflow_fraction": 0.12,
                   "contamination_fraction": 0.1, "artefact_fraction": 0.1}
IVAR_FACTORS = (1.0, 1.5625, 0.64)
P_COLUMNS = ("broad_line_p", "narrow_model_p", "anomaly_fpr")
FLAG_AT = 0.01


def run_setting(data: dict, factor: float, check_noise: bool) -> dict:
    """The tests on data's spectra with ivar x factor: false-positive rates, AUROC per class."""
    from specsr_keras.evaluation.crossmodal import anomaly_by_class, anomaly_classes
    from specsr_keras.instruments import get_instrument
    from specsr_keras.measure.broadline import broad_line_test
    from specsr_keras.measure.redshift import lsf_sigma_rows

    instrument = get_instrument(INSTRUMENT)
    n = len(data["z"])
    rows = {"instrument_id": np.full(n, instrument.instrument_id),
            "source_sigma_arcsec": data["dispersion_sigma_arcsec"]}
    ivar = np.where(data["lowres_mask"], 0.0, data["lowres_ivar"].astype(np.float64)) * factor
    test = broad_line_test(instrument.bin_edges, data["lowres_flux"].astype(np.float64), ivar,
                           lsf_sigma_rows(rows, INSTRUMENT), data["z"], check_noise=check_noise)
    normal = anomaly_classes(data)["normal"]
    by_class = anomaly_by_class({}, data, {"anomaly_fpr": test["anomaly_fpr"]})["anomaly_fpr"]
    return {"ivar_factor": factor, "check_noise": check_noise,
            "normal_flagged": {name: float(np.mean(test[name][normal] < FLAG_AT)) for name in P_COLUMNS},
            "median_noise_scale": float(np.nanmedian(test["noise_scale"])),
            "anomaly_fpr_by_class": {label: {"auroc": r["auroc"], "recall_at_1pct_fpr": r["recall_at_1pct_fpr"],
                                             "n": r["n_anomalous"]} for label, r in by_class.items()}}


def main(argv=None) -> dict:
    from specsr_keras.simulate import simulate_galaxies

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2500, help="Simulated galaxies.")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 300 galaxies.")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    n = 300 if args.quick else args.n
    started = time.perf_counter()
    data = simulate_galaxies(n, INSTRUMENT, seed=SEED, **ANOMALY_OPTIONS)
    settings = [run_setting(data, factor, check) for factor in IVAR_FACTORS for check in (False, True)]
    report = {"benchmark": "line-model anomaly tests with a mis-stated ivar", "galaxies": n, "seed": SEED,
              "instrument": INSTRUMENT, "options": ANOMALY_OPTIONS, "flag_at": FLAG_AT, "redshift": "true z",
              "settings": settings, "seconds": time.perf_counter() - started, "machine": machine()}
    for s in settings:
        rates = ", ".join(f"{name} {value:.3f}" for name, value in s["normal_flagged"].items())
        print(f"ivar x{s['ivar_factor']:.4g}, noise check {'on ' if s['check_noise'] else 'off'}: normal galaxies "
              f"flagged at p < {FLAG_AT}: {rates}; median noise_scale {s['median_noise_scale']:.3f}")
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
