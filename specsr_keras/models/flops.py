"""Analytic FLOPs per forward pass and a train-step timer (backend-neutral).

`count_flops(model, input_shapes)` runs one forward pass on zeros (batch 1) while
recording the input/output shapes of every Conv, Dense, EinsumDense and the
attention products inside MultiHeadAttention, and returns
2 x multiply-accumulates per example; `layer_flops` gives them per layer. Normalisation, activations, elementwise ops
and random draws are not counted (they are a few % of the total here).
"""

import re
import time

import numpy as np
from keras import layers


def _size(shape):
    return int(np.prod([d for d in shape[1:]]))


def _conv_macs(layer, x, y):
    kernel = int(np.prod(layer.kernel_size))
    return _size(y.shape) * kernel * x.shape[-1] // layer.groups


def _dense_macs(layer, x, y):
    return _size(y.shape) * x.shape[-1]


def _einsum_macs(layer, x, y):
    kernel_letters = re.split(r"[,\->]+", layer.equation)[1]
    output_letters = layer.equation.split("->")[1]
    pairs = zip(kernel_letters, layer.kernel.shape, strict=True)
    kept = [d for c, d in pairs if c in output_letters]
    return _size(y.shape) * int(np.prod(layer.kernel.shape)) // max(int(np.prod(kept)), 1)


def _attention_macs(layer, query, value):
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    tq, tk = _size(query.shape) // query.shape[-1], _size(value.shape) // value.shape[-1]
    return heads * tq * tk * (key_dim + value_dim)


_COUNTERS = (
    (layers.EinsumDense, _einsum_macs),
    (layers.Dense, _dense_macs),
    (layers.Conv1D, _conv_macs),
    (layers.Conv2D, _conv_macs),
)


def all_layers(model):
    """Every layer of `model`, nested ones included, each once."""
    seen, stack, found = set(), [model], []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(layer._flatten_layers(include_self=False, recursive=False))
    return found


def layer_flops(model, input_shapes, dtypes=None, call_kwargs=None):
    """[(layer, input shapes, FLOPs)] of one forward pass per example, in call order.

    input_shapes/dtypes as for `count_flops`. The recorded input shapes include the batch
    axis (1). A MultiHeadAttention entry counts its score and value products only: its
    projections (EinsumDense) are entries of their own.
    """
    dtypes = {"instrument": "int32", **(dtypes or {})}
    if isinstance(input_shapes, dict):
        inputs = {k: np.zeros((1, *s), dtypes.get(k, "float32")) for k, s in input_shapes.items()}
    else:
        inputs = np.zeros((1, *input_shapes), "float32")
    records = []
    patched = []
    for layer in all_layers(model):
        if isinstance(layer, layers.MultiHeadAttention):
            original = layer.call

            def call(query, value, *args, _layer=layer, _original=original, **kwargs):
                shapes = (tuple(query.shape), tuple(value.shape))
                records.append((_layer, shapes, 2 * _attention_macs(_layer, query, value)))
                return _original(query, value, *args, **kwargs)

        else:
            counter = next((f for cls, f in _COUNTERS if isinstance(layer, cls)), None)
            if counter is None:
                continue
            original = layer.call

            def call(x, *args, _layer=layer, _original=original, _counter=counter, **kwargs):
                y = _original(x, *args, **kwargs)
                records.append((_layer, (tuple(x.shape),), 2 * _counter(_layer, x, y)))
                return y

        layer.call = call
        patched.append(layer)
    try:
        model(inputs, **(call_kwargs or {}))
    finally:
        for layer in patched:
            del layer.call
    return records


def count_flops(model, input_shapes, dtypes=None, call_kwargs=None):
    """FLOPs (2 x MACs) of one forward pass per example.

    input_shapes: a shape tuple without batch, or a dict name -> shape; dtypes: dict
    name -> dtype for non-float inputs (default: "instrument" is int32).
    """
    return sum(flops for _, _, flops in layer_flops(model, input_shapes, dtypes, call_kwargs))


def time_train_step(model, batch, steps=5, warmup=2):
    """Median seconds per `train_on_batch` on one batch dict (model must be compiled)."""
    for _ in range(warmup):
        model.train_on_batch(batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
