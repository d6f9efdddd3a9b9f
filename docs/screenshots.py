"""Draw the dashboard's screenshots in docs/ from runs made as a user makes them: train.py runs (one alone, one
--seeds group), a search study with sweep.py, the thesis's C-50 imported with compare_runs.py, all on generated
data; then `mlflow ui` over their store, looked at in headless Chromium with a new profile.

    python -m docs.screenshots [--out docs] [--epochs 8] [--work DIR [--again]]

Writes mlflow_runs_table.png (the URL train.py prints: the thesis's columns from the left, best valid_acc first, C-50
at the top beside the runs), mlflow_runs_results.png (the same table scrolled to the results), mlflow_groups.png
(newest first: the study's row expanded to its runs) and mlflow_compare.png (the charts: C-50's valid_acc beside
the runs'), each as a new browser shows the page, MLflow's Assistant panel open as it opens itself. Needs Debian's
chromium and chromium-driver, and selenium.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from datasets.preparation import prepare_stanford_dataset
from datasets.synthetic import generate_synthetic_stanford
from tests.mlflow_browser import (browser_missing, expand_group, open_runs_table, scroll_to_right_end,
                                  start_browser)
from utils.config.loading import yaml_inline
from utils.mlflow.dashboard import GROUPS_VIEW, TABLE_VIEW, dashboard_line
from utils.mlflow.server import free_port, start_server
from utils.mlflow.store import mlflow_client

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1600, 1000  # the window of a new user's browser (issue 32)
CHART_SEARCH = "input[placeholder='Search metric charts']"


def run(*args: str) -> str:
    """Run a command of the project as a user does, in the repository; its output (an error if it fails)."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout + result.stderr


def demo_settings(work: Path, epochs: int) -> dict[str, Any]:
    """make demo's settings, on the generated data in work."""
    return {"stanford_data_path": str(work / "stanford"), "image_size": [64, 64], "num_epochs": epochs,
            "batch_size": 32, "num_workers": 0, "early_stopping_patience": None, "lr_scheduler": None,
            "lr_scheduler_params": None, "optimizer_params.weight_decay": 0.05, "optimizer_params.lr": 0.003,
            "tags": ["screenshots"], "output_path": str(work / "output"), "logging_dir": str(work / "logs")}


def make_runs(work: Path, epochs: int) -> tuple[str, str]:
    """Train the runs and import C-50; (the URL train.py printed, the store's URI)."""
    generate_synthetic_stanford(work / "raw", num_classes=6, images_per_class=40)
    prepare_stanford_dataset(work / "raw", work / "stanford", progress=False)
    settings = demo_settings(work, epochs)
    train = ["train.py", "-c", "config_template.yml",
             *[item for key, value in settings.items() for item in ("--set", f"{key}={yaml_inline(value)}")]]
    run(*train, "--set", "convert_to_grayscale=true", "--seeds", "2")
    printed = run(*train)
    study = work / "lr_search.yml"
    space = {"optimizer_params.lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}
    study.write_text(yaml.safe_dump({"name": "lr_search", "base": {"config": str(ROOT / "config_template.yml"),
                                                                   "overrides": settings},
                                     "search": {"trials": 2, "sampler": {"type": "random", "seed": 1},
                                                "space": space}}), encoding="utf-8")
    run("sweep.py", str(study))
    run("sweep.py", "--report", str(study))
    run("compare_runs.py", "--to-mlflow", str(work / "output"), "--reference", "C-50")  # into the runs' store
    return re.findall(r"dashboard: (http://\S+)", printed)[-1], f"sqlite:///{work / 'output' / 'mlflow.db'}"


def charts_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs as charts, best valid_acc first (the order flattens the groups)."""
    return (f"{base_url}/#/experiments/{quote(str(experiment_id))}/runs?compareRunsMode=CHART"
            "&workflowType=machine_learning&orderByKey=metrics.%60valid_acc_max%60&orderByAsc=false")


def shoot(printed_url: str, uri: str, out: Path) -> list[Path]:
    """Serve the store with `mlflow ui` on the port the URL names and save the four screenshots, the page as a new
    browser shows it (MLflow's Assistant panel as it opens by itself: docs/tracking.md)."""
    from selenium.webdriver.common.by import By

    port = free_port()
    table_url = re.sub(r"http://127\.0\.0\.1:\d+", f"http://127.0.0.1:{port}", printed_url)
    client = mlflow_client(uri)
    experiment_id = client.get_experiment_by_name("cars").experiment_id
    shots = [out / f"mlflow_{name}.png" for name in ("runs_table", "runs_results", "groups", "compare")]
    with tempfile.TemporaryFile("w+") as log:
        server = start_server(uri, port, output=log)
    browser = start_browser(WIDTH, HEIGHT)
    try:
        driver = browser.driver
        open_runs_table(driver, table_url, "valid_acc_max", close_assistant=False)
        driver.save_screenshot(str(shots[0]))
        scroll_to_right_end(driver)  # the results, beside the pinned names
        driver.save_screenshot(str(shots[1]))
        open_runs_table(driver, table_url.replace(TABLE_VIEW.key, GROUPS_VIEW.key), "Created", close_assistant=False)
        expand_group(driver, "lr_search")
        driver.save_screenshot(str(shots[2]))
        open_runs_table(driver, charts_url(server.url, experiment_id), "valid_acc_max", close_assistant=False)
        driver.find_element(By.CSS_SELECTOR, CHART_SEARCH).send_keys("valid_acc")
        time.sleep(3)  # the charts redraw
        driver.save_screenshot(str(shots[3]))
    finally:
        browser.close()
        server.stop()
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of the screenshots (default docs)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each run (default 8)")
    parser.add_argument("--work", type=Path, help="folder for the data and runs (default: a temporary one)")
    parser.add_argument("--again", action="store_true",
                        help="with --work: look again at the runs an earlier call left there, train nothing")
    args = parser.parse_args(argv)
    if args.again and not (args.work and (args.work / "output" / "mlflow.db").is_file()):
        parser.error("--again needs the --work folder of an earlier call (with output/mlflow.db)")
    missing = browser_missing()
    if missing:
        print(f"screenshots: {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        if args.again:
            uri = f"sqlite:///{work / 'output' / 'mlflow.db'}"
            printed_url = re.findall(r"dashboard: (http://\S+)", dashboard_line(uri, "cars"))[0]
        else:
            printed_url, uri = make_runs(work, args.epochs)
        for path in shoot(printed_url, uri, args.out):
            print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
