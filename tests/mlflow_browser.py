"""MLflow's runs table as a new user sees it: headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium, a development requirement) with a new profile, and what the table shows: its column headers, its rows,
a cell, a group's expander. The tests of the dashboard and docs/screenshots.py read the UI with it.

The table is an ag-grid: rows are split into a pinned part (Run Name, Created) and a scrolled part, columns out of
view are not rendered, and a row's id is its run's id.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage")
WAIT_S = 90
ROW = ".ag-row[row-id]"
HEADER = ".ag-header-row-column .ag-header-cell[col-id]"  # leaf headers, not the Metrics/Parameters groups
SCROLLER = ".ag-body-horizontal-scroll-viewport"
ASSISTANT_CLOSE = "button[data-component-id='mlflow.assistant.chat_panel.close']"  # opens by itself at first
RUN_NAME_COLUMN = "attributes.`Run Name`"
EXPANDER = "button[data-component-id$='runnamecellrenderer.tsx_46']"
SORT_BUTTON = "button[data-testid='sort-select-dropdown']"  # its text: "Sort: <column>"

# [section (0 pinned left, 1 centre, 2 pinned right), left offset, col-id, text] of each rendered header, in the
# order shown (aria-colindex goes stale after a view reorders the columns)
_HEADERS_JS = """return [...document.querySelectorAll(arguments[0])].map(c => [
  c.closest('.ag-pinned-left-header') ? 0 : c.closest('.ag-pinned-right-header') ? 2 : 1,
  parseFloat(c.style.left || '0'), c.getAttribute('col-id'), c.textContent.trim()]);"""
# [top of the row on screen, text] of each matching cell: rows in the order shown, pinned or not
_CELLS_JS = """return [...document.querySelectorAll(arguments[0])].map(e => [
  e.closest('.ag-row').getBoundingClientRect().top, e.textContent.trim()]);"""


def browser_missing() -> str | None:
    """Why no browser can be driven here (what to install), else None."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        return f"no {' or '.join(missing)}: apt-get install -y chromium chromium-driver"
    if importlib.util.find_spec("selenium") is None:
        return "no selenium: pip install -r dev_requirements.txt"
    return None


@dataclass
class Browser:
    """Headless Chromium with its own new profile (deleted on close)."""

    driver: Any
    profile: Path

    def close(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


def start_browser(width: int = 1920, height: int = 1000) -> Browser:
    """Headless Chromium with a new empty profile: no view or setting kept from an earlier visit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return Browser(webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER))), profile)


def open_runs_table(driver: Any, url: str, sorted_by: str, close_assistant: bool = True) -> None:
    """Load url in a fresh page and wait until the runs table shows rows, sorted as given (the sort button's
    text, e.g. valid_acc_max or Created); close the assistant panel (MLflow opens it by itself at a first visit to
    a local server) unless close_assistant is False."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")  # a full load: the UI reads a view only from a URL it has not rewritten
    driver.get(url)
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f".ag-center-cols-container {ROW}"))
    wait.until(lambda d: sorted_by in d.find_element(By.CSS_SELECTOR, SORT_BUTTON).text)
    if not close_assistant:
        return
    for button in driver.find_elements(By.CSS_SELECTOR, ASSISTANT_CLOSE):
        if button.is_displayed():
            button.click()
    time.sleep(1)  # the grid lays its columns out again once the panel is gone


def assistant_panel_open(driver: Any) -> bool:
    """Whether MLflow's Assistant panel is open (its close button shown)."""
    from selenium.webdriver.common.by import By

    return any(button.is_displayed() for button in driver.find_elements(By.CSS_SELECTOR, ASSISTANT_CLOSE))


def _sideways(driver: Any) -> Iterator[None]:
    """Scroll the table from its left edge to its right edge in half-screen steps, pausing at each step (ag-grid
    renders the columns that came into view on its next frame); back to the left edge at the end."""
    from selenium.webdriver.common.by import By

    scroller = driver.find_element(By.CSS_SELECTOR, SCROLLER)
    width, step = driver.execute_script("return [arguments[0].scrollWidth, arguments[0].clientWidth]", scroller)
    position = 0
    try:
        while True:
            yield
            if position >= width:
                return
            position += max(step // 2, 50)
            driver.execute_script("arguments[0].scrollLeft = arguments[1]", scroller, position)
            time.sleep(0.3)
    finally:
        driver.execute_script("arguments[0].scrollLeft = 0", scroller)
        time.sleep(0.3)


def scroll_to_right_end(driver: Any) -> None:
    """Scroll the table to its last columns (the pinned name columns stay)."""
    from selenium.webdriver.common.by import By

    scroller = driver.find_element(By.CSS_SELECTOR, SCROLLER)
    driver.execute_script("arguments[0].scrollLeft = arguments[0].scrollWidth", scroller)
    time.sleep(1)


def column_headers(driver: Any) -> list[tuple[str, str]]:
    """(col-id, header text) of every column shown, left to right, the checkbox left out (columns out of view
    included: the table is scrolled sideways to render them)."""
    found: dict[tuple[int, float], tuple[str, str]] = {}
    for _ in _sideways(driver):
        for section, left, col_id, text in driver.execute_script(_HEADERS_JS, HEADER):
            if col_id and not col_id.isdigit():
                found[(section, left)] = (col_id, text)
    return [found[key] for key in sorted(found)]


def column_cells(driver: Any, col_id: str, inner: str = "") -> list[str]:
    """The text of a column's cells (or of an element inside them), top row first (rendered rows only; the table
    is scrolled sideways until the column is rendered)."""
    for _ in _sideways(driver):
        cells = driver.execute_script(_CELLS_JS, f"{ROW} [col-id='{col_id}'] {inner}".strip())
        if cells:
            return [text for _, text in sorted(cells)]
    return []


def run_names(driver: Any) -> list[str]:
    """The run names of the rows shown, top first (the link's text: the cell also holds a colour code)."""
    return column_cells(driver, RUN_NAME_COLUMN, "a[href*='/runs/']")


def expand_group(driver: Any, run_name: str) -> None:
    """Click the expander of the row of a parent run, and wait for its runs to be listed under it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shown = len(run_names(driver))
    for row in driver.find_elements(By.CSS_SELECTOR, f".ag-pinned-left-cols-container {ROW}"):
        links = row.find_elements(By.CSS_SELECTOR, "a[href*='/runs/']")
        if links and links[0].text.strip() == run_name:
            row.find_element(By.CSS_SELECTOR, EXPANDER).click()
            WebDriverWait(driver, WAIT_S).until(lambda d: len(run_names(d)) > shown)
            return
    raise LookupError(f"no row of a run named {run_name!r} with an expander; rows: {run_names(driver)}")
