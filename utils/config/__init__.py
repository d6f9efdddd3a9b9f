"""The configuration: one typed object (Config) read from config.yml, with every problem reported at once."""

from utils.config.loading import (ConfigError, config_dict, config_for_records, load_config, parse_overrides,
                                  save_config, tracked_params)
from utils.config.schema import MAX_SEED, Config

__all__ = ["MAX_SEED", "Config", "ConfigError", "config_dict", "config_for_records", "load_config",
           "parse_overrides", "save_config", "tracked_params"]
