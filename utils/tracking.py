"""Experiment tracking in one place: the TensorBoard, MLflow and Neptune loggers of a run, the checks of an MLflow
tracking URI, and imports of run folders and Neptune offline runs into MLflow (the project's dashboard).

mlflow is imported inside the functions that use it: it is slow to import.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import urllib.error
import urllib.request
from argparse import Namespace
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from utils.checks import is_number
from utils.configuration import neptune_api_token, tracked_params
from utils.output_files import new_file_problems
from utils.run_comparison import plot_runs
from utils.run_folders import MLFLOW_DB, RunRecord, RunRecordError, read_run, refuse_links_leaving

logger = logging.getLogger(__name__)

MLFLOW_ARTIFACTS = "mlartifacts"
MAX_PARAM_LENGTH = 6000  # MLflow 3's limit of a parameter value
MAX_BATCH_PARAMS, MAX_BATCH_METRICS = 100, 1000  # MLflow's limits per log_batch call
MLFLOW_STATUS = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
LIGHTNING_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}
NOTE_TAG = "mlflow.note.content"
RUN_DIR_TAG = "run_dir"
SEED_GROUP_TAG = "seed_group"
NEPTUNE_RUN_TAG = "neptune_offline_run"
SUMMARY_PARAMS = ("runtime", "parameters", "multiply_adds", "num_classes")
HEALTH_TIMEOUT_S = 5
THESIS_COLUMNS = {  # the Neptune dashboard's columns, as search_runs names them
    "tags.mlflow.runName": "run", "status": "state", "metrics.duration_s": "duration_s", "params.runtime": "runtime",
    "params.architecture": "architecture", "params.image_size": "image_size", "params.batch_size": "batch_size",
    "params.parameters": "parameters", "params.convert_to_grayscale": "grayscale", "params.normalize": "normalize",
    "params.crop_to_bboxes": "crop_to_bboxes", "params.erase_background": "erase_background",
    "params.augment_images": "augment_images", "params.augment_tensors": "augment_tensors",
    "params.loss_function": "loss", "params.optimizer": "optimizer", "params.optimizer_params.lr": "lr",
    "params.optimizer_params.weight_decay": "weight_decay", "params.lr_scheduler": "lr_scheduler",
    "params.dropout": "dropout", "params.output_channels": "output_channels", "metrics.epochs_last": "epochs_last",
    "metrics.train_loss_min": "train_loss_min", "metrics.valid_loss_min": "valid_loss_min",
    "metrics.train_acc_max": "train_acc_max", "metrics.valid_acc_max": "valid_acc_max", "tags.tags": "tags",
    f"tags.{NOTE_TAG}": "description",
}


# ---- TensorBoard and Neptune ----------------------------------------------------------------------------


class RunTensorBoardLogger(TensorBoardLogger):
    """TensorBoardLogger that ignores empty hyper-parameter sets (Lightning's own, as modules log theirs
    with logger=False), so the run's parameters stay those shown in TensorBoard's HPARAMS tab."""

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Mapping[str, Any] | None = None, step: int | None = None) -> None:
        if params:
            super().log_hyperparams(params, metrics, step)


NEPTUNE_MODES = ("async", "offline", "debug")


class NeptuneLogger(Logger):
    """A Lightning Logger on neptune-client 1.x (Lightning 2.6 dropped its own): parameters to parameters/,
    per-epoch metrics to metrics/ (step = epoch) and best values to summary/."""

    def __init__(self, project: str, api_token: str | None = None, mode: str = "async",
                 tags: Iterable[str] = (), description: str = "", name: str | None = None):
        super().__init__()
        if mode not in NEPTUNE_MODES:
            raise ValueError(f"neptune mode must be one of {', '.join(NEPTUNE_MODES)}, got {mode!r}")
        self._project = project
        self._api_token = api_token
        self._mode = mode
        self._tags = list(tags)
        self._description = description or ""
        self._run_name = name
        self._run: Any = None
        self._best: dict[str, float] = {}
        self._last_epoch: int | None = None

    @property
    def name(self) -> str:
        return self._project

    @property
    def version(self) -> str:
        return self._run_name or ""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The neptune Run, started on first use."""
        if self._run is None:
            import neptune

            self._run = neptune.init_run(
                project=self._project, api_token=self._api_token, mode=self._mode, tags=self._tags or None,
                description=self._description, name=self._run_name, capture_stdout=False,
                capture_stderr=False, capture_hardware_metrics=False, source_files=[])
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Assign flat 'a.b' parameters under parameters/a/b (lists and null as text)."""
        values = vars(params) if isinstance(params, Namespace) else params
        for key, value in values.items():
            self.experiment[f"parameters/{key.replace('.', '/')}"] = _scalar(value)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Append each metric under metrics/, stepped by epoch when Lightning gives one."""
        values = dict(metrics)
        epoch = values.pop("epoch", None)
        at = int(epoch) if epoch is not None else step
        for key, value in values.items():
            value = float(value)
            self.experiment[f"metrics/{key}"].append(value, step=at)
            self._remember(key, value)
        if epoch is not None:
            self._last_epoch = int(epoch)

    def _remember(self, key: str, value: float) -> None:
        if math.isnan(value):
            return
        if "loss" in key:
            self._best[f"{key}_min"] = min(value, self._best.get(f"{key}_min", math.inf))
        elif "acc" in key:
            self._best[f"{key}_max"] = max(value, self._best.get(f"{key}_max", -math.inf))

    @rank_zero_only
    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Assign values under summary/ (epochs run, best metrics, stop reason, ...)."""
        for key, value in values.items():
            self.experiment[f"summary/{key}"] = _scalar(value)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write the best values seen and the epochs run, then stop the run."""
        if self._run is None:
            return
        summary: dict[str, Any] = dict(self._best)
        if self._last_epoch is not None:
            summary["epochs_last"] = self._last_epoch + 1
        summary["status"] = status
        self.log_summary(summary)
        self._run.stop()
        self._run = None


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return "None" if value is None else str(value)


# ---- MLflow tracking URI --------------------------------------------------------------------------------


def mlflow_tracking_uri(cfg: Mapping[str, Any]) -> str:
    """mlflow_tracking_uri, or (null) the SQLite file <output_path>/mlflow.db as an absolute sqlite:/// URI."""
    if cfg.get("mlflow_tracking_uri"):
        return str(cfg["mlflow_tracking_uri"])
    return f"sqlite:///{Path(cfg['output_path']).resolve() / MLFLOW_DB}"


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
        return f"no MLflow server answers at {uri} ({reason}); start it (README: Dashboard) or fix the URI"
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


def mlflow_problems(cfg: Mapping[str, Any]) -> list[str]:
    """With log_to_mlflow: the tracking URI's problems and an empty experiment name (checked before training)."""
    if cfg.get("log_to_mlflow") is not True:
        return []
    problems = mlflow_uri_problems(mlflow_tracking_uri(cfg))
    if not str(cfg.get("mlflow_experiment") or "").strip():
        problems.append("mlflow_experiment: empty; name the MLflow experiment, e.g. cars")
    return problems


# ---- MLflow logger ----------------------------------------------------------------------------------------


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The dashboard's summary columns of a summary.json: best values, epochs run, duration."""
    values = {"valid_acc_max": (summary.get("best_valid_acc") or {}).get("value"),
              "train_acc_max": summary.get("best_train_acc"),
              "valid_loss_min": (summary.get("best") or {}).get("valid_loss"),
              "train_loss_min": summary.get("best_train_loss"),
              "epochs_last": summary.get("epochs_run"), "duration_s": summary.get("duration_s")}
    return {key: float(value) for key, value in values.items() if is_number(value) and not math.isnan(value)}


def run_tags(cfg: Mapping[str, Any], run_dir: Path, seed_group: str | None = None) -> dict[str, str]:
    """MLflow tags of a run: its name (the run folder's), tags, description as the run's note, folder, seed group."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    tags = {MLFLOW_RUN_NAME: run_dir.name, "tags": ", ".join(map(str, cfg.get("tags") or [])),
            NOTE_TAG: str(cfg.get("description") or ""), RUN_DIR_TAG: str(Path(run_dir).resolve())}
    if seed_group:
        tags[SEED_GROUP_TAG] = seed_group
    return tags


class RunMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger for the thesis's table: parameters up to MLflow's 6,000 characters (Lightning's
    logger cuts them at 250), metrics stepped by the 1-based epoch of metrics.csv, the run's own end state.

    A failing tracking store (a server gone mid-run) is reported once and then left alone: training goes on.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, tags: Mapping[str, str], run_id: str | None = None):
        super().__init__(experiment_name=experiment_name, tracking_uri=tracking_uri, tags=dict(tags),
                         artifact_location=artifact_location(tracking_uri), run_id=run_id)
        self.resumed = run_id is not None
        self.failed = False
        self._status: str | None = None

    def _safely(self, action: Callable[[], Any]) -> None:
        if self.failed:
            return
        try:
            action()
        except Exception as error:  # any failure of the store or its connection
            self.failed = True
            logger.warning("MLflow tracking at %s failed, so this run logs no more to MLflow (training goes on; "
                           "metrics.csv and summary.json keep the records): %s", self._tracking_uri, error)

    def start(self, params: Mapping[str, Any]) -> str | None:
        """Create (or, on resume, reopen) the MLflow run with its parameters; return its id (None on failure)."""
        self._safely(lambda: self._start(params))
        return None if self.failed else self.run_id

    def _start(self, params: Mapping[str, Any]) -> None:
        client = self.experiment
        if self.resumed:
            client.update_run(self.run_id, status="RUNNING")
        self._log_params(params)

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace) -> None:
        values = vars(params) if isinstance(params, Namespace) else dict(params)
        if values:
            self._safely(lambda: self._log_params(values))

    def _log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters the run lacks; MLflow keeps a logged value, so a changed one on resume is only warned."""
        from mlflow.entities import Param

        logged = self.experiment.get_run(self.run_id).data.params
        texts = {key: str(value)[:MAX_PARAM_LENGTH] for key, value in params.items()}
        changed = sorted(key for key, text in texts.items() if key in logged and logged[key] != text)
        if changed:
            logger.warning("MLflow keeps a run's first parameter values; changed on resume (see config.yml): %s",
                           ", ".join(f"{key}={texts[key]}" for key in changed))
        log_in_batches(self.experiment, self.run_id, params=[Param(key, text) for key, text in texts.items()
                                                             if key not in logged])

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = dict(metrics)
        epoch = values.pop("epoch", None)
        at = int(epoch) + 1 if epoch is not None else step
        self._safely(lambda: MLFlowLogger.log_metrics(self, values, at))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Log the summary columns (valid_acc_max, ..., epochs_last, duration_s) of a summary.json."""
        from mlflow.entities import Metric

        values = summary_metrics(summary)
        stamp, step = int(time.time() * 1000), int(values.get("epochs_last", 0))
        metrics = [Metric(key, value, stamp, step) for key, value in values.items()]
        self._safely(lambda: self.experiment.log_batch(self.run_id, metrics=metrics))

    def end(self, summary: Mapping[str, Any], files: Iterable[Path]) -> None:
        """Log the summary columns and the files as artifacts, then mark the run with the summary's state."""
        self._status = MLFLOW_STATUS.get(str(summary.get("state")), "FAILED")
        self.log_summary(summary)
        for path in files:
            self._safely(lambda path=path: self.experiment.log_artifact(self.run_id, str(path)))
        self._safely(lambda: self.experiment.set_terminated(self.run_id, self._status))

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Mark the run with Lightning's status unless end() has already marked it with the summary's state."""
        if self._initialized and self._status is None:
            final = LIGHTNING_STATUS.get(status, "FAILED")
            self._safely(lambda: self.experiment.set_terminated(self.run_id, final))


def log_in_batches(client: Any, run_id: str, params: Sequence[Any] = (), metrics: Sequence[Any] = ()) -> None:
    """client.log_batch within MLflow's limits per call: 100 parameters, 1,000 metrics."""
    for start in range(0, len(params), MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=params[start:start + MAX_BATCH_PARAMS])
    for start in range(0, len(metrics), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start:start + MAX_BATCH_METRICS])


def existing_run_id(uri: str, run_id: str | None) -> str | None:
    """run_id when the tracking store holds that run (a resume continues it), else None (a new run)."""
    if not run_id:
        return None
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).get_run(run_id)
    except Exception as error:  # not found, or the store unreadable: logging then starts a new run
        logger.warning("MLflow run %s not found at %s (%s): resuming into a new MLflow run", run_id, uri, error)
        return None
    return run_id


def make_mlflow_logger(cfg: Mapping[str, Any], run_dir: Path, run_id: str | None = None,
                       seed_group: str | None = None) -> RunMLFlowLogger | None:
    """The run's MLflow logger (log_to_mlflow), continuing run_id when the store has it; call on rank zero only,
    as it opens (and first creates) the tracking store."""
    if not cfg.get("log_to_mlflow"):
        return None
    uri = mlflow_tracking_uri(cfg)
    try:
        return RunMLFlowLogger(uri, cfg["mlflow_experiment"], run_tags(cfg, run_dir, seed_group),
                               existing_run_id(uri, run_id))
    except Exception as error:  # the store went away since the configuration check
        logger.warning("MLflow tracking at %s unavailable, training without it: %s", uri, error)
        return None


def make_loggers(cfg: Mapping[str, Any], run_dir: Path) -> list[Logger]:
    """TensorBoard under <run_dir>/tensorboard (log_to_tensorboard) and Neptune (log_to_neptune)."""
    loggers: list[Logger] = []
    if cfg["log_to_tensorboard"]:
        loggers.append(RunTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                                            default_hp_metric=False))
    if cfg["log_to_neptune"]:
        loggers.append(NeptuneLogger(
            project=f"{cfg['neptune_username']}/{cfg['neptune_project_name']}", api_token=neptune_api_token(cfg),
            mode=cfg["neptune_mode"], tags=cfg["tags"], description=cfg["description"] or "",
            name=run_dir.name))
    return loggers


def run_artifacts(run: RunRecord, scratch: Path, checkpoints: bool = False) -> list[Path]:
    """A run's files for MLflow: config.yml, summary.json, curves.png (drawn into scratch), and the checkpoints."""
    run_dir = run.path
    curves = scratch / "curves.png"
    plot_runs([run], curves)
    files = [run_dir / "config.yml", run_dir / "summary.json", curves]
    if checkpoints:
        files += [run_dir / "best.ckpt", run_dir / "last.ckpt"]
    return [path for path in files if path.is_file()]


def end_mlflow_run(run_logger: RunMLFlowLogger, summary: Mapping[str, Any], run_dir: Path,
                   checkpoints: bool) -> None:
    """End a run's MLflow run: summary columns, artifacts (curves drawn in a temporary folder), state."""
    with tempfile.TemporaryDirectory() as scratch:
        files = run_artifacts(read_run(run_dir), Path(scratch), checkpoints) if not run_logger.failed else []
        run_logger.end(summary, files)


# ---- imports and the table --------------------------------------------------------------------------------


def _client_and_experiment(uri: str, experiment: str) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, found.experiment_id
    return client, client.create_experiment(experiment, artifact_location=artifact_location(uri))


def prepare_mlflow_experiment(cfg: Mapping[str, Any]) -> None:
    """With log_to_mlflow: create the tracking store and the experiment now (before workers race to create them)."""
    if cfg.get("log_to_mlflow") is True:
        _client_and_experiment(mlflow_tracking_uri(cfg), str(cfg["mlflow_experiment"]))


def _tagged_run_exists(client: Any, experiment_id: str, key: str, value: str) -> bool:
    escaped = value.replace("'", "\\'")
    return bool(client.search_runs([experiment_id], f"tags.`{key}` = '{escaped}'", max_results=1))


def _run_exists(client: Any, run_id: Any) -> bool:
    if not isinstance(run_id, str) or not run_id:
        return False
    try:
        client.get_run(run_id)
    except Exception:  # not in this store
        return False
    return True


def _log_run(client: Any, experiment_id: str, tags: Mapping[str, str], params: Mapping[str, Any],
             series: Mapping[str, Sequence[tuple[int, float]]], summary: Mapping[str, float],
             status: str, files: Iterable[Path] = ()) -> str:
    """Create one MLflow run from recorded values; return its id."""
    from mlflow.entities import Metric, Param

    run_id = client.create_run(experiment_id, tags=dict(tags)).info.run_id
    stamp = int(time.time() * 1000)
    params_list = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()]
    metrics = [Metric(key, value, stamp, step) for key, points in series.items() for step, value in points]
    last = max((step for points in series.values() for step, _ in points), default=0)
    metrics += [Metric(key, value, stamp, last) for key, value in summary.items()]
    log_in_batches(client, run_id, params_list, metrics)
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)
    return run_id


def _record_series(run: RunRecord) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in run.metrics:
        epoch = row.get("epoch")
        for key, value in row.items():
            if key != "epoch" and epoch is not None and value is not None and not math.isnan(value):
                series.setdefault(key, []).append((int(epoch), float(value)))
    return series


def import_run_folder(client: Any, experiment_id: str, run: RunRecord) -> str | None:
    """Log one run folder as an MLflow run; None when the store already has it (logged live or imported)."""
    run_dir = str(run.path.resolve())
    if _run_exists(client, run.summary.get("mlflow_run_id")) or \
            _tagged_run_exists(client, experiment_id, RUN_DIR_TAG, run_dir):
        return None
    config = {**run.config, "tags": run.config.get("tags") or run.summary.get("tags") or [],
              "description": run.config.get("description") or run.summary.get("description")}
    params = {**tracked_params(config), **{key: run.summary[key] for key in SUMMARY_PARAMS if key in run.summary}}
    status = MLFLOW_STATUS.get(str(run.summary.get("state")), "FAILED")
    tags = run_tags(config, run.path, run.summary.get(SEED_GROUP_TAG))
    with tempfile.TemporaryDirectory() as scratch:
        files = run_artifacts(run, Path(scratch))
        return _log_run(client, experiment_id, tags, params, _record_series(run), summary_metrics(run.summary),
                        status, files)


def neptune_run_dirs(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Neptune offline run folders (run__*) given, or under the given folders or their offline/ folder."""
    found: set[Path] = set()
    for root in map(Path, roots):
        for candidate in (root, *root.glob("run__*"), *root.glob("offline/run__*")):
            if candidate.name.startswith("run__") and any(candidate.glob("data-*.log")):
                found.add(candidate)
    return sorted(found)


def _apply_neptune_operation(operation: Mapping[str, Any], values: dict[str, Any],
                             series: dict[str, list[tuple[int, float]]]) -> None:
    path = "/".join(operation.get("path", []))
    if "value" in operation:
        values[path] = operation["value"]
    elif operation["type"] == "AddStrings":
        values[path] = list(dict.fromkeys([*values.get(path, []), *operation["values"]]))
    elif operation["type"] == "LogFloats":
        points = series.setdefault(path, [])
        for item in operation["values"]:
            step = item.get("step")
            points.append((int(step) if step is not None else len(points), float(item["value"])))


def read_neptune_offline(run_dir: Path) -> tuple[dict[str, Any], dict[str, list[tuple[int, float]]]]:
    """(assigned values, appended float series) of a Neptune offline run, keyed by 'a/b' paths; RunRecordError
    names a line that is no Neptune operation, or a link leading outside the folder."""
    refuse_links_leaving(run_dir, "Neptune offline folder")
    values: dict[str, Any] = {}
    series: dict[str, list[tuple[int, float]]] = {}
    logs = [path for path in run_dir.glob("data-*.log") if path.stem.removeprefix("data-").isdigit()]
    for log_file in sorted(logs, key=lambda path: int(path.stem.removeprefix("data-"))):
        number = 0
        try:
            for number, line in enumerate(log_file.read_text(encoding="utf-8").splitlines(), start=1):
                _apply_neptune_operation(json.loads(line)["obj"], values, series)
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as error:
            where = f"{log_file}, line {number}" if number else str(log_file)
            raise RunRecordError(f"{where}: not a Neptune offline operation ({type(error).__name__}: {error})") \
                from None
    return values, series


def readable_neptune_runs(run_dirs: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """The Neptune offline runs that can be read, and one problem line for each of the others."""
    readable, problems = [], []
    for run_dir in run_dirs:
        try:
            read_neptune_offline(run_dir)
            readable.append(run_dir)
        except RunRecordError as error:
            problems.append(f"{error} (skipped)")
    return readable, problems


def import_neptune_run(client: Any, experiment_id: str, run_dir: Path) -> str | None:
    """Log one Neptune offline run (parameters, tags, description, per-epoch series, summary numbers) as an MLflow
    run; None when the store already has it."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    if _tagged_run_exists(client, experiment_id, NEPTUNE_RUN_TAG, run_dir.name):
        return None
    values, series = read_neptune_offline(run_dir)
    params = {key.removeprefix("parameters/").replace("/", "."): value
              for key, value in values.items() if key.startswith("parameters/")}
    summary = {key.removeprefix("summary/"): float(value) for key, value in values.items()
               if key.startswith("summary/") and is_number(value)}
    metrics = {key.removeprefix("metrics/"): points for key, points in series.items() if key.startswith("metrics/")}
    tags = {MLFLOW_RUN_NAME: str(values.get("sys/name") or run_dir.name), NEPTUNE_RUN_TAG: run_dir.name,
            "tags": ", ".join(values.get("sys/tags", [])), NOTE_TAG: str(values.get("sys/description") or "")}
    return _log_run(client, experiment_id, tags, params, metrics, summary, "FINISHED")


def import_to_mlflow(run_records: Sequence[RunRecord], neptune_dirs: Sequence[Path], uri: str,
                     experiment: str) -> tuple[list[str], list[str]]:
    """Import run folders and Neptune offline runs into an MLflow experiment; (imported, already there) names."""
    client, experiment_id = _client_and_experiment(uri, experiment)
    imported, present = [], []
    for run in run_records:
        (imported if import_run_folder(client, experiment_id, run) else present).append(str(run.path))
    for run_dir in neptune_dirs:
        (imported if import_neptune_run(client, experiment_id, run_dir) else present).append(str(run_dir))
    return imported, present


def runs_table(cfg: Mapping[str, Any]) -> Any:
    """The thesis's run table of the configured MLflow experiment as a pandas DataFrame (for notebooks)."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_tracking_uri(cfg))
    frame = mlflow.search_runs(experiment_names=[cfg["mlflow_experiment"]], order_by=["start_time DESC"])
    columns = [name for name in THESIS_COLUMNS if name in frame.columns]
    return frame[columns].rename(columns=THESIS_COLUMNS)
