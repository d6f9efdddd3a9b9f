"""Run folders as other tools find them: the line train.py prints for each run folder it trains in."""

from __future__ import annotations

from pathlib import Path

RUN_FOLDER_LINE = "run folder: "


def announce_run_folder(run_dir: str | Path) -> None:
    """Print the line by which a caller (the Colab notebook, a sweep) learns which folder this run writes."""
    print(f"{RUN_FOLDER_LINE}{run_dir}", flush=True)


def announced_run_folders(lines: list[str]) -> list[Path]:
    """The run folders announced among complete output lines, in order (after a progress bar's carriage return too)."""
    shown = [line.rpartition("\r")[2] for line in lines]
    return [Path(line[len(RUN_FOLDER_LINE):].strip()) for line in shown if line.startswith(RUN_FOLDER_LINE)]
