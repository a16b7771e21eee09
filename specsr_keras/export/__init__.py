"""Export: SavedModel signatures, TF Serving layout, parity checks and a REST client.

Only this package imports TensorFlow (`graph`, `exporter` internals, `serving_check`,
`predictor`); `signatures`, `client` and the layout helpers do not.
"""

from specsr_keras.export.exporter import export_run, write_models_config
from specsr_keras.export.signatures import SamplingSettings

__all__ = ["SamplingSettings", "export_run", "write_models_config"]
