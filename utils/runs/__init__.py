"""Runs: their folders and records, the run table, the thesis's records, and the home of a training run
(``utils.runs.training``) that builds data, network, Trainer, records and trackers from a Config."""
