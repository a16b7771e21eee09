"""`compiled`: a function of backend tensors compiled once per input structure and shape.

Keras 3 compiles `fit`/`predict` itself but offers no public compile for arbitrary
functions such as a sampling loop; this adapter is the one place that names a backend
outside `export/`: `jax.jit` under JAX, a `tf.function` under TensorFlow (plain graph: on
CPU faster here than XLA, which takes ~10 s to compile the sampling loop), the function
itself on other backends. Model variables are read when the function is traced, so compile
after training.
"""

from __future__ import annotations

import keras


def compiled(function):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    return function
