"""Cross-modal tools on the shared embedding space: embed catalogs, neighbours, anomalies."""
