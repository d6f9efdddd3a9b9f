"""Reading config.yml into a Config: YAML, overrides (dotted keys), defaults and every check, problems together."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from utils.bounded_files import FileLimitError, load_yaml_text, read_yaml_file
from utils.config.schema import LABEL, TRAINED, Config, key_fields, key_info, keys_of_kind
from utils.config.validation import validate

TEMPLATE_NAME = "config_template.yml"
Check = Callable[[Config], list[str]]
Override = tuple[str, Any]  # a dotted key path and its value


class ConfigError(ValueError):
    """Raised with every problem of a configuration at once."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} configuration {noun}:\n{lines}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            name = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if name in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {name!r} appears twice (lines {seen[name]} and {line}); keep one",
                    key_node.start_mark)
            seen[name] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike, what: str = "configuration file") -> dict[str, Any]:
    """Read a configuration (or study) file as a mapping, with an explanation when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        tried = "" if path.is_absolute() else f" (looked for {Path.cwd() / path})"
        hint = ""
        if path.name == "config.yml":
            hint = f"; create it from the template: cp {TEMPLATE_NAME} {path} (then edit it)"
        raise ConfigError(str(path), [f"{what} not found{tried}{hint}"])
    try:
        raw = read_yaml_file(path, _UniqueKeyLoader)  # bounded: size, strings, depth, aliases (docs/security.md)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"not valid YAML: {error}"]) from None
    except FileLimitError as error:
        raise ConfigError(str(path), [str(error).removeprefix(f"{path}: ")]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [f"expected a mapping of keys at the top level, got {type(raw).__name__}"])
    return raw


def parse_override(text: str) -> Override:
    """'key.path=value' (train.py --set) -> ('key.path', YAML-typed value)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError("--set", [f"{text!r}: expected key=value, e.g. optimizer_params.lr=0.003"])
    try:
        parsed = load_yaml_text(value, "--set") if value.strip() else None
    except (yaml.YAMLError, FileLimitError) as error:
        raise ConfigError("--set", [f"{name}: value {value!r} is not valid YAML ({error})"]) from None
    return name.strip(), parsed


def yaml_inline(value: Any) -> str:
    """A value as one line of YAML, mappings in their own order (as --set reads it back)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text.removesuffix("...").strip()


def parse_overrides(texts: Iterable[str]) -> list[Override]:
    """Every --set text as (dotted key, value), in order."""
    return [parse_override(text) for text in texts]


def override_origins(texts: Iterable[str], data_path: str | None = None) -> dict[str, str]:
    """Each dotted key set on the command line -> the option as typed (--set key=value, -d PATH), the later
    winning, so that a problem with that key names what the user typed rather than the file."""
    origins = {name.strip(): f"--set {text}" for text in texts for name in [text.partition("=")[0]]}
    return {**origins, **({"stanford_data_path": f"-d {data_path}"} if data_path is not None else {})}


def _with_origin(problem: str, origins: Mapping[str, str]) -> tuple[str, str | None]:
    """(problem named by the command-line option that set its key, that option) or (problem, None)."""
    key = problem.partition(":")[0]
    found = None
    for dotted, origin in origins.items():
        if key == dotted or key.startswith(f"{dotted}.") or dotted.startswith(f"{key}."):
            found = (dotted, origin)
    if found is None:
        return problem, None
    dotted, origin = found
    if key == dotted and origin.startswith("--set "):  # the key is in what was typed: --set lr=x: expected ...
        return f"{origin}:{problem.partition(':')[2]}", origin.split()[0]
    return f"{origin}: {problem}", origin.split()[0]


def labelled_problems(source: str, problems: Iterable[str],
                      origins: Mapping[str, str]) -> tuple[str, list[str]]:
    """(heading, problems): each problem of a command-line key named by its option; the heading is the file when
    any problem is the file's, else the options."""
    labelled = [_with_origin(problem, origins) for problem in problems]
    options = list(dict.fromkeys(option for _, option in labelled if option))
    heading = source if any(option is None for _, option in labelled) or not options else ", ".join(options)
    return heading, [text for text, _ in labelled]


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """A copy of a raw configuration with each (dotted key, value) set in order.

    A parent missing from the file starts from its default mapping; a null or non-mapping parent becomes {}.
    """
    result = copy.deepcopy(dict(raw))
    defaults = config_dict(Config())
    for dotted, value in overrides:
        path = dotted.split(".")
        node = result
        for depth, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                fallback = defaults.get(part) if depth == 0 and part not in node else None
                node[part] = copy.deepcopy(fallback) if isinstance(fallback, dict) else {}
            node = node[part]
        node[path[-1]] = copy.deepcopy(value)
    return result


def tracking_problems(config: Config) -> list[str]:
    """Neptune settings needed when log_to_neptune is on."""
    if not config.log_to_neptune:
        return []
    problems = []
    for name in ("neptune_username", "neptune_project_name"):
        value = getattr(config, name)
        if not isinstance(value, str) or not value.strip() or value.startswith("<"):
            problems.append(f"{name}: set it to your Neptune {name.split('_')[1]} (log_to_neptune is true)")
    if config.neptune_mode == "async" and not neptune_api_token(config):
        problems.append("neptune_api_token: no token; export NEPTUNE_API_TOKEN=... (preferred) or set the key, "
                        "or use neptune_mode: offline")
    return problems


def neptune_api_token(config: Config) -> str | None:
    """The Neptune token: NEPTUNE_API_TOKEN environment variable first, then the config (placeholders ignored)."""
    token = os.environ.get("NEPTUNE_API_TOKEN") or config.neptune_api_token
    if not isinstance(token, str) or not token.strip() or token.startswith("<"):
        return None
    return token


def config_from_mapping(raw: Mapping[str, Any], source: str, overrides: Iterable[Override] = (),
                        checks: Iterable[Check] = (), origins: Mapping[str, str] | None = None) -> Config:
    """Override, fill defaults, validate and run the checks; raise ConfigError naming source (or, for keys set on
    the command line, the option given in origins: override_origins) with every problem."""
    config, problems = validate(apply_overrides(raw, overrides))
    problems += tracking_problems(config)
    check_config(config, source, checks, origins, problems)
    return config


def check_config(config: Config, source: str, checks: Iterable[Check], origins: Mapping[str, str] | None = None,
                 problems: list[str] | None = None) -> None:
    """Run the checks on a loaded Config; raise ConfigError naming source (or the option given in origins) with
    every problem, those already found (problems) first."""
    problems = list(problems or [])
    for check in checks:
        try:
            problems += check(config)
        except Exception as error:  # a check tripping over a value already reported above
            if not problems:
                raise
            problems.append(f"{getattr(check, '__module__', check)} checks could not run: {error}")
    if problems:
        raise ConfigError(*labelled_problems(source, problems, origins or {}))


def load_config(path: str | os.PathLike, overrides: Iterable[Override] = (), checks: Iterable[Check] = (),
                origins: Mapping[str, str] | None = None) -> Config:
    """Read a config file, apply the overrides and check everything; raise ConfigError listing every problem."""
    return config_from_mapping(read_yaml(path), str(path), overrides, checks, origins)


def configured_output_path(path: str | os.PathLike | None = None) -> str:
    """output_path of the configuration file given, else of config.yml when there is one, else the default."""
    if path is None:
        if not Path("config.yml").is_file():
            return Config().output_path
        path = "config.yml"
    return load_config(path).output_path


def config_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain YAML values (nested keys as mappings), in config.yml's order."""
    return asdict(config)


def config_for_records(config: Config) -> dict[str, Any]:
    """What is safe to write to disk or trackers: the configuration without its API token."""
    return config_dict(replace(config, neptune_api_token=None))


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved configuration (no API token) as YAML in config.yml's order."""
    text = yaml.safe_dump(config_for_records(config), sort_keys=False, default_flow_style=None, width=120)
    Path(path).write_text(text, encoding="utf-8")


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for name, item in value.items():
            flat.update(_flat(item, f"{prefix}.{name}"))
        return flat
    if isinstance(value, (bool, int, float, str)):
        return {prefix: value}
    return {prefix: "None" if value is None else str(value)}


def tracked_params(config: Config | Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The tracked keys (what was trained, and the run's labels) as flat 'key.sub' -> scalar (lists and null as
    text), for the trackers; a recorded config.yml mapping works too."""
    values = config_dict(config) if isinstance(config, Config) else config
    flat: dict[str, Any] = {}
    for name, field in key_fields(Config).items():
        if key_info(field).tracked:
            flat.update(_flat(values.get(name), name))
    return flat


def training_settings(values: Mapping[str, Any], with_seed: bool = False) -> dict[str, Any]:
    """The keys of a recorded config.yml mapping that say what was trained (and the seed): runs equal in these
    differ only by seed, or not at all."""
    kept = keys_of_kind(TRAINED) + (("seed",) if with_seed else ())
    return {name: values.get(name) for name in kept if name in values}


LABEL_KEYS = keys_of_kind(LABEL)
