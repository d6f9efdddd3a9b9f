"""The ground floor, plain Python that datasets/, models/ and training/ stand on: small helpers (checks, timing,
logging, archives, output files; devices and checkpoint reading, the two whose job is a torch object), the typed
configuration, run records and the run table, MLflow as plain input and output, and the Colab notebook's helpers."""
