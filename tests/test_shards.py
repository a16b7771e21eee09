"""HDF5 shards + manifest: round trip, batching, and one-line errors for bad files."""

import json

import h5py
import numpy as np
import pytest

from specsr_keras.data.shards import (
    MANIFEST_NAME,
    iter_shard_batches,
    load_shards,
    read_manifest,
    write_shards,
)


def make_batch(start, size):
    ids = np.arange(start, start + size)
    return {
        "image": np.ones((size, 4, 4, 2), np.float32) * ids[:, None, None, None],
        "lowres_mask": (ids[:, None] + np.arange(5)) % 3 == 0,
        "object_id": ids.astype(np.int64),
        "z": ids * 0.1,
    }


@pytest.fixture
def dataset(tmp_path):
    batches = [make_batch(0, 5), make_batch(5, 7), make_batch(12, 3)]
    manifest = write_shards(tmp_path / "data", iter(batches), {"kind": "simulated", "seed": 4},
                            shard_size=6, attrs={"lowres_wavelength": np.arange(5.0),
                                                 "instrument": "euclid_nisp_red"})
    return tmp_path / "data", manifest


def test_round_trip_preserves_values_dtypes_and_manifest(dataset):
    directory, manifest = dataset
    assert [s["count"] for s in manifest["shards"]] == [6, 6, 3]
    assert read_manifest(directory) == json.loads(json.dumps(manifest))
    assert manifest["count"] == 15 and manifest["kind"] == "simulated" and manifest["seed"] == 4
    loaded = load_shards(directory)
    expected = make_batch(0, 15)
    for name, values in expected.items():
        assert loaded[name].dtype == values.dtype
        np.testing.assert_array_equal(loaded[name], values)
    with h5py.File(directory / "shard-00001.h5") as handle:
        assert handle.attrs["instrument"] == "euclid_nisp_red"
        np.testing.assert_array_equal(handle.attrs["lowres_wavelength"], np.arange(5.0))
        assert handle["image"].chunks[1:] == (4, 4, 2)


def test_load_selects_fields_and_limits_examples(dataset):
    directory, _ = dataset
    loaded = load_shards(directory, fields=["z"], max_examples=8)
    assert list(loaded) == ["z"]
    np.testing.assert_allclose(loaded["z"], np.arange(8) * 0.1)


def test_iter_batches_cross_shard_boundaries(dataset):
    directory, _ = dataset
    batches = list(iter_shard_batches(directory, 4, fields=["object_id", "image"]))
    assert [len(b["object_id"]) for b in batches] == [4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([b["object_id"] for b in batches]), np.arange(15))


def test_truncated_shard_gives_one_line_error_naming_the_file(dataset):
    directory, _ = dataset
    shard = directory / "shard-00001.h5"
    shard.write_bytes(shard.read_bytes()[:2000])
    with pytest.raises(ValueError, match="shard-00001.h5") as info:
        load_shards(directory)
    assert "\n" not in str(info.value)


def test_missing_shard_and_count_mismatch_are_reported(dataset):
    directory, manifest = dataset
    manifest["shards"][0]["count"] = 5
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="shard-00000.h5: image holds 6 examples"):
        load_shards(directory)
    manifest["shards"][0]["count"] = 6
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    (directory / "shard-00002.h5").unlink()
    with pytest.raises(ValueError, match="shard-00002.h5"):
        list(iter_shard_batches(directory, 100, fields=["z"]))


@pytest.mark.parametrize("content, problem", [(None, "missing"), ("{not json", "unreadable"),
                                              ('{"count": 1}', "lacks shards, fields")])
def test_bad_manifest_is_reported_with_its_path(tmp_path, content, problem):
    if content is not None:
        (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(ValueError, match=f"{MANIFEST_NAME}: .*{problem}"):
        read_manifest(tmp_path)


def test_existing_dataset_needs_overwrite_which_removes_stale_shards(dataset):
    directory, _ = dataset
    with pytest.raises(ValueError, match="already there"):
        write_shards(directory, iter([make_batch(0, 2)]), shard_size=6)
    manifest = write_shards(directory, iter([make_batch(0, 2)]), shard_size=6, overwrite=True)
    assert manifest["count"] == 2
    assert sorted(p.name for p in directory.glob("shard-*")) == ["shard-00000.h5"]


def test_unknown_field_is_reported(dataset):
    directory, _ = dataset
    with pytest.raises(ValueError, match="no field"):
        load_shards(directory, fields=["flux"])
