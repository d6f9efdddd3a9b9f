"""Sweeps: study files, their configurations, Optuna storage, workers, the launcher and the report."""
