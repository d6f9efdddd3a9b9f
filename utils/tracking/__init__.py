"""MLflow as plain input and output (tracking URIs, stores, saved views, a quiet server) and the import of Neptune
offline runs. Works on plain values (URIs, names, parameter mappings), so it needs neither the configuration nor
the run records; utils.runs maps those onto it. The Lightning loggers live in ``training``."""
