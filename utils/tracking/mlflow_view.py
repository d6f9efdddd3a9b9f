"""Saved views of MLflow's runs table (MLflow 3.17's UI): which columns it shows, in which order and widths, and how
it sorts, kept in an experiment tag that the UI opens from a URL, in any browser.

The UI keeps a view as the experiment tag ``mlflow.sharedViewState.<key>``: a JSON envelope ``{name, createdAt,
updatedAt, state}`` whose state is ``"deflate;" + base64(zlib(JSON))`` (pako's deflate is a zlib stream). The view
opens with ``#/experiments/<id>/runs?viewStateShareKey=<key>&workflowType=machine_learning``; without
``workflowType`` a new browser lands in the UI's GenAI pages. Columns are named ``<kind>.`<name>` `` (kind: params,
metrics, tags), except the UI's own Run Name and Duration columns, which are always shown.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
COMPRESSED = "deflate;"
MAX_TAG_LENGTH = 20000  # the server refuses longer experiment tag values
RUN_NAME = "tags.mlflow.runName"  # as search_runs names it; the UI's Run Name column
DURATION = "attributes.duration"  # the run's end time minus its start time; the UI's Duration column
START_TIME = "attributes.start_time"  # the UI's Created column (always shown), the only sort that nests runs
UI_COLUMNS = {RUN_NAME: "attributes.`Run Name`", DURATION: "duration"}
CREATED_COLUMN = "runDateAndNestInfo"
SORT_KEYS = {START_TIME: "attributes.start_time", RUN_NAME: "tags.`mlflow.runName`"}
KINDS = ("params", "metrics", "tags")
MIN_WIDTH, MAX_WIDTH, CHARACTER_WIDTH = 90, 260, 8  # pixels: a column wide enough for its header
RUN_NAME_WIDTH = 320  # pixels: names such as "ghost 2026-12-04 22:10:05 seed 43"


def column_id(source: str) -> str:
    """The UI's id of a column from where search_runs finds it: 'params.lr' -> "params.`lr`"."""
    if source in UI_COLUMNS:
        return UI_COLUMNS[source]
    kind, _, name = source.partition(".")
    if kind not in KINDS or not name:
        raise ValueError(f"{source!r}: not a column of MLflow's runs table; expected {', '.join(KINDS)}.<name>, "
                         f"{RUN_NAME} or {DURATION}")
    return f"{kind}.`{name}`"


def sort_key(source: str) -> str:
    """The UI's sort key of a column: its id, or the attribute's key (Created: attributes.start_time)."""
    return SORT_KEYS.get(source) or column_id(source)


def column_width(source: str) -> int:
    """Pixels for a column that shows its whole header (the UI's default of 100 cuts long names)."""
    if source == RUN_NAME:
        return RUN_NAME_WIDTH
    name = source.partition(".")[2]
    return max(MIN_WIDTH, min(MAX_WIDTH, CHARACTER_WIDTH * len(name) + 32))


def view_state(columns: Sequence[str], order_by: str, ascending: bool = False) -> dict[str, Any]:
    """The state of a view showing columns (search_runs names) in that order, sorted by order_by."""
    ids = [column_id(source) for source in columns]
    shown = [i for i in ids if i not in UI_COLUMNS.values()]
    order = [UI_COLUMNS[RUN_NAME], CREATED_COLUMN, *[i for i in ids if i != UI_COLUMNS[RUN_NAME]]]
    return {"searchFilter": "", "orderByKey": sort_key(order_by), "orderByAsc": ascending, "startTime": "ALL",
            "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": shown, "columnOrder": order,
            "columnWidths": {column_id(source): column_width(source) for source in columns if source != DURATION}}


def encode_view(name: str, state: Mapping[str, Any], created_ms: int, updated_ms: int) -> str:
    """The tag value of a view, as the UI's "Save as new view" writes it."""
    packed = zlib.compress(json.dumps(state, separators=(",", ":")).encode("utf-8"), 9)
    envelope = {"name": name, "createdAt": created_ms, "updatedAt": updated_ms,
                "state": COMPRESSED + base64.b64encode(packed).decode("ascii")}
    value = json.dumps(envelope, separators=(",", ":"))
    if len(value) > MAX_TAG_LENGTH:
        raise ValueError(f"view {name!r} takes {len(value)} characters; MLflow keeps at most {MAX_TAG_LENGTH}")
    return value


def decode_view(value: str) -> tuple[str | None, dict[str, Any], int | None]:
    """(name, state, createdAt) of a view's tag value, in any of the forms the UI reads."""
    data = json.loads(_unpacked(value))
    if isinstance(data, dict) and isinstance(data.get("state"), str):
        return data.get("name"), json.loads(_unpacked(data["state"])), data.get("createdAt")
    return None, data, None


def _unpacked(text: str) -> str:
    if not text.startswith(COMPRESSED):
        return text
    return zlib.decompress(base64.b64decode(text[len(COMPRESSED):])).decode("utf-8")


def write_view(client: Any, experiment_id: str, tags: Mapping[str, str], key: str, name: str,
               state: Mapping[str, Any]) -> bool:
    """Keep the view under key as given, `tags` being the experiment's: written when missing or different (True),
    else left alone (False)."""
    tag = VIEW_TAG_PREFIX + key
    stored = tags.get(tag)
    created = None
    if stored is not None:
        try:
            stored_name, stored_state, created = decode_view(stored)
        except (ValueError, zlib.error, TypeError):  # not a view the UI could read: written again
            stored_name, stored_state = None, None
        if stored_name == name and stored_state == dict(state):
            return False
    now = int(time.time() * 1000)
    client.set_experiment_tag(experiment_id, tag, encode_view(name, state, created or now, now))
    return True


def view_url(base_url: str, experiment_id: str, key: str) -> str:
    """The URL of a view of an experiment's runs table; it opens the view in a new browser profile too."""
    return (f"{base_url.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs"
            f"?viewStateShareKey={quote(key)}&workflowType=machine_learning")
