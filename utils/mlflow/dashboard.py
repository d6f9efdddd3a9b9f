"""The dashboard: MLflow's runs table showing the run table's columns (utils.runs.table), as a saved view kept in
every experiment the project logs to or imports into, and the one URL that opens it.

python -m utils.mlflow.dashboard [--db output/mlflow.db] [--port 5000] [--url-only]   (make dashboard)
python -m utils.mlflow.dashboard --uri http://HOST:PORT                               (a shared server)

With --db it writes the views into every experiment of the SQLite store, starts a quiet `mlflow ui` on
127.0.0.1 and prints the URL (--url-only: prints the URL and the command that serves it, starts nothing).
With --uri it writes the views on a running server and prints the URL.

MLflow 3.17's UI keeps a view as the experiment tag ``mlflow.sharedViewState.<key>``: a JSON envelope
``{name, createdAt, updatedAt, state}`` whose state is ``"deflate;" + base64(zlib(JSON))`` (pako's deflate is a
zlib stream). The view opens with ``#/experiments/<id>/runs?viewStateShareKey=<key>&workflowType=machine_learning``;
without ``workflowType`` a new browser lands in the UI's GenAI pages. Columns are named ``<kind>.`<name>` `` (kind:
params, metrics, tags), except the UI's own Run Name and Duration columns, which are always shown.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from utils.mlflow.server import port_problem, start_server
from utils.mlflow.store import mlflow_client, mlflow_tracking_uri, mlflow_uri_problems, open_experiment, sqlite_path
from utils.runs.table import DASHBOARD_SOURCES, DURATION, RUN_NAME

DEFAULT_PORT = 5000  # the Makefile's DASHBOARD_PORT
DEFAULT_DB = Path("output") / "mlflow.db"  # the Makefile's DASHBOARD_DB, train.py's store by default
HOST = "127.0.0.1"
HEADLINE = "The runs table, with the thesis's columns, best valid_acc first"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
COMPRESSED = "deflate;"
MAX_TAG_LENGTH = 20000  # the server refuses longer experiment tag values
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


@dataclass(frozen=True)
class View:
    """A saved view of the runs table: its key (in the URL), its name in the UI's view list, its sort."""

    key: str
    name: str
    order_by: str
    ascending: bool = False

    def state(self) -> dict[str, Any]:
        return view_state(DASHBOARD_SOURCES, self.order_by, self.ascending)


TABLE_VIEW = View("runs-table", "Runs table: best valid_acc first", "metrics.valid_acc_max")
# MLflow nests a group's runs under its parent run only when the table is sorted by start time.
GROUPS_VIEW = View("runs-by-group", "Runs table: newest first, studies and seed groups folded", START_TIME)
VIEWS = (TABLE_VIEW, GROUPS_VIEW)


def write_views(client: Any, experiment_id: str) -> list[str]:
    """Keep the dashboard's views in the experiment (written when missing or changed); the keys written."""
    tags = client.get_experiment(experiment_id).tags
    return [view.key for view in VIEWS if write_view(client, experiment_id, tags, view.key, view.name, view.state())]


def open_dashboard_experiment(uri: str, experiment: str) -> tuple[Any, str]:
    """(client, experiment id) of an experiment, created on first use, with the dashboard's views in it."""
    client, experiment_id = open_experiment(uri, experiment)
    write_views(client, experiment_id)
    return client, experiment_id


def prepare_mlflow_experiment(config: Any) -> None:
    """With log_to_mlflow: create a Config's tracking store and experiment, with the dashboard's views, now (before
    workers race to create them)."""
    if config.log_to_mlflow:
        open_dashboard_experiment(mlflow_tracking_uri(config), config.mlflow_experiment)


def serve_hint(db: Path, port: int = DEFAULT_PORT) -> str:
    """The command that serves a SQLite store's dashboard."""
    shown = Path(os.path.relpath(db)) if db.resolve().is_relative_to(Path.cwd()) else db
    return ("make dashboard" + ("" if shown == DEFAULT_DB else f" DASHBOARD_DB={shown}")
            + ("" if port == DEFAULT_PORT else f" DASHBOARD_PORT={port}"))


def dashboard_line(uri: str, experiment: str) -> str:
    """The line naming the URL of an experiment's runs table (its views written by the run or import that logged
    to it): on its server, or on `make dashboard`'s for a SQLite store."""
    _, experiment_id = open_experiment(uri, experiment)
    db = sqlite_path(uri)
    if db is None:
        return f"dashboard: {view_url(uri, experiment_id, TABLE_VIEW.key)}"
    url = view_url(f"http://{HOST}:{DEFAULT_PORT}", experiment_id, TABLE_VIEW.key)
    return f"dashboard: {url} (serve it with: {serve_hint(db)})"


def refresh_store(uri: str) -> list[tuple[str, str]]:
    """Write the views into every experiment of a store; (name, id) of the experiments holding runs."""
    client = mlflow_client(uri)
    shown = []
    for experiment in client.search_experiments():
        if client.search_runs([experiment.experiment_id], max_results=1):
            write_views(client, experiment.experiment_id)
            shown.append((experiment.name, experiment.experiment_id))
    return shown


def url_lines(base_url: str, experiments: Sequence[tuple[str, str]], first: str) -> list[str]:
    """One line per experiment (first the one named first), each with the URL of its runs table."""
    ordered = sorted(experiments, key=lambda item: item[0] != first)
    lines = [f"  {name}: {view_url(base_url, experiment_id, TABLE_VIEW.key)}" for name, experiment_id in ordered]
    return lines or ["  (no runs in this store yet)"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--db", type=Path, default=DEFAULT_DB, help=f"SQLite store (default: {DEFAULT_DB})")
    where.add_argument("--uri", help="a running MLflow server, http(s)://HOST:PORT: write the views, print the URL")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT})")
    parser.add_argument("--experiment", default="cars", help="the experiment listed first (default: cars)")
    parser.add_argument("--url-only", action="store_true", help="print the URL and how to serve it; start nothing")
    return parser.parse_args(argv)


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C (also where a background launch made the shell ignore it), SIGTERM and a closed terminal stop the
    dashboard and its server: the server runs in a process group of its own, which these signals do not reach."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _interrupted)


def serve(db: Path, port: int, lines: list[str]) -> int:
    """Run `mlflow ui` on the store until Ctrl-C, after printing the URLs once it answers."""
    problem = port_problem(HOST, port)
    if problem:
        print(f"dashboard: {problem}; choose another port: make dashboard DASHBOARD_PORT={port + 1}", file=sys.stderr)
        return 2
    stop_on_signals()
    server = start_server(f"sqlite:///{db.resolve()}", port, HOST)
    try:
        print(f"{HEADLINE} (Ctrl-C stops the server):", *lines, sep="\n", flush=True)
        code = server.process.wait()
    except KeyboardInterrupt:
        print("dashboard stopped")
        return 0
    finally:
        server.stop()
    print(f"dashboard: mlflow ui ended by itself (exit code {code})", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.uri:
        problems = mlflow_uri_problems(args.uri, "--uri")
        if problems:
            print("dashboard: " + "; ".join(problems), file=sys.stderr)
            return 2
        experiments = refresh_store(args.uri)
        print(f"{HEADLINE}:", *url_lines(args.uri, experiments, args.experiment), sep="\n")
        return 0
    if not args.db.is_file():
        print(f"dashboard: {args.db}: no MLflow store there yet; train with log_to_mlflow: true (the default), or "
              "name another store (make demo's: make dashboard DASHBOARD_DB=demo/output/mlflow.db)", file=sys.stderr)
        return 2
    experiments = refresh_store(f"sqlite:///{args.db.resolve()}")
    lines = url_lines(f"http://{HOST}:{args.port}", experiments, args.experiment)
    if args.url_only:
        print(f"{HEADLINE}: {serve_hint(args.db, args.port)}, then open", *lines, sep="\n")
        return 0
    return serve(args.db, args.port, lines)


if __name__ == "__main__":
    sys.exit(main())
