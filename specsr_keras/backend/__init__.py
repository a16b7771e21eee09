"""The backend adapters: the only code outside `export/` that names JAX or TensorFlow.

Keras 3 has no public API to compile an arbitrary function (`compile.compiled`) or to pick
a multi-device strategy for TensorFlow (`distribution.distribution_scope`); these two small
adapters do it, so that models, training and inference stay backend-neutral.
"""
