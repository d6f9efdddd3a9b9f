"""MLflow tracking stores: a run's tracking URI and its checks, quiet clients, experiments, runs found by id or
tag, started and ended.

mlflow is imported inside the functions that use it: it is slow to import.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from utils.output_files import new_file_problems
from utils.runs.folders import MLFLOW_DB

MLFLOW_ARTIFACTS = "mlartifacts"
MAX_PARAM_LENGTH = 6000  # MLflow 3's limit of a parameter value
MAX_BATCH_PARAMS, MAX_BATCH_METRICS = 100, 1000  # MLflow's limits per log_batch call
HEALTH_TIMEOUT_S = 5
NOTE_TAG = "mlflow.note.content"
RUN_NAME_TAG = "mlflow.runName"
PARENT_RUN_TAG = "mlflow.parentRunId"  # the UI nests a run under this run (the parent of its group)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for other URIs and for sqlite:// in memory)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite database (mlartifacts/), else the server's."""
    path = sqlite_path(uri)
    return (path.resolve().parent / MLFLOW_ARTIFACTS).as_uri() if path is not None else None


def _sqlite_problem(path: Path) -> str | None:
    problems = new_file_problems(path, force=True)
    if problems:
        return problems[0]
    if not path.exists():
        return None
    if not os.access(path, os.W_OK):
        return f"{path}: no permission to write it"
    with path.open("rb") as handle:
        header = handle.read(16)
    if header and header != b"SQLite format 3\x00":
        return f"{path}: exists and is not an SQLite database"
    return None


def _server_problem(uri: str) -> str | None:
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=HEALTH_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as error:
        return f"{health} answered HTTP {error.code}: not an MLflow server?"
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"no MLflow server answers at {uri} ({reason}); start it (docs/trackers.md: a shared server) or fix the URI"
    return None


def mlflow_uri_problems(uri: str, key: str = "mlflow_tracking_uri") -> list[str]:
    """Problems with an MLflow tracking URI: malformed, an unwritable SQLite file, an unreachable server."""
    parsed = urlparse(uri)
    valid = ("valid: null (sqlite:///<output_path>/mlflow.db), sqlite:///path/to/mlflow.db or "
             "http(s)://host:port of an `mlflow server`")
    if parsed.scheme == "sqlite":
        path = sqlite_path(uri)
        if path is None or not str(path):
            return [f"{key}: {uri} names no database file; {valid}"]
        problem = _sqlite_problem(path)
        return [f"{key}: {uri} cannot be used: {problem}"] if problem else []
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            return [f"{key}: {uri} names no host; {valid}"]
        problem = _server_problem(uri)
        return [f"{key}: {problem}"] if problem else []
    return [f"{key}: {uri!r} is not a tracking URI this project uses; {valid}"]


def mlflow_tracking_uri(config: Any) -> str:
    """A Config's mlflow_tracking_uri, or (null) the SQLite file <output_path>/mlflow.db as an absolute sqlite:///
    URI."""
    if config.mlflow_tracking_uri:
        return str(config.mlflow_tracking_uri)
    return f"sqlite:///{Path(config.output_path).resolve() / MLFLOW_DB}"


def mlflow_problems(config: Any) -> list[str]:
    """With log_to_mlflow: the tracking URI's problems and an empty experiment name (checked before training)."""
    if not config.log_to_mlflow:
        return []
    problems = mlflow_uri_problems(mlflow_tracking_uri(config))
    if not config.mlflow_experiment.strip():
        problems.append("mlflow_experiment: empty; name the MLflow experiment, e.g. cars")
    return problems


def quiet_mlflow() -> None:
    """Keep MLflow to its warnings: no lines about creating or updating a store's tables, and no "View run at"
    lines of a server's runs (MLflow sets its loggers' levels when imported, so this runs after the import)."""
    import mlflow  # noqa: F401 (configures MLflow's loggers)

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@contextmanager
def sqlite_store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on the folder of an SQLite store (none for other stores) while creating it or an
    experiment in it: two runs starting at once into a new output folder would otherwise both create its tables
    ("duplicate column name: step") or the same experiment, and one of them would train without tracking."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    folder = path.absolute().parent
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # a lock on the folder: no lock file left behind
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def mlflow_client(uri: str) -> Any:
    """A quiet MlflowClient of the store at uri (an SQLite store's tables created under sqlite_store_lock)."""
    from mlflow.tracking import MlflowClient

    quiet_mlflow()
    with sqlite_store_lock(uri):
        return MlflowClient(uri)  # opens the store, creating its tables if it is new


def open_experiment(uri: str, experiment: str) -> tuple[Any, str]:
    """(MlflowClient of the store, id of the experiment), the experiment created on first use."""
    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, found.experiment_id
    with sqlite_store_lock(uri):  # another run may have created it since
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return client, found.experiment_id
        return client, client.create_experiment(experiment, artifact_location=artifact_location(uri))


def log_in_batches(client: Any, run_id: str, params: Sequence[Any] = (), metrics: Sequence[Any] = ()) -> None:
    """client.log_batch within MLflow's limits per call: 100 parameters, 1,000 metrics."""
    for start in range(0, len(params), MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=params[start:start + MAX_BATCH_PARAMS])
    for start in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start:start + MAX_BATCH_METRICS])


def tagged_run_exists(client: Any, experiment_id: str, key: str, value: str) -> bool:
    """Whether the experiment holds a run with tag key = value."""
    escaped = value.replace("'", "\\'")
    return bool(client.search_runs([experiment_id], f"tags.`{key}` = '{escaped}'", max_results=1))


def run_exists(client: Any, run_id: Any) -> bool:
    """Whether the store holds a run of this id."""
    if not isinstance(run_id, str) or not run_id:
        return False
    try:
        client.get_run(run_id)
    except Exception:  # not in this store, or the store unreadable
        return False
    return True


def start_run(client: Any, experiment_id: str, tags: Mapping[str, str]) -> str:
    """Create a running MLflow run with these tags; its id."""
    return client.create_run(experiment_id, tags=dict(tags)).info.run_id


def end_run(client: Any, run_id: str, status: str, params: Mapping[str, Any], metrics: Mapping[str, float],
            tags: Mapping[str, str], end_time_ms: int | None = None) -> None:
    """Log a run's closing values (parameters it lacks: MLflow keeps the first value; metrics and tags anew), then
    mark it with status, ended at end_time_ms (default: now)."""
    from mlflow.entities import Metric, Param, RunTag

    logged = client.get_run(run_id).data.params
    stamp = int(time.time() * 1000)
    new_params = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items() if key not in logged]
    log_in_batches(client, run_id, new_params, [Metric(key, value, stamp, 0) for key, value in metrics.items()])
    client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
    client.set_terminated(run_id, status, end_time=end_time_ms)
