"""The configuration schema (the single list of settings), `config.yml` loading, overrides and validation."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from utils.checks import did_you_mean, is_integer, is_number

NoneType = type(None)
TEMPLATE_NAME = "config_template.yml"
MAX_SEED = 2**32 - 1  # seeds are unsigned 32-bit numbers (numpy's limit)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PRECISIONS = (64, 32, 16, "64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true",
              "16-mixed", "bf16-mixed", "transformer-engine", "transformer-engine-float16")


class ConfigError(ValueError):
    """Raised with every problem of a configuration at once."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} configuration {noun}:\n{lines}")


@dataclass(frozen=True)
class Setting:
    """One configuration key: accepted types, default, one-line description, sent to trackers or not.

    ``at_least``/``at_most`` (inclusive) and ``above``/``below`` (exclusive) bound a number, or each number of a
    list.
    """

    name: str
    types: tuple[type, ...]
    default: Any
    comment: str
    tracked: bool = False
    item_type: type | None = None
    length: int | None = None
    choices: tuple[Any, ...] | None = None
    children: tuple["Setting", ...] = ()
    at_least: float | None = None
    at_most: float | None = None
    above: float | None = None
    below: float | None = None


def _norm(mean: list[float], std: list[float], mode: str) -> tuple[Setting, ...]:
    return (Setting("mean", (list,), mean, f"per-channel means ({mode}, of pixel values scaled to 0..1)", True, float,
                    len(mean), at_least=0, at_most=1),
            Setting("std", (list,), std, f"per-channel standard deviations ({mode})", True, float, len(std), above=0))


SCHEMA: tuple[Setting, ...] = (
    # logging and tracking
    Setting("loglevel", (str,), "INFO", "console and log-file level", choices=(
        "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    Setting("logging_dir", (str,), "logs", "folder of the daily log files (YYYYMMDD.log)"),
    Setting("log_to_neptune", (bool,), False, "send the run to Neptune (needs the three neptune_* keys below)"),
    Setting("neptune_username", (str, NoneType), "<neptune.ai username>", "Neptune workspace (user name)"),
    Setting("neptune_project_name", (str, NoneType), "<neptune.ai project name>", "Neptune project name"),
    Setting("neptune_api_token", (str, NoneType), None,
            "Neptune API token; prefer the NEPTUNE_API_TOKEN environment variable (never written to records)"),
    Setting("neptune_mode", (str,), "async", "Neptune connection mode: async (live), offline (sync later), debug",
            choices=("async", "offline", "debug")),
    Setting("log_to_tensorboard", (bool,), True, "write TensorBoard events under the run folder"),
    Setting("log_to_mlflow", (bool,), True, "log the run to MLflow, the runs dashboard (make dashboard)"),
    Setting("mlflow_tracking_uri", (str, NoneType), None,
            "MLflow tracking URI: null: the SQLite file <output_path>/mlflow.db; sqlite:///path/mlflow.db; "
            "http://host:5000 (a shared mlflow server)"),
    Setting("mlflow_experiment", (str,), "cars", "MLflow experiment of the runs"),
    Setting("mlflow_log_checkpoints", (bool,), False, "also store best.ckpt and last.ckpt as MLflow artifacts"),
    Setting("tags", (list,), [], "tags of the run (MLflow and Neptune tags, summary.json)", True, str),
    Setting("description", (str, NoneType), "", "free-text description of the run (MLflow's run note)", True),
    # locations
    Setting("stanford_raw_data_path", (str,), "input/raw",
            "folder of the raw Stanford Cars files (car_ims.tgz, cars_annos.mat, car_devkit.tgz)"),
    Setting("stanford_data_path", (str,), "input/stanford", "prepared data folder (train.py -d overrides it)"),
    Setting("output_path", (str,), "output", "folder of the run folders (checkpoints, records, TensorBoard)"),
    # preprocessing
    Setting("image_size", (list,), [227, 227], "network input size [height, width]", True, int, 2, at_least=1),
    Setting("convert_to_grayscale", (bool,), False, "convert images to one grayscale channel", True),
    Setting("normalize", (bool,), True, "normalise tensors with the parameters of the colour mode", True),
    Setting("normalization_params_rgb", (dict,), None, "used when convert_to_grayscale is false", True,
            children=_norm([0.4707, 0.4602, 0.4550], [0.2594, 0.2585, 0.2635], "RGB")),
    Setting("normalization_params_grayscale", (dict,), None, "used when convert_to_grayscale is true", True,
            children=_norm([0.4627], [0.2545], "grayscale")),
    Setting("crop_to_bboxes", (bool,), False, "crop training images to their bounding boxes", True),
    Setting("erase_background", (bool,), False,
            "erase the background outside the box instead of cropping, keeping ratios (with crop_to_bboxes)", True),
    Setting("augment_images", (bool,), True, "apply image_augmentations to training images", True),
    Setting("image_augmentations", (dict, NoneType), {
        "RandomHorizontalFlip": {"p": 0.5},
        "RandomAffine": {"degrees": 25, "translate": [0.1, 0.1], "scale": [0.9, 1.1], "shear": 8},
        "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1}},
        "torchvision.transforms on PIL images, applied in order: {ClassName: {kwarg: value}}", True),
    Setting("augment_tensors", (bool,), False, "apply tensor_augmentations to training tensors", True),
    Setting("tensor_augmentations", (dict, NoneType), None,
            "torchvision.transforms on tensors, applied in order: {ClassName: {kwarg: value}}, "
            "e.g. {RandomErasing: {p: 0.5, scale: [0.02, 0.25]}}", True),
    # network and training
    Setting("architecture", (str,), "ghost", "network name from models.arch_dict", True),
    Setting("pretrained_weights", (str, NoneType), None,
            "torchvision weights name (e.g. IMAGENET1K_V1) or a weights file; null trains from scratch", True),
    Setting("batch_size", (int,), 64, "images per batch (per device)", True, at_least=1),
    Setting("num_epochs", (int,), 200, "maximum number of epochs", True, at_least=1),
    Setting("early_stopping_patience", (int, NoneType), None,
            "epochs without valid_loss improvement before stopping; null: 15, or 3x ReduceLROnPlateau patience",
            True, at_least=0),
    Setting("dropout", (float,), 0.2, "dropout rate before the last Linear layer", True, at_least=0, below=1),
    Setting("output_channels", (int,), 320, "channels of the last layer before the classifier (GhostNet)", True,
            at_least=1),
    Setting("optimizer", (str,), "AdamW", "a torch.optim class name", True),
    Setting("optimizer_params", (dict, NoneType), {"lr": 0.001, "weight_decay": 0.6},
            "keyword arguments of the optimizer", True),
    Setting("lr_scheduler", (str, NoneType), "MultiStepLR",
            "a torch.optim.lr_scheduler class name, or null for a constant learning rate", True),
    Setting("lr_scheduler_params", (dict, NoneType), {"gamma": 0.1, "milestones": [67, 82, 95, 107]},
            "keyword arguments of the scheduler (epochs); LambdaLR/MultiplicativeLR: lr_lambda: '0.975 ** epoch'",
            True),
    Setting("loss_function", (str,), "LabelSmoothingCrossEntropy",
            "LabelSmoothingCrossEntropy or a torch.nn loss class name", True),
    Setting("loss_params", (dict, NoneType), None, "keyword arguments of the loss (e.g. epsilon: 0.1)", True),
    # reproducibility and hardware
    Setting("seed", (int, NoneType), 42, "seed of every random generator (workers too); null draws one", True,
            at_least=0, at_most=MAX_SEED),
    Setting("num_workers", (int, NoneType), None, "data loader processes; null: the machine's cores, at most 8",
            at_least=0),
    Setting("pin_memory", (bool, NoneType), None,
            "page-locked loader memory for faster copies to the GPU; null: when CUDA is available"),
    Setting("persistent_workers", (bool,), True, "keep the loader processes alive from one epoch to the next"),
    Setting("prefetch_factor", (int, NoneType), None,
            "batches each loader process prepares ahead; null: torch's default (2)", at_least=1),
    Setting("cache_images", (bool,), False,
            "preprocess (crop, erase, resize, grayscale) once into uint8 cache files: same pixels, "
            "no JPEG decoding later"),
    Setting("cache_path", (str, NoneType), None,
            "folder of the image cache files; null: <stanford_data_path>/.cache"),
    Setting("augmentation_device", (str,), "cpu",
            "cpu: augment each image in the loader (torchvision); gpu: whole batches on the training device "
            "(kornia)",
            True, choices=("cpu", "gpu")),
    Setting("data_on_device", (bool,), False,
            "keep the cached uint8 images of both splits in the training device's memory and draw, augment and "
            "normalise batches there, with no loader processes (needs cache_images and augmentation_device: gpu)",
            True),
    Setting("validation_batch_size", (int, NoneType), None,
            "images per validation batch (per device); null: batch_size. Larger is faster on GPUs, same results",
            at_least=1),
    Setting("precision", (int, str), 32, "Trainer precision: 32, 16-mixed, bf16-mixed, ...", True,
            choices=PRECISIONS),
    Setting("channels_last", (bool,), False,
            "channels-last memory layout of network and inputs (faster with mixed precision on GPUs)", True),
    Setting("compile_model", (bool,), False, "torch.compile the network (compiles during the first steps)", True),
    Setting("compile_mode", (str,), "default",
            "torch.compile mode with compile_model: default, reduce-overhead (CUDA graphs: far fewer kernel "
            "launches), max-autotune, max-autotune-no-cudagraphs", True, choices=COMPILE_MODES),
    Setting("cudnn_benchmark", (bool,), False,
            "on CUDA: cuDNN times its convolution algorithms on the first batches of each shape and keeps the "
            "fastest (results differ in the last bits; runs are no longer bit-reproducible)", True),
    Setting("accelerator", (str,), "auto", "auto (CUDA when available, else CPU), gpu, cpu, mps, ...",
            choices=("auto", "cpu", "gpu", "cuda", "mps", "tpu")),
    Setting("devices", (int, str, list), 1, "devices per node: a count, 'auto' or a list of indices", True, int),
    Setting("strategy", (str,), "auto", "Lightning strategy: auto, ddp, ddp_spawn, ...", True),
    Setting("num_nodes", (int,), 1, "machines taking part (DDP)", True, at_least=1),
)


def _setting_default(setting: Setting) -> Any:
    if setting.children:
        return {child.name: copy.deepcopy(child.default) for child in setting.children}
    return copy.deepcopy(setting.default)


def default_config() -> dict[str, Any]:
    """The configuration made of every schema default."""
    return {setting.name: _setting_default(setting) for setting in SCHEMA}


def schema_rows() -> list[tuple[str, str, str]]:
    """(key path, default as YAML, description) of every schema key, nested keys included, in schema order."""
    rows = []
    for setting in SCHEMA:
        if setting.children:
            rows.append((setting.name, "", setting.comment))
            rows.extend((f"{setting.name}.{child.name}", yaml_inline(child.default), _description(child))
                        for child in setting.children)
        else:
            rows.append((setting.name, yaml_inline(setting.default), _description(setting)))
    return rows


def _description(setting: Setting) -> str:
    bounds = _bound_text(setting)
    if bounds and list in setting.types:
        bounds = f"each {bounds}"
    return f"{setting.comment}; {bounds}" if bounds else setting.comment


def schema_markdown_table() -> str:
    """The README table of every configuration key."""
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, default, comment in schema_rows():
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{key}` | {shown.replace('|', '&#124;')} | {comment.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


def yaml_inline(value: Any) -> str:
    """A value as one line of YAML, mappings in their own order (as --set reads it back)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip().removesuffix("...").strip()


def _type_names(types: Iterable[type]) -> str:
    names = {NoneType: "null", dict: "mapping", list: "list", str: "string", bool: "boolean",
             int: "integer", float: "number"}
    return " or ".join(names.get(item, item.__name__) for item in types)


def _matches(value: Any, wanted: type) -> bool:
    if wanted is float:
        return is_number(value)
    if wanted is int:
        return is_integer(value)
    return isinstance(value, wanted)


def _unknown_key_problem(path: str, key: Any, known: Iterable[str]) -> str:
    hint = did_you_mean(key, known) or f"valid keys: {', '.join(sorted(known))}"
    hint = f"; {hint}"
    return f"{path}{key}: unknown key{hint}"


def _value_problems(setting: Setting, value: Any, path: str) -> list[str]:
    if not any(_matches(value, wanted) for wanted in setting.types):
        return [f"{path}: expected {_type_names(setting.types)}, got {type(value).__name__} {value!r}"]
    if setting.choices is not None and value not in setting.choices:
        return [f"{path}: {value!r} is not one of {', '.join(map(str, setting.choices))}"]
    if isinstance(value, list) and setting.item_type is not None:
        bad = [item for item in value if not _matches(item, setting.item_type)]
        if bad:
            return [f"{path}: expected a list of {_type_names([setting.item_type])} values, got {value!r}"]
        if setting.length is not None and len(value) != setting.length:
            return [f"{path}: expected {setting.length} values, got {len(value)} ({value!r})"]
    return _bound_problems(setting, value, path)


def _bound_text(setting: Setting) -> str:
    parts = [f"at least {setting.at_least}" if setting.at_least is not None else "",
             f"above {setting.above}" if setting.above is not None else "",
             f"at most {setting.at_most}" if setting.at_most is not None else "",
             f"below {setting.below}" if setting.below is not None else ""]
    return " and ".join(part for part in parts if part)


def _bound_problems(setting: Setting, value: Any, path: str) -> list[str]:
    """Numbers (or the numbers of a list) outside the setting's bounds."""
    numbers = value if isinstance(value, list) else [value]
    outside = [number for number in numbers if is_number(number) and (
        (setting.at_least is not None and number < setting.at_least)
        or (setting.above is not None and number <= setting.above)
        or (setting.at_most is not None and number > setting.at_most)
        or (setting.below is not None and number >= setting.below))]
    if not outside:
        return []
    subject = "values" if isinstance(value, list) else "value"
    return [f"{path}: {value!r} is out of range; {subject} must be {_bound_text(setting)}"]


def validate_config(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Fill defaults and check keys and types; return the configuration and every problem found."""
    problems: list[str] = []
    known = {setting.name: setting for setting in SCHEMA}
    problems.extend(_unknown_key_problem("", key, known) for key in raw if key not in known)
    cfg = default_config()
    for name, setting in known.items():
        if name not in raw:
            continue
        value = raw[name]
        if setting.children:
            problems.extend(_nested_problems(setting, value, cfg[name]))
            continue
        found = _value_problems(setting, value, name)
        problems.extend(found)
        if not found:
            cfg[name] = copy.deepcopy(value)
    return cfg, problems


def _nested_problems(setting: Setting, value: Any, target: dict[str, Any]) -> list[str]:
    if not isinstance(value, dict):
        return [f"{setting.name}: expected a mapping with keys "
                f"{', '.join(child.name for child in setting.children)}, got {value!r}"]
    children = {child.name: child for child in setting.children}
    problems = [_unknown_key_problem(f"{setting.name}.", key, children) for key in value if key not in children]
    for key, child in children.items():
        if key in value:
            found = _value_problems(child, value[key], f"{setting.name}.{key}")
            problems.extend(found)
            if not found:
                target[key] = copy.deepcopy(value[key])
    return problems


def tracking_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Neptune settings needed when log_to_neptune is on."""
    if cfg.get("log_to_neptune") is not True:
        return []
    problems = []
    for key in ("neptune_username", "neptune_project_name"):
        value = cfg.get(key)
        if not isinstance(value, str) or not value.strip() or value.startswith("<"):
            problems.append(f"{key}: set it to your Neptune {key.split('_')[1]} (log_to_neptune is true)")
    if cfg.get("neptune_mode") == "async" and not neptune_api_token(cfg):
        problems.append("neptune_api_token: no token; export NEPTUNE_API_TOKEN=... (preferred) or set the key, "
                        "or use neptune_mode: offline")
    return problems


def neptune_api_token(cfg: Mapping[str, Any]) -> str | None:
    """The Neptune token: NEPTUNE_API_TOKEN environment variable first, then the config (placeholders ignored)."""
    token = os.environ.get("NEPTUNE_API_TOKEN") or cfg.get("neptune_api_token")
    if not isinstance(token, str) or not token.strip() or token.startswith("<"):
        return None
    return token


def parse_override(text: str) -> tuple[list[str], Any]:
    """'key.path=value' -> (['key', 'path'], YAML-typed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", [f"{text!r}: expected key=value, e.g. optimizer_params.lr=0.003"])
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError("--set", [f"{key}: value {value!r} is not valid YAML ({error})"]) from None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set each 'key.path=value' in a copy of the raw configuration.

    A parent missing from the file starts from its default mapping; a null or non-mapping parent becomes {}.
    """
    result = copy.deepcopy(raw)
    defaults = default_config()
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for depth, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                fallback = defaults.get(part) if depth == 0 and part not in node else None
                node[part] = copy.deepcopy(fallback) if isinstance(fallback, dict) else {}
            node = node[part]
        node[path[-1]] = value
    return result


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a configuration file as a mapping, with an explanation when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.name == "config.yml":
            hint = f"; create it from the template: cp {TEMPLATE_NAME} {path} (then edit it)"
        raise ConfigError(str(path), [f"configuration file not found{hint}"])
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(str(path), [f"not valid YAML: {error}"]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [f"expected a mapping of keys at the top level, got {type(raw).__name__}"])
    return raw


def load_config(path: str | os.PathLike, overrides: Iterable[str] = (),
                checks: Iterable[Callable[[Mapping[str, Any]], list[str]]] = ()) -> dict[str, Any]:
    """Read, override, fill defaults and validate a configuration; raise ConfigError listing every problem."""
    raw = apply_overrides(read_yaml(path), overrides)
    cfg, problems = validate_config(raw)
    problems.extend(tracking_problems(cfg))
    for check in checks:
        try:
            problems.extend(check(cfg))
        except Exception as error:  # a check tripping over a value already reported above
            if not problems:
                raise
            problems.append(f"{getattr(check, '__module__', check)} checks could not run: {error}")
    if problems:
        raise ConfigError(str(path), problems)
    return cfg


def configured_output_path(path: str | os.PathLike | None = None) -> str:
    """output_path of the configuration file given, else of config.yml when there is one, else the default."""
    if path is None:
        if not Path("config.yml").is_file():
            return default_config()["output_path"]
        path = "config.yml"
    return load_config(path)["output_path"]


def config_for_records(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to write to disk or trackers: the API token removed."""
    safe = copy.deepcopy(dict(cfg))
    safe["neptune_api_token"] = None
    return safe


def save_config(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved configuration (no API token) as YAML in schema order."""
    text = yaml.safe_dump(config_for_records(cfg), sort_keys=False, default_flow_style=None, width=120)
    Path(path).write_text(text, encoding="utf-8")


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}.{key}"))
        return flat
    if isinstance(value, (bool, int, float, str)):
        return {prefix: value}
    return {prefix: "None" if value is None else str(value)}


def tracked_params(cfg: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The schema's tracked keys as flat 'key.sub' -> scalar (lists and null as text), for Neptune/TensorBoard."""
    flat: dict[str, Any] = {}
    for setting in SCHEMA:
        if setting.tracked:
            flat.update(_flat(cfg.get(setting.name), setting.name))
    return flat
