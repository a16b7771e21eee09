"""Spectral operations, each implemented once in keras.ops (any backend, in-graph or eager).

- `kernel`: the exact box-times-Gaussian pixel kernel behind every resampling and LSF step.
- `band`: resampling / LSF convolution between fixed grids (numpy geometry, keras.ops math).
- `window`: the hi-res rest-frame window placed at a redshift on an instrument's pixels:
  resampling onto it, and the instrument's linear forward operator from it.
numpy callers pass arrays and get tensors back (`keras.ops.convert_to_numpy`).
"""
