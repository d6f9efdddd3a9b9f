"""Experiment trackers: MLflow (the dashboard), TensorBoard and Neptune (offline), as Lightning loggers and
stores. Works on plain values (URIs, names, parameter mappings), so it needs neither the configuration nor the
run records; utils.runs maps those onto it."""
