"""Multi-device data parallelism, chosen from the visible devices and the backend.

JAX: `keras.distribution.DataParallel` over the visible accelerators (set globally before
models are built). TensorFlow: a `tf.distribute.MirroredStrategy` scope. With one device
(the CPU here) both reduce to a no-op context. This is the only training module that
touches a backend API, and only through keras.distribution or the strategy object.
"""

from __future__ import annotations

import contextlib

import keras


def _accelerators() -> list[str]:
    devices = keras.distribution.list_devices()
    accelerators = [d for d in devices if not d.lower().startswith("cpu")]
    return accelerators or devices[:1]


def distribution_scope(devices: int | None = None):
    """Context manager under which models are built and trained on `devices` devices.

    `devices=None` uses every visible accelerator (or one CPU); `devices=1` forces one.
    """
    available = _accelerators()
    count = len(available) if devices is None else min(devices, len(available))
    if count <= 1:
        return contextlib.nullcontext()
    backend = keras.backend.backend()
    if backend == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=available[:count]))
        return contextlib.nullcontext()
    if backend == "tensorflow":
        import tensorflow as tf

        names = [d.replace("gpu", "GPU").replace("cpu", "CPU") for d in available[:count]]
        return tf.distribute.MirroredStrategy(devices=names).scope()
    raise ValueError(f"multi-device training is not supported on backend {backend!r}")


def describe_devices() -> str:
    """One line naming the backend and the devices training will use."""
    return f"{keras.backend.backend()} on {', '.join(_accelerators())}"
