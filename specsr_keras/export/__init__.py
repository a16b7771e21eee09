"""Export: SavedModel signatures, TF Serving layout, parity checks and a REST client.

Only this package imports TensorFlow (`graph`, `exporter` internals, `serving_check`,
`predictor`); `signatures`, `client` and the layout helpers do not.
"""

from specsr_keras.export.exporter import export_run, write_models_config

__all__ = ["export_run", "write_models_config"]
