"""The infer benchmark (slow: `make bench`): memory must not grow with the catalog size."""

import pytest

from benchmarks.bench_infer import RSS_RATIO_TARGET, main


@pytest.mark.slow
def test_infer_peak_rss_is_independent_of_catalog_size():
    report = main(["--sizes", "10000,100000"])
    assert [run["rows"] for run in report["runs"]] == [10000, 100000]
    assert report["rss_ratio_largest_to_smallest"] <= RSS_RATIO_TARGET
    dask = report["dask"]
    assert [run["workers"] for run in dask["runs"]] == [1, 2]
    assert all(run["rows_out"] == 10000 for run in dask["runs"]) and dask["speedup"] > 0
