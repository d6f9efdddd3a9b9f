"""The application's concerns over small helpers (checks, timing, logging, devices, archives, output files):
config (the typed configuration), tracking (MLflow, TensorBoard, Neptune), runs (run folders, records, the run
table and the home of a training run) and sweeps (studies on Optuna), plus the Colab notebook's helpers."""
