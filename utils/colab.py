"""Helpers of train_colab.ipynb: requirement pins, GPU check, data unpacking, train.py arguments, run discovery.

Everything here works off Colab too, so the notebook runs unchanged on a local machine and the tests
can reach every step.
"""

from __future__ import annotations

import codecs
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from utils.archives import unsafe_member_reason
from utils.config import Config
from utils.config.loading import apply_overrides, parse_overrides, read_yaml
from utils.config.validation import validate
from utils.runs.folders import announced_run_folders
from utils.runs.records import run_state

# Never replaced by the install: Colab's builds match its NVIDIA driver; the pinned ones may need a newer driver.
KEPT_PREINSTALLED = ("torch", "torchvision")

PREPARED_DATA_FILES = ("train", "test", "train_labels.csv", "test_labels.csv")
UNPACKED_MARKER = ".unpacked_from"
RUN_TIMESTAMP = re.compile(r"\d{8}-\d{6}")
# distribution name -> module name, for the packages a runtime restart matters for
RESTART_SENSITIVE = {
    "torch": "torch",
    "torchvision": "torchvision",
    "pytorch-lightning": "pytorch_lightning",
    "torchmetrics": "torchmetrics",
    "numpy": "numpy",
    "tensorboard": "tensorboard",
}


def read_pins(requirements_file: str | os.PathLike) -> dict[str, str]:
    """Return {normalised distribution name: version} of the `name==version` lines of a requirements file."""
    pins = {}
    for line in Path(requirements_file).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line or line.startswith("-"):
            continue
        name, version = line.split("==", 1)
        pins[_normalise_name(name)] = version.split(";", 1)[0].strip()
    return pins


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _public_version(version: str) -> str:
    """Drop a local label: `2.14.1+cu130` -> `2.14.1`."""
    return version.split("+", 1)[0]


def installed_version(distribution: str) -> str | None:
    """Version of an installed distribution as it is on disk now, or None when not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def pin_problems(pins: dict[str, str], distributions: Sequence[str] | None = None) -> list[str]:
    """Messages for pinned distributions (all of them, or those named) whose installed version is not the pinned one."""
    problems = []
    for name in pins if distributions is None else distributions:
        wanted = pins.get(_normalise_name(name))
        have = installed_version(name)
        if wanted is None:
            continue
        if have is None:
            problems.append(f"{name}: not installed (prod_requirements.txt pins {wanted})")
        elif _public_version(have) != _public_version(wanted):
            problems.append(f"{name}: {have} installed, prod_requirements.txt pins {wanted}")
    return problems


def restart_needed(modules: dict[str, str] | None = None) -> list[str]:
    """Messages for modules this process imported whose version differs from the one now on disk.

    After `pip install` replaced a package the kernel had already imported, the old version stays in
    use until the runtime is restarted; each message names one such package.
    """
    problems = []
    for distribution, module_name in (modules or RESTART_SENSITIVE).items():
        module = sys.modules.get(module_name)
        loaded = getattr(module, "__version__", None) if module is not None else None
        on_disk = installed_version(distribution)
        if loaded is None or on_disk is None:
            continue
        if _public_version(str(loaded)) != _public_version(on_disk):
            problems.append(f"{distribution}: {loaded} loaded in this runtime, {on_disk} installed")
    return problems


def requirement_name(line: str) -> str | None:
    """The normalised distribution name a requirements-file line installs, or None (comment, blank, option)."""
    line = line.split("#", 1)[0].strip()
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return _normalise_name(match.group(0)) if match and not line.startswith("-") else None


def kept_installed(keep: Sequence[str] = KEPT_PREINSTALLED) -> dict[str, str]:
    """{distribution: installed version} of the `keep` distributions that are installed (these stay as they are)."""
    versions = {name: installed_version(name) for name in keep}
    return {name: version for name, version in versions.items() if version is not None}


def install_files(requirements_file: str | os.PathLike, work_dir: str | os.PathLike,
                  keep: Sequence[str] = KEPT_PREINSTALLED) -> tuple[Path, Path]:
    """Write work_dir/requirements.txt (the file minus the installed `keep` distributions) and
    work_dir/constraints.txt (those pinned at their installed versions, so that no dependency replaces them)."""
    kept = kept_installed(keep)
    lines = Path(requirements_file).read_text().splitlines()
    nested = [line for line in lines if line.strip().startswith(("-r", "-c", "--requirement", "--constraint"))]
    if nested:
        raise ValueError(f"{requirements_file}: nested requirement files are not supported here ({nested[0]!r})")
    kept_names = {_normalise_name(name) for name in kept}
    wanted = [line for line in lines if requirement_name(line) not in kept_names]
    requirements, constraints = Path(work_dir) / "requirements.txt", Path(work_dir) / "constraints.txt"
    requirements.write_text("\n".join(wanted) + "\n")
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in kept.items()))
    return requirements, constraints


def install_requirements(requirements_file: str | os.PathLike, keep: Sequence[str] = KEPT_PREINSTALLED) -> None:
    """pip-install a requirements file into the kernel's interpreter, streaming pip's output; installed `keep`
    distributions (Colab's torch and torchvision) are left as they are."""
    with tempfile.TemporaryDirectory() as work_dir:
        requirements, constraints = install_files(requirements_file, work_dir, keep)
        run_streaming([sys.executable, "-m", "pip", "install", "-r", str(requirements), "-c", str(constraints)])
    importlib.invalidate_caches()


def pin_report(requirements_file: str | os.PathLike, keep: Sequence[str] = KEPT_PREINSTALLED) -> list[str]:
    """Lines for the notebook: the kept runtime builds, then a warning per other pin that the install does not match."""
    pins = read_pins(requirements_file)
    kept = kept_installed(keep)
    kept_names = {_normalise_name(name) for name in kept}
    lines = [f"{name} {version}: the runtime's own build, kept (prod_requirements.txt pins "
             f"{pins.get(_normalise_name(name), 'no version')})" for name, version in kept.items()]
    checked = [name for name in pins if name not in kept_names]
    return lines + [f"warning: {problem}" for problem in pin_problems(pins, checked)]


def gpu_check(config_file: str | os.PathLike, train_args: Sequence[str] = ()) -> str:
    """A line on the CUDA GPU torch sees; without one, a warning saying why and what to do, or RuntimeError
    with train.py's explanation when the configuration (with the --set options of train_args) asks for a GPU."""
    # imported here: this module is imported before the install cell, which torch must not precede
    from utils.devices import (COLAB_ADVICE, cuda_device_line, cuda_requests, cuda_status, cuda_unavailable_message,
                               torch_build)

    available, reason = cuda_status()
    if available:
        return cuda_device_line()
    config = intended_config(config_file, train_args)
    requests = cuda_requests(config)
    if requests:
        raise RuntimeError(cuda_unavailable_message(requests, reason))
    return (f"warning: torch can use no CUDA GPU here, so train.py will train on the CPU (accelerator: "
            f"{config.accelerator}), which is slow for full-size runs.\n  Reason: {reason}\n  Installed: "
            f"{torch_build()}.\n  {COLAB_ADVICE}")


def copy_and_unpack(archive: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """Copy a prepared-data `.tar.gz` to `data_dir`, unpack it there safely and return the data root.

    The data root is the folder holding `train/`, `test/` and the label CSVs (the archive's top level
    or its only top folder). A `data_dir` already unpacked from the same archive (same size and
    modification time) is reused, one it filled from another archive is emptied and refilled, and a
    non-empty `data_dir` that it did not fill is refused, so nothing a user put there is overwritten.
    """
    archive, data_dir = Path(archive), Path(data_dir)
    if not archive.is_file():
        raise FileNotFoundError(
            f"{archive}: no such archive; make it with "
            "`python prepare_stanford_dataset.py --archive` and put it on Google Drive"
        )
    stat = archive.stat()
    stamp = f"{archive.name} {stat.st_size} {int(stat.st_mtime)}"
    marker = data_dir / UNPACKED_MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return find_data_root(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()) and not marker.is_file():
        raise FileExistsError(
            f"{data_dir}: not empty and not unpacked by this notebook; choose an empty colab_data_dir"
        )
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    marker.write_text("unpacking")
    local_copy = data_dir / archive.name
    shutil.copyfile(archive, local_copy)
    extract_tar_safely(local_copy, data_dir)
    local_copy.unlink()
    root = find_data_root(data_dir)
    marker.write_text(stamp)
    return root


def extract_tar_safely(archive: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Extract a tar archive, refusing links, devices and members that would land outside `destination`."""
    destination = Path(destination)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(destination, members=members, filter="data")
        else:
            tar.extractall(destination, members=members)


def _check_member(member: tarfile.TarInfo, archive: str | os.PathLike) -> None:
    reason = unsafe_member_reason(member)
    if reason is not None:
        raise ValueError(f"{archive}: refusing member {member.name!r}: {reason}")


def find_data_root(folder: str | os.PathLike) -> Path:
    """The folder, or the first of its sub-folders, that holds the prepared data files."""
    folder = Path(folder)
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    for candidate in candidates:
        if all((candidate / name).exists() for name in PREPARED_DATA_FILES):
            return candidate
    raise FileNotFoundError(
        f"{folder}: no prepared data ({', '.join(PREPARED_DATA_FILES)}) at its top or in a sub-folder"
    )


def set_overrides(train_args: Sequence[str]) -> list[str]:
    """The `key=value` texts of the `--set` options among train.py arguments."""
    overrides = []
    for index, argument in enumerate(train_args):
        if argument == "--set" and index + 1 < len(train_args):
            overrides.append(train_args[index + 1])
        elif argument.startswith("--set="):
            overrides.append(argument.split("=", 1)[1])
    return overrides


def intended_config(config_file: str | os.PathLike, train_args: Sequence[str] = ()) -> Config:
    """The Config train.py will read from config_file and the --set options of train_args (defaults in place of
    values with problems: train.py reports those itself)."""
    config, _ = validate(apply_overrides(read_yaml(config_file), parse_overrides(set_overrides(train_args))))
    return config


def output_path_of(config_file: str | os.PathLike, train_args: Sequence[str] = ()) -> Path:
    """The `output_path` train.py will use: the config file's, or a `--set output_path=...` among the arguments."""
    return Path(intended_config(config_file, train_args).output_path)


def _run_sort_key(run_dir: Path) -> tuple[str, str]:
    stamp = RUN_TIMESTAMP.search(run_dir.name)
    return (stamp.group(0) if stamp else "", run_dir.name)


def run_dirs(output_path: str | os.PathLike) -> list[Path]:
    """Run folders (holding a summary.json) under `output_path`, oldest first by their name's timestamp."""
    output_path = Path(output_path)
    if not output_path.is_dir():
        return []
    return sorted((p for p in output_path.iterdir() if (p / "summary.json").is_file()), key=_run_sort_key)


def _resumable_runs(output_path: str | os.PathLike, state: str) -> list[Path]:
    return [p for p in run_dirs(output_path) if run_state(p) == state and (p / "last.ckpt").is_file()]


def latest_interrupted_run(output_path: str | os.PathLike) -> Path | None:
    """The newest run under `output_path` whose summary.json says "interrupted" and has a last.ckpt, or None."""
    found = _resumable_runs(output_path, "interrupted")
    return found[-1] if found else None


def resolve_resume(resume: bool | str | None, output_path: str | os.PathLike) -> Path | None:
    """What to pass to `train.py --resume`: None (a new run), the newest interrupted run, or a given path.

    `resume` False/None/"" starts a new run. True or "latest" picks the newest interrupted run under
    `output_path`, or None when there is none; but when some runs there with a last.ckpt still say
    "running" (a runtime that was shut down could not mark its run), it raises LookupError naming them,
    since only the user knows whether one of them died or is training elsewhere. Any other string is a
    run folder or checkpoint path, which must exist.
    """
    if resume in (None, False, ""):
        return None
    if resume is True or resume == "latest":
        found = latest_interrupted_run(output_path)
        if found is None:
            unmarked = _resumable_runs(output_path, "running")
            if unmarked:
                names = ", ".join(str(p) for p in unmarked)
                raise LookupError(
                    f"no run under {output_path} is marked interrupted, but these still say running: {names}. "
                    "A run whose runtime was shut down stays so: set RESUME_RUN to the folder of the run to "
                    "continue (one not training elsewhere), or to False for a new run"
                )
        return found
    path = Path(str(resume))
    if not path.exists():
        raise FileNotFoundError(f"RESUME_RUN={resume!r}: {path.resolve()} does not exist")
    return path


def run_streaming(command: Sequence[str], cwd: str | os.PathLike | None = None) -> list[Path]:
    """Run a command, passing its output on as it comes; return the run folders it announced (train.py prints
    one line per run folder); raise CalledProcessError when it fails.

    Output is forwarded in chunks as written (carriage returns kept, so progress bars redraw in place
    in a notebook). Interrupting the kernel sends SIGINT to the command and waits for it, so that
    train.py can mark its run interrupted.
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # its own session: an interrupt of the kernel's process group reaches it once, from here
    process = subprocess.Popen(list(command), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=environment, start_new_session=True)
    folders: list[Path] = []
    try:
        _forward(process, folders)
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        _forward(process, folders)
        process.wait()
        raise
    finally:
        if process.poll() is None:
            process.terminate()
        process.stdout.close()
    if process.wait() != 0:
        raise subprocess.CalledProcessError(process.returncode, list(command))
    return folders


def _forward(process: subprocess.Popen, folders: list[Path]) -> None:
    """Write the process's output through as it comes; append the run folders its lines announce to `folders`."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in iter(lambda: process.stdout.read1(65536), b""):
        text = decoder.decode(chunk)
        sys.stdout.write(text)
        sys.stdout.flush()
        *complete, pending = (pending + text).split("\n")
        folders.extend(announced_run_folders(complete))
    text = decoder.decode(b"", final=True)
    sys.stdout.write(text)
    folders.extend(announced_run_folders((pending + text).splitlines()))
