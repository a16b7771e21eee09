"""Exponential moving average (EMA) of model weights, for sampling and export.

`ema_update(ema, current, decay)` works on matching lists of Keras variables or numpy
arrays (in place). `ExponentialMovingAverage` is a callback keeping numpy copies of a
model's trainable weights; `copy_to(model)` writes them into a model of the same
architecture (e.g. the trained one, before sampling or export), `swapped(model)`
does so temporarily. Keras optimizers' `use_ema=True` is an in-graph alternative
that overwrites the weights at the end of `fit`.
"""

import contextlib

import keras
import numpy as np
from keras import ops


def ema_update(ema, current, decay):
    """ema <- decay * ema + (1 - decay) * current, element-wise over two lists."""
    for average, value in zip(ema, current, strict=True):
        if isinstance(average, np.ndarray):
            average *= decay
            average += (1.0 - decay) * ops.convert_to_numpy(value)
        else:
            value = ops.cast(value, average.dtype)
            average.assign(decay * average + (1.0 - decay) * value)


class ExponentialMovingAverage(keras.callbacks.Callback):
    """Track the EMA of `model.trainable_variables` during `fit`.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) over updates n.
    `every`: update every that many batches (each update syncs JAX state to host).
    """

    def __init__(self, decay=0.999, every=1):
        super().__init__()
        self.decay = float(decay)
        self.every = int(every)
        self.updates = 0
        self.weights = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        if self.weights is None:
            self.weights = [
                np.array(ops.convert_to_numpy(v)) for v in self.model.trainable_variables
            ]

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self._batches % self.every:
            return
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        ema_update(self.weights, self.model.trainable_variables, decay)
        self.updates += 1

    def copy_to(self, model):
        for variable, value in zip(model.trainable_variables, self.weights, strict=True):
            variable.assign(value)

    @contextlib.contextmanager
    def swapped(self, model):
        """Use the EMA weights inside the block, restore the live weights after."""
        live = [np.array(ops.convert_to_numpy(v)) for v in model.trainable_variables]
        self.copy_to(model)
        try:
            yield model
        finally:
            for variable, value in zip(model.trainable_variables, live, strict=True):
                variable.assign(value)
