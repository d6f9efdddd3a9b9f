"""Runs as records: their folders, metrics.csv/summary.json/config.yml, the run table, seed statistics, the
thesis's records, plots, and their MLflow values and dashboard. Plain Python: training a run is ``training``'s job."""
