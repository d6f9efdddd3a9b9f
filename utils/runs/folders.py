"""Run folders: creating them, the line train.py prints for each, and finding a run or checkpoint a user names."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from utils.config import Config, load_config
from utils.runs.records import (CONFIG, RECORD_FILES, SUMMARY, RunRecordError, is_run_dir, refuse_links_leaving,
                                runs_under)

RUN_FOLDER_LINE = "run folder: "
BEST_CHECKPOINT, LAST_CHECKPOINT = "best.ckpt", "last.ckpt"
MLFLOW_DB = "mlflow.db"  # the MLflow store beside the run folders of an output folder (log_to_mlflow)
TIMESTAMP = "%Y%m%d-%H%M%S"


def announce_run_folder(run_dir: str | Path) -> None:
    """Print the line by which a caller (the Colab notebook, a sweep) learns which folder this run writes."""
    print(f"{RUN_FOLDER_LINE}{run_dir}", flush=True)


def announced_run_folders(lines: list[str]) -> list[Path]:
    """The run folders announced among complete output lines, in order (after a progress bar's carriage return too)."""
    shown = [line.rpartition("\r")[2] for line in lines]
    return [Path(line[len(RUN_FOLDER_LINE):].strip()) for line in shown if line.startswith(RUN_FOLDER_LINE)]


def resolve_run(path: str | os.PathLike) -> tuple[Path, Path]:
    """(run folder, checkpoint) from a run folder (its best.ckpt) or a checkpoint file inside a run folder."""
    path = Path(path)
    if path.is_dir():
        checkpoint = path / BEST_CHECKPOINT
        if not checkpoint.is_file() and not is_run_dir(path) and runs_under(path):
            raise RunRecordError(folder_of_runs_problem(path))
        if not checkpoint.is_file():
            found = ", ".join(sorted(p.name for p in path.glob("*.ckpt"))) or "none"
            raise RunRecordError(f"{path}: no {BEST_CHECKPOINT} in this run folder (checkpoints found: {found}); "
                                 "pass a checkpoint file instead")
        run_dir = path
    elif path.is_file():
        checkpoint, run_dir = path, path.parent
    else:
        raise RunRecordError(f"{path}: no such run folder or checkpoint file")
    if not (run_dir / CONFIG).is_file():
        raise RunRecordError(f"{run_dir / CONFIG}: missing; the checkpoint must sit in its run folder "
                             "next to the config.yml that train.py wrote")
    refuse_links_leaving(run_dir)
    return run_dir, checkpoint


def folder_of_runs_problem(folder: Path, shown: int = 10) -> str:
    """A folder of runs given where one run is wanted: the runs in it, newest first."""
    runs = sorted(runs_under(folder), key=lambda run: run.stat().st_mtime, reverse=True)
    listed = "\n".join(f"  {run}" for run in runs[:shown])
    more = f"\n  ... and {len(runs) - shown} more (python compare_runs.py {folder} lists them)" \
        if len(runs) > shown else ""
    return f"{folder} is a folder of {len(runs)} runs, not a run; give one of them (newest first):\n{listed}{more}"


def load_run_config(path: str | os.PathLike,
                    data_path: str | os.PathLike | None = None) -> tuple[Path, Path, Config]:
    """(run folder, checkpoint, the run's checked configuration) for a run folder or checkpoint; data_path (-d)
    replaces the run's prepared data."""
    run_dir, checkpoint = resolve_run(path)
    config = load_config(run_dir / CONFIG)
    if data_path is not None:
        labels = Path(data_path) / "test_labels.csv"
        if not Path(data_path).exists():
            raise RunRecordError(f"-d {data_path}: does not exist; give the folder that prepare_stanford_dataset.py "
                                 "wrote")
        if not labels.is_file():
            raise RunRecordError(f"-d {data_path}: not prepared data ({labels.name} not found); give the folder "
                                 "that prepare_stanford_dataset.py wrote")
        config = replace(config, stanford_data_path=str(data_path))
    return run_dir, checkpoint, config


def resume_target(path: str | os.PathLike) -> tuple[Path, Path]:
    """(run folder, checkpoint) from a run folder (its last.ckpt) or a checkpoint file."""
    path = Path(path)
    ckpt = path / LAST_CHECKPOINT if path.is_dir() else path
    if not ckpt.is_file():
        raise FileNotFoundError(f"--resume {path}: no checkpoint {ckpt} (expected a run folder with last.ckpt "
                                "or a .ckpt file)")
    if not zipfile.is_zipfile(ckpt):
        raise FileNotFoundError(f"--resume {path}: {ckpt} is not a checkpoint (train.py's .ckpt files are "
                                "PyTorch zip archives)")
    run_dir = ckpt.parent
    for record in (CONFIG, SUMMARY):
        if not (run_dir / record).is_file():
            raise FileNotFoundError(f"--resume {path}: {run_dir} is not a run folder of train.py (no {record})")
    refuse_links_leaving(run_dir)
    return run_dir, ckpt


def run_files(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> list[Path]:
    """A run's records and checkpoints: files no command may write over."""
    run_dir = Path(run_dir)
    files = [run_dir / name for name in RECORD_FILES] + sorted(run_dir.glob("*.ckpt"))
    return files + ([Path(checkpoint)] if checkpoint is not None else [])


def folder_label(architecture: str) -> str:
    """An architecture name as the start of a folder or file name (timm:ghostnet_100 -> timm-ghostnet_100)."""
    return architecture.replace(":", "-")


def plan_runs(output_path: str | os.PathLike, architecture: str, seeds: Sequence[int],
              now: datetime | None = None) -> list[dict[str, Any]]:
    """New run folders (<architecture>_<timestamp>[_seed<N>]), created now, one per seed (rank 0 of a run of
    several processes plans them: training.process_group.rank_zero_value)."""
    stamp = (now or datetime.now()).strftime(TIMESTAMP)
    plan: list[dict[str, Any]] = []
    for seed in seeds:
        base = f"{folder_label(architecture)}_{stamp}" + (f"_seed{seed}" if len(seeds) > 1 else "")
        plan.append({"run_dir": str(reserve_folder(Path(output_path) / base)), "seed": seed})
    return plan


def reserve_folder(path: Path) -> Path:
    """Create path, or path_2, path_3, ...: the first that did not exist (two runs never share a folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1
            candidate = path.with_name(f"{path.name}_{number}")


def release_unused(plan: Sequence[Mapping[str, Any]]) -> None:
    """Remove the planned run folders that stayed empty (a run stopped before it wrote anything)."""
    for entry in plan:
        folder = Path(entry["run_dir"])
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def unused_path(path: Path, taken: Iterable[Path] = ()) -> Path:
    """path, or path_2, path_3, ... whichever does not exist yet (and is not in taken)."""
    taken = set(taken)
    candidate, number = path, 1
    while candidate.exists() or candidate in taken:
        number += 1
        candidate = path.with_name(f"{path.name}_{number}")
    return candidate
