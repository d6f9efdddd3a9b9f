"""Per-epoch cost of mirroring a run's record onto MLflow, as training does after each epoch, on a fresh SQLite store
(or a given URI).

After each epoch, training mirrors the run's record onto its MLflow run (utils.mlflow.mirror.mirror_record): the
run read back, the epoch's metrics.csv row with the summary columns (valid_acc_max, ..., duration_s) logged in one
batch, and the tags set. Also timed once: opening the store (creating the SQLite tables) with the run's first
mirror, and the end of the run (config.yml and summary.json stored as artifacts, status set).

    python -m benchmarks.mlflow_logging [--epochs 100] [--uri http://127.0.0.1:5000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from utils.config import Config, config_for_records, save_config
from utils.mlflow.dashboard import open_dashboard_experiment
from utils.mlflow.mirror import mirror_record
from utils.mlflow.store import mlflow_tracking_uri
from utils.runs.records import RunRecord, write_json, write_metrics


def epoch_row(epoch: int) -> dict[str, float]:
    """A made-up metrics.csv row of an epoch (1-based)."""
    return {"epoch": epoch, "train_loss": 4.0 / epoch, "train_acc": epoch / 200, "valid_loss": 4.5 / epoch,
            "valid_acc": epoch / 250, "valid_acc_top5": epoch / 120, "lr": 0.001}


def epoch_summary(summary: dict[str, Any], rows: list[dict[str, float]]) -> None:
    """summary.json's results after the last of rows, as the recorder keeps them."""
    last = rows[-1]
    summary.update(epochs_run=last["epoch"], best=dict(last), best_valid_acc={"value": last["valid_acc"]},
                   best_train_acc=last["train_acc"], best_train_loss=last["train_loss"],
                   duration_s=float(last["epoch"]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--uri", help="tracking URI (default: a new SQLite file in a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        config = Config(output_path=work, mlflow_tracking_uri=args.uri)
        run_dir = Path(work) / "ghost_benchmark"
        run_dir.mkdir()
        save_config(config, run_dir / "config.yml")
        values = config_for_records(config)
        summary: dict[str, Any] = {"run_name": "benchmark", "started": datetime.now().isoformat(timespec="seconds"),
                                   "duration_s": 0.0, "state": "running"}
        started = time.perf_counter()
        client, experiment_id = open_dashboard_experiment(mlflow_tracking_uri(config), "benchmark")
        run_id = mirror_record(client, experiment_id, RunRecord(run_dir, dict(summary), values))
        opening = time.perf_counter() - started
        times, rows = [], []
        for epoch in range(1, args.epochs + 1):
            rows.append(epoch_row(epoch))
            epoch_summary(summary, rows)
            start = time.perf_counter()
            mirror_record(client, experiment_id, RunRecord(run_dir, dict(summary), values, list(rows)), run_id)
            times.append(time.perf_counter() - start)
        summary["state"] = "finished"
        write_metrics(run_dir, rows)
        write_json(run_dir / "summary.json", summary)
        start = time.perf_counter()
        mirror_record(client, experiment_id, RunRecord(run_dir, dict(summary), values, rows), run_id)
        ending = time.perf_counter() - start
        assert client.get_run(run_id).info.status == "FINISHED", "MLflow mirroring failed"
    store = args.uri or "new SQLite file"
    print(f"| store | per epoch, median | per epoch, max | open store + start run | end of run |\n|---|---:|---:|---:|---:|\n"
          f"| {store} | {statistics.median(times) * 1000:.1f} ms | {max(times) * 1000:.1f} ms | {opening:.2f} s "
          f"| {ending:.2f} s |")


if __name__ == "__main__":
    main()
