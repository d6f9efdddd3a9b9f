"""Reading files that may come from someone else at a bounded cost: YAML (configurations, study files, run folders'
config.yml) and JSON records, each read one way, everywhere.

A file larger than its kind's limit is refused before it is read. A YAML document is composed first (aliases are
references there, so this costs about the file's size) and checked before any Python object is built: a string
longer than MAX_YAML_STRING, nesting deeper than MAX_YAML_DEPTH, or more than MAX_YAML_NODES values once every
alias is expanded (a 2 kB "alias bomb" expands to billions; whoever walks the result, a table or a copy, would run
out of memory) are refused. The limits are far above what this project writes (docs/security.md gives each reason).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

MAX_YAML_BYTES = 1 << 20  # experiments/thesis.yml, the largest file this project ships, has 55 kB
MAX_JSON_BYTES = 4 << 20  # a run's summary.json has about 10 kB (196 class names)
MAX_CSV_BYTES = 16 << 20  # a run's metrics.csv: about 100 bytes an epoch
MAX_YAML_STRING = 10_000  # characters of one value: a description, an lr_lambda text
MAX_YAML_DEPTH = 32  # a SequentialLR's schedulers in a study's overrides nest 7 deep
MAX_YAML_NODES = 200_000  # values once aliases are expanded: the thesis's study has about 5,000


class FileLimitError(ValueError):
    """A file beyond a limit of its kind; the message names the file, the limit and why it exists."""


def read_bounded_text(path: str | os.PathLike, max_bytes: int, kind: str) -> str:
    """A text file's content (UTF-8), refused (FileLimitError) when larger than max_bytes. OSError and
    UnicodeDecodeError pass through."""
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileLimitError(f"{path}: larger than {max_bytes:,} bytes, the limit of a {kind} file "
                             "(docs/security.md)")
    return data.decode("utf-8")


def _expanded_sizes(root: yaml.Node, name: str) -> None:
    """Refuse a composed YAML document whose strings, depth or alias-expanded size pass the limits.

    Each node is visited once; the expanded size of a node shared through aliases is counted at each use."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:
        node, children_done = pending.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if isinstance(node, yaml.ScalarNode) and len(node.value) > MAX_YAML_STRING:
            line = node.start_mark.line + 1
            raise FileLimitError(f"{name}: line {line}: a value of {len(node.value):,} characters; at most "
                                 f"{MAX_YAML_STRING:,} (docs/security.md)")
        if not children_done and any(id(child) not in sizes for child in children):
            pending += [(node, True)] + [(child, False) for child in children if id(child) not in sizes]
            continue
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        depths[id(node)] = 1 + max((depths[id(child)] for child in children), default=0)
        if sizes[id(node)] > MAX_YAML_NODES:
            raise FileLimitError(f"{name}: more than {MAX_YAML_NODES:,} values once its aliases (*name) are "
                                 "expanded: refused, as reading it would exhaust memory (docs/security.md)")
        if depths[id(node)] > MAX_YAML_DEPTH:
            raise FileLimitError(f"{name}: nested more than {MAX_YAML_DEPTH} levels deep (docs/security.md)")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def load_yaml_text(text: str, name: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """The one YAML document in text, read with loader (yaml.SafeLoader or a subclass) within the limits above.
    yaml.YAMLError passes through; a document past a limit raises FileLimitError naming ``name``."""
    reader = loader(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None
        _expanded_sizes(node, name)
        return reader.construct_document(node)
    except RecursionError:
        raise FileLimitError(f"{name}: nested too deep to read (docs/security.md)") from None
    finally:
        reader.dispose()


def read_yaml_file(path: str | os.PathLike, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """A YAML file's document within the limits above (FileLimitError); OSError, UnicodeDecodeError and
    yaml.YAMLError pass through."""
    return load_yaml_text(read_bounded_text(path, MAX_YAML_BYTES, "YAML"), str(path), loader)


def read_json_file(path: str | os.PathLike) -> Any:
    """A JSON file's value within MAX_JSON_BYTES (FileLimitError, also for nesting Python cannot parse);
    OSError, UnicodeDecodeError and json.JSONDecodeError pass through."""
    text = read_bounded_text(path, MAX_JSON_BYTES, "JSON")
    try:
        return json.loads(text)
    except RecursionError:
        raise FileLimitError(f"{Path(path)}: nested too deep to read (docs/security.md)") from None
