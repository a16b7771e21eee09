"""Deterministic, step-indexed batches: batch k depends only on (seed, k), so a resumed run
sees exactly the batches an uninterrupted run would have seen."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


def epoch_permutation(n_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled example order of pass `epoch` over the data."""
    return np.random.default_rng([seed, epoch]).permutation(n_examples)


def batch_indices(n_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices of global step `step` (batches never straddle two passes)."""
    per_epoch = max(n_examples // batch_size, 1)
    epoch, offset = divmod(step, per_epoch)
    order = epoch_permutation(n_examples, seed, epoch)
    take = order[offset * batch_size : (offset + 1) * batch_size]
    if len(take) < batch_size:  # fewer examples than one batch: sample with replacement
        take = np.random.default_rng([seed, epoch, offset]).choice(n_examples, batch_size)
    return take


def step_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, seed: int, start_step: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches (dicts of arrays sliced on the first axis) from `start_step` on."""
    n_examples = len(next(iter(arrays.values())))
    step = start_step
    while True:
        take = np.sort(batch_indices(n_examples, batch_size, seed, step))
        yield {name: values[take] for name, values in arrays.items()}
        step += 1


def stage_arrays(inputs: Mapping[str, np.ndarray], keys) -> dict[str, np.ndarray]:
    """The arrays a stage trains on: `keys` of inputs, without the examples whose
    inputs["has_image"] is False when the stage reads images (a zero image is not an image)
    and does not read "has_image" itself (the super-resolver treats such images as missing)."""
    arrays = {k: inputs[k] for k in keys}
    has_image = np.asarray(inputs.get("has_image", []), bool)
    if "image" in keys and "has_image" not in keys and has_image.size and not has_image.all():
        arrays = {k: v[has_image] for k, v in arrays.items()}
    return arrays
