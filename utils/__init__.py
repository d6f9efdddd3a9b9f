"""Helpers shared by the scripts, datasets/ and models/: configuration, logging, timing, run records."""

from utils.configuration import ConfigError, load_config, schema_rows
from utils.logger import setup_logging
from utils.timing import format_duration, log_execution_time

__all__ = ["ConfigError", "format_duration", "load_config", "log_execution_time", "schema_rows", "setup_logging"]
