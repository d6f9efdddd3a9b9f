"""Logging set-up: console and a daily file logs/YYYYMMDD.log."""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MARK = "_cars_handler"
_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


def log_file_path(logging_dir: str | os.PathLike, day: datetime | None = None) -> Path:
    """The log file of a day: <logging_dir>/YYYYMMDD.log."""
    return Path(logging_dir) / f"{(day or datetime.now()):%Y%m%d}.log"


def setup_logging(loglevel: str = "INFO", logging_dir: str | os.PathLike = "logs") -> Path:
    """Send log records to the console and to today's log file (appending); return the file's path."""
    path = log_file_path(logging_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S")
    file_handler = logging.FileHandler(path, encoding="utf-8")
    console_handler = logging.StreamHandler()
    for handler in (file_handler, console_handler):
        handler.setFormatter(formatter)
        setattr(handler, _MARK, True)
    root = logging.getLogger()
    _replace_handlers(root, [file_handler, console_handler])
    root.setLevel(loglevel)
    for name in _LIGHTNING_LOGGERS:  # Lightning keeps its own console handler and does not propagate
        _replace_handlers(logging.getLogger(name), [file_handler])
    return path


def _replace_handlers(logger: logging.Logger, handlers: list[logging.Handler]) -> None:
    for handler in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(handler)
        handler.close()
    for handler in handlers:
        logger.addHandler(handler)
