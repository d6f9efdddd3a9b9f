"""Logging set-up: console and a daily file logs/YYYYMMDD.log.

The console shows this project's messages at the configured level and the libraries' warnings; the libraries'
INFO messages (Lightning's device lines and model summary, Optuna's study notes, MLflow's and alembic's database
set-up) go to the log file only, and Lightning's adverts nowhere.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MARK = "_cars_handler"
_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
_LIBRARY_LOGGERS = (*_LIGHTNING_LOGGERS, "optuna", "mlflow", "alembic")
ADVERT_PREFIX = "💡 Tip"  # Lightning's notes recommending its cloud products


def log_file_path(logging_dir: str | os.PathLike, day: datetime | None = None) -> Path:
    """The log file of a day: <logging_dir>/YYYYMMDD.log."""
    return Path(logging_dir) / f"{(day or datetime.now()):%Y%m%d}.log"


def _no_adverts(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(ADVERT_PREFIX)


def setup_logging(loglevel: str = "INFO", logging_dir: str | os.PathLike = "logs",
                  main_process: bool = True) -> Path:
    """Send log records to the console and to today's log file (appending); return the file's path. The other
    processes of a run (its ranks above 0) write no file and show warnings and errors only: rank 0 reports the run."""
    path = log_file_path(logging_dir)
    if not main_process:
        return _setup_console_only(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # MLflow sets up its own loggers when first imported, often after this: at WARNING its notes on creating and
    # updating its database tables stay off the console (once imported, its loggers are among the libraries' below).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    formatter = logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S")
    file_handler = logging.FileHandler(path, encoding="utf-8")
    console_handler = logging.StreamHandler()
    library_console = logging.StreamHandler()
    library_console.setLevel(logging.WARNING)
    for handler in (file_handler, console_handler, library_console):
        handler.setFormatter(formatter)
        handler.addFilter(_no_adverts)
        setattr(handler, _MARK, True)
    root = logging.getLogger()
    _replace_handlers(root, [file_handler, console_handler])
    root.setLevel(loglevel)
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        _replace_handlers(library, [file_handler, library_console], own_too=True)
        library.propagate = False  # else root's console would show their INFO messages too
    return path


def _setup_console_only(path: Path) -> Path:
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
    console.addFilter(_no_adverts)
    setattr(console, _MARK, True)
    root = logging.getLogger()
    _replace_handlers(root, [console])
    for name in _LIBRARY_LOGGERS:
        _replace_handlers(logging.getLogger(name), [console], own_too=True)
        logging.getLogger(name).propagate = False
    return path


def _replace_handlers(logger: logging.Logger, handlers: list[logging.Handler], own_too: bool = False) -> None:
    """Put handlers in place of the ones set up before (and, with own_too, of those the library added itself:
    Lightning and Optuna each print to the console from a handler of their own)."""
    for handler in [h for h in logger.handlers if own_too or getattr(h, _MARK, False)]:
        logger.removeHandler(handler)
        if getattr(handler, _MARK, False):
            handler.close()
    for handler in handlers:
        logger.addHandler(handler)


def remove_logging() -> None:
    """Close and remove the handlers setup_logging added, e.g. before the streams they write to are closed."""
    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in _LIBRARY_LOGGERS)):
        for handler in [h for h in logger.handlers if getattr(h, _MARK, False)]:
            logger.removeHandler(handler)
            handler.close()
