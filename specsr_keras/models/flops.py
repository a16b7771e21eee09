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


def _all_layers(model):
    seen, stack, found = set(), [model], []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append(layer)
        stack.extend(layer._flatten_layers(include_self=False, recursive=False))
    return found


def recorded_calls(model, input_shapes, select, record, dtypes=None, call_kwargs=None) -> list:
    """[record(layer, args, kwargs, output)] of each layer `select(layer)` picks, in call order,
    from one forward pass of `model` on zeros at batch 1 (input_shapes/dtypes as for
    `count_flops`)."""
    dtypes = {"instrument": "int32", **(dtypes or {})}
    if isinstance(input_shapes, dict):
        inputs = {k: np.zeros((1, *s), dtypes.get(k, "float32")) for k, s in input_shapes.items()}
    else:
        inputs = np.zeros((1, *input_shapes), "float32")
    records = []
    patched = [layer for layer in _all_layers(model) if select(layer)]
    for layer in patched:
        def call(*args, _layer=layer, _original=layer.call, **kwargs):
            output = _original(*args, **kwargs)
            records.append(record(_layer, args, kwargs, output))
            return output

        layer.call = call
    try:
        model(inputs, **(call_kwargs or {}))
    finally:
        for layer in patched:
            del layer.call
    return records


def _counter(layer):
    """The MAC counter of a counted layer, else None."""
    return next((f for cls, f in _COUNTERS if isinstance(layer, cls)), None)


def _flops_entry(layer, args, kwargs, output):
    """(layer, input shapes, FLOPs) of one recorded call."""
    if isinstance(layer, layers.MultiHeadAttention):
        query, value = args[0], args[1] if len(args) > 1 else kwargs["value"]
        return layer, (tuple(query.shape), tuple(value.shape)), 2 * _attention_macs(layer, query, value)
    return layer, (tuple(args[0].shape),), 2 * _counter(layer)(layer, args[0], output)


def layer_flops(model, input_shapes, dtypes=None, call_kwargs=None):
    """[(layer, input shapes, FLOPs)] of one forward pass per example, in call order.

    input_shapes/dtypes as for `count_flops`. The recorded input shapes include the batch
    axis (1). A MultiHeadAttention entry counts its score and value products only: its
    projections (EinsumDense) are entries of their own.
    """
    def counted(layer):
        return isinstance(layer, layers.MultiHeadAttention) or _counter(layer) is not None

    return recorded_calls(model, input_shapes, counted, _flops_entry, dtypes, call_kwargs)


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
