"""The infer benchmark (slow: `make bench`): memory must not grow with the catalog size, and
`specsr infer` with the shipped model is timed against that model's own sampler."""

import pytest

from benchmarks.bench_infer import MODEL_ROWS, RSS_RATIO_TARGET, main
from tests.inference_fixtures import SHIPPED_SAVEDMODEL


@pytest.mark.slow
def test_infer_peak_rss_is_independent_of_catalog_size():
    report = main(["--sizes", "10000,100000", "--model", str(SHIPPED_SAVEDMODEL)])
    assert [run["rows"] for run in report["runs"]] == [10000, 100000]
    assert report["rss_ratio_largest_to_smallest"] <= RSS_RATIO_TARGET
    dask = report["dask"]
    assert [run["workers"] for run in dask["runs"]] == [1, 2]
    assert all(run["rows_out"] == 10000 for run in dask["runs"]) and dask["speedup"] > 0
    throughput = report["model"]
    assert [run["rows_out"] for run in throughput["infer_runs"]] == list(MODEL_ROWS)
    assert throughput["sampler"]["samples_per_s"] > 0 and throughput["infer_to_sampler_ratio"] > 0
    assert throughput["rss_ratio_largest_to_smallest"] <= RSS_RATIO_TARGET  # 2 vs 10 chunks with the model
