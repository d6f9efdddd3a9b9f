"""Per-epoch cost of logging a run to MLflow, as train.py does it, on a fresh SQLite store (or a given URI).

An epoch's MLflow work is the training metrics (train_loss, train_acc, lr), the validation metrics (valid_loss,
valid_acc, valid_acc_top5), and the summary columns (valid_acc_max, ..., duration_s): three batched calls.
Also timed once: opening the store (creating the SQLite tables), starting the run with its parameters, and the
end of the run (config.yml and summary.json stored as artifacts, status set).

    python -m benchmarks.mlflow_logging [--epochs 100] [--uri http://127.0.0.1:5000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from training.mlflow_logger import RunMLFlowLogger
from utils.config import Config, save_config, tracked_params
from utils.runs.records import write_json, write_metrics
from utils.runs.trackers import mlflow_status, mlflow_tracking_uri, run_tags, summary_metrics


def epoch_rows(epoch: int) -> tuple[dict[str, float], dict[str, float]]:
    """Made-up training and validation metrics of an epoch (0-based, as Lightning counts)."""
    train = {"train_loss": 4.0 / (epoch + 1), "train_acc": epoch / 200, "lr": 0.001, "epoch": epoch}
    valid = {"valid_loss": 4.5 / (epoch + 1), "valid_acc": epoch / 250, "valid_acc_top5": epoch / 120, "epoch": epoch}
    return train, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--uri", help="tracking URI (default: a new SQLite file in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        config = Config(output_path=work, mlflow_tracking_uri=args.uri)
        run_dir = Path(work) / "ghost_benchmark"
        run_dir.mkdir()
        save_config(config, run_dir / "config.yml")
        started = time.perf_counter()
        run_logger = RunMLFlowLogger(mlflow_tracking_uri(config), "benchmark",
                                     run_tags({}, config.tags, config.description, run_dir))
        run_logger.start(tracked_params(config), {"state": "running"})
        opening = time.perf_counter() - started
        times, rows = [], []
        for epoch in range(args.epochs):
            train, valid = epoch_rows(epoch)
            rows.append({"epoch": epoch + 1, **{k: v for k, v in {**train, **valid}.items() if k != "epoch"}})
            summary = {"epochs_run": epoch + 1, "best_valid_acc": {"value": valid["valid_acc"]},
                       "best_train_acc": train["train_acc"], "best": {"valid_loss": valid["valid_loss"]},
                       "best_train_loss": train["train_loss"], "duration_s": float(epoch), "state": "finished"}
            start = time.perf_counter()
            run_logger.log_metrics(valid)
            run_logger.log_metrics(train)
            run_logger.log_summary(summary_metrics(summary))
            times.append(time.perf_counter() - start)
        write_metrics(run_dir, rows)
        write_json(run_dir / "summary.json", summary)
        start = time.perf_counter()
        run_logger.end(mlflow_status(summary["state"]), summary_metrics(summary), {"state": summary["state"]},
                       [run_dir / "config.yml", run_dir / "summary.json"])
        ending = time.perf_counter() - start
    assert not run_logger.failed, "MLflow logging failed"
    store = args.uri or "new SQLite file"
    print(f"| store | per epoch, median | per epoch, max | open store + start run | end of run |\n|---|---:|---:|---:|---:|\n"
          f"| {store} | {statistics.median(times) * 1000:.1f} ms | {max(times) * 1000:.1f} ms | {opening:.2f} s "
          f"| {ending:.2f} s |")


if __name__ == "__main__":
    main()
