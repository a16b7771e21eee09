"""The aligner learning-curve benchmark runs end to end on tiny data."""

import json

import pytest

from benchmarks.bench_aligner import main
from specsr_keras.data.shards import write_shards
from specsr_keras.models import presets
from specsr_keras.simulate import dataset_metadata, simulate_galaxies


@pytest.mark.slow  # trains a micro aligner (~1 min on 2 cores): make bench
def test_quick_curve_records_retrieval_and_probes(tmp_path):
    shards = tmp_path / "shards"
    manifest, attrs = dataset_metadata("euclid_nisp_red", 5)
    write_shards(shards, iter([simulate_galaxies(300, "euclid_nisp_red", seed=5)]), manifest, shard_size=300,
                 attrs=attrs)
    init = tmp_path / "run" / "models"
    init.mkdir(parents=True)
    presets.build_aligner("micro").save(init / "contrastive.keras")
    out = tmp_path / "curve.json"
    main(["--init", str(init.parent), "--data", str(shards), "--heldout", str(shards), "--batch", "16",
          "--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [p["step"] for p in result["curve"]] == [0, 25, 50] and result["settings"]["amplitude"]
    last = result["curve"][-1]
    assert 0 <= last["pool256"]["top1"] <= 1 and set(last["probes"]) == {"image", "spectrum"}
    assert "z" in last["probes"]["spectrum"] and "knn" in last["probes"]["spectrum"]["z"]
