"""utils.colab: the steps of train_colab.ipynb (pins, restart check, safe unpacking, run discovery, streaming)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import types
import warnings
from pathlib import Path

import pytest

from utils import colab


def _prepared(root: Path) -> Path:
    """A folder with the four prepared-data entries (contents do not matter here)."""
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        (root / split / "000001.jpg").write_bytes(b"jpeg")
        (root / f"{split}_labels.csv").write_text("image_fname,class\n000001.jpg,1\n")
    return root


def _archive(source: Path, archive: Path, prefix: str = "") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for name in colab.PREPARED_DATA_FILES:
            tar.add(source / name, arcname=prefix + name)
    return archive


def _add_member(archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        info.size = len(data) if info.isfile() else 0
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return archive


def _run(output: Path, name: str, state: str, checkpoint: bool = True) -> Path:
    run_dir = output / name
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"state": state}))
    if checkpoint:
        (run_dir / "last.ckpt").write_bytes(b"ckpt")
    return run_dir


def test_read_pins(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\n-r other.txt\ntorch==2.14.1\npytorch_lightning==2.6.6  # pinned\n"
                            "numpy>=2\nPyYAML==6.0.3\n")
    assert colab.read_pins(requirements) == {"torch": "2.14.1", "pytorch-lightning": "2.6.6", "pyyaml": "6.0.3"}


def test_pin_problems_name_the_package_and_both_versions() -> None:
    installed = colab.installed_version("pyyaml")
    assert colab.pin_problems({"pyyaml": installed}, ["pyyaml"]) == []
    assert colab.pin_problems({"pyyaml": installed + "+local"}, ["PyYAML"]) == []
    assert colab.pin_problems({"pyyaml": "0.0.1"}, ["pyyaml"]) == [
        f"pyyaml: {installed} installed, prod_requirements.txt pins 0.0.1"]
    assert colab.pin_problems({"not-a-real-dist-xyz": "1.0"}, ["not-a-real-dist-xyz"]) == [
        "not-a-real-dist-xyz: not installed (prod_requirements.txt pins 1.0)"]


def test_prod_requirements_match_the_test_environment() -> None:
    pins = colab.read_pins(Path(__file__).resolve().parents[1] / "prod_requirements.txt")
    assert {"torch", "torchvision", "pytorch-lightning"} <= set(pins)
    assert colab.pin_problems(pins) == []


def test_restart_needed_when_a_loaded_module_differs_from_the_installed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = colab.installed_version("pyyaml")
    stale = types.ModuleType("stale_yaml")
    stale.__version__ = "0.0.1"
    monkeypatch.setitem(sys.modules, "stale_yaml", stale)
    assert colab.restart_needed({"pyyaml": "yaml"}) == []
    assert colab.restart_needed({"pyyaml": "module_never_imported"}) == []
    assert colab.restart_needed({"pyyaml": "stale_yaml"}) == [
        f"pyyaml: 0.0.1 loaded in this runtime, {installed} installed"]


def test_requirement_names() -> None:
    assert colab.requirement_name("torch==2.14.1") == "torch"
    assert colab.requirement_name("PyYAML==6.0.3  # pinned") == "pyyaml"
    assert colab.requirement_name("pytorch_lightning>=2; python_version > '3.9'") == "pytorch-lightning"
    assert [colab.requirement_name(line) for line in ("# torch==1", "", "-r other.txt")] == [None, None, None]


def test_install_files_leave_out_the_installed_torch_and_pin_it(tmp_path: Path) -> None:
    requirements = tmp_path / "prod.txt"
    requirements.write_text("# pins\ntorch==0.0.1\ntorchvision==0.0.1\npyyaml==6.0.3\nnot-a-real-dist-xyz==1.0\n")
    wanted, constraints = colab.install_files(requirements, tmp_path, ("torch", "torchvision", "not-a-real-dist-xyz"))
    assert wanted.read_text().splitlines() == ["# pins", "pyyaml==6.0.3", "not-a-real-dist-xyz==1.0"]
    assert constraints.read_text().splitlines() == [f"torch=={colab.installed_version('torch')}",
                                                   f"torchvision=={colab.installed_version('torchvision')}"]
    requirements.write_text("-r other.txt\n")
    with pytest.raises(ValueError, match="nested requirement files"):
        colab.install_files(requirements, tmp_path)


def test_install_requirements_keeps_the_runtime_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real pip run, offline: torch pinned at another version is left as installed."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    torch_version = colab.installed_version("torch")
    requirements = tmp_path / "prod.txt"
    requirements.write_text(f"torch==0.0.1\npyyaml=={colab.installed_version('pyyaml')}\n")
    colab.install_requirements(requirements)
    assert colab.installed_version("torch") == torch_version


def test_pin_report_names_the_kept_builds_and_checks_the_other_pins() -> None:
    report = colab.pin_report(Path(__file__).resolve().parents[1] / "prod_requirements.txt")
    torch_version = colab.installed_version("torch")
    assert report[0] == f"torch {torch_version}: the runtime's own build, kept (prod_requirements.txt pins 2.14.1)"
    assert report[1].startswith("torchvision ") and len(report) == 2


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> str:
    """torch.cuda.is_available() as with a driver older than torch's CUDA; returns torch's warning text."""
    import torch

    text = "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040)."

    def is_available() -> bool:
        warnings.warn(text, UserWarning)
        return False

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    return text


@pytest.mark.filterwarnings("ignore:CUDA initialization:UserWarning")
def test_gpu_check_warns_with_accelerator_auto_and_stops_when_a_gpu_is_asked_for(tmp_path: Path, no_cuda: str) -> None:
    config = tmp_path / "config.yml"
    config.write_text("accelerator: auto\n")
    report = colab.gpu_check(config)
    assert report.startswith("warning: torch can use no CUDA GPU here, so train.py will train on the CPU")
    assert f"Reason: {no_cuda}" in report and "Runtime > Change runtime type > GPU" in report
    with pytest.raises(RuntimeError, match=r"accelerator: gpu asks for a CUDA GPU(.|\n)*found version 11040"):
        colab.gpu_check(config, ["--set", "accelerator=gpu"])


@pytest.mark.parametrize("prefix", ["", "stanford/"])
def test_copy_and_unpack_finds_the_data_at_the_top_or_in_one_folder(tmp_path: Path, prefix: str) -> None:
    (tmp_path / "drive").mkdir()
    archive = _archive(_prepared(tmp_path / "prepared"), tmp_path / "drive" / "stanford.tar.gz", prefix)
    target = tmp_path / "local" / "data"

    root = colab.copy_and_unpack(archive, target)

    assert root == (target / "stanford" if prefix else target)
    assert (root / "train" / "000001.jpg").read_bytes() == b"jpeg"
    assert (root / "test_labels.csv").is_file()
    assert not (target / "stanford.tar.gz").exists()
    assert archive.is_file()


def test_copy_and_unpack_reuses_its_folder_and_redoes_it_for_a_new_archive(tmp_path: Path) -> None:
    prepared = _prepared(tmp_path / "prepared")
    archive = _archive(prepared, tmp_path / "stanford.tar.gz")
    target = tmp_path / "data"
    colab.copy_and_unpack(archive, target)
    (target / "train" / "added.txt").write_text("kept while the archive is unchanged")

    colab.copy_and_unpack(archive, target)
    assert (target / "train" / "added.txt").is_file()

    (prepared / "train" / "000002.jpg").write_bytes(b"new")
    _archive(prepared, archive)
    os.utime(archive, (archive.stat().st_atime, archive.stat().st_mtime + 10))
    colab.copy_and_unpack(archive, target)
    assert not (target / "train" / "added.txt").exists()
    assert (target / "train" / "000002.jpg").read_bytes() == b"new"


def test_copy_and_unpack_refuses_a_folder_it_did_not_fill(tmp_path: Path) -> None:
    archive = _archive(_prepared(tmp_path / "prepared"), tmp_path / "stanford.tar.gz")
    target = tmp_path / "data"
    target.mkdir()
    (target / "mine.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="not empty"):
        colab.copy_and_unpack(archive, target)
    assert (target / "mine.txt").read_text() == "user file"


def test_copy_and_unpack_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--archive"):
        colab.copy_and_unpack(tmp_path / "missing.tar.gz", tmp_path / "data")
    incomplete = tmp_path / "incomplete"
    (incomplete / "train").mkdir(parents=True)
    with tarfile.open(tmp_path / "incomplete.tar.gz", "w:gz") as tar:
        tar.add(incomplete / "train", arcname="train")
    with pytest.raises(FileNotFoundError, match="no prepared data"):
        colab.copy_and_unpack(tmp_path / "incomplete.tar.gz", tmp_path / "data")


@pytest.mark.parametrize("name, kind", [("../escape.txt", tarfile.REGTYPE), ("/abs.txt", tarfile.REGTYPE),
                                        ("link", tarfile.SYMTYPE)])
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path: Path, name: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
    archive = _add_member(tmp_path / "bad.tar.gz", info, b"x" if kind == tarfile.REGTYPE else b"")
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(ValueError, match="refus|outside|not a regular"):
        colab.extract_tar_safely(archive, destination)
    assert list(destination.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_output_path_from_config_or_set_option(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("output_path: runs\narchitecture: ghost\n")
    assert colab.output_path_of(config) == Path("runs")
    assert colab.output_path_of(config, ["--set", "num_epochs=2", "--set", "output_path=/x/out"]) == Path("/x/out")
    assert colab.output_path_of(config, ["--set=output_path=elsewhere"]) == Path("elsewhere")
    config.write_text("architecture: ghost\n")
    assert colab.output_path_of(config) == Path("output")


def test_run_discovery_and_resume_choice(tmp_path: Path) -> None:
    output = tmp_path / "output"
    assert colab.resolve_resume(True, output) is None
    _run(output, "ghost_20240101-100000", "interrupted")
    newest = _run(output, "sq_11_20240301-100000", "interrupted")
    _run(output, "ghost_20240201-100000_seed3", "finished")
    _run(output, "ghost_20240401-100000", "interrupted", checkpoint=False)

    assert [p.name for p in colab.run_dirs(output)] == [
        "ghost_20240101-100000", "ghost_20240201-100000_seed3", "sq_11_20240301-100000", "ghost_20240401-100000"]
    assert colab.resolve_resume(False, output) is None
    assert colab.resolve_resume(True, output) == newest
    assert colab.resolve_resume("latest", output) == newest
    given = output / "ghost_20240101-100000" / "last.ckpt"
    assert colab.resolve_resume(str(given), output) == given
    with pytest.raises(FileNotFoundError, match="RESUME_RUN"):
        colab.resolve_resume(str(tmp_path / "nope"), output)


def test_runs_left_running_are_not_resumed_without_being_named(tmp_path: Path) -> None:
    output = tmp_path / "output"
    _run(output, "ghost_20240101-100000", "finished")
    running = _run(output, "ghost_20240201-100000", "running")
    with pytest.raises(LookupError, match=str(running)):
        colab.resolve_resume(True, output)
    assert colab.resolve_resume(str(running), output) == running


def test_run_streaming_returns_the_run_folders_the_command_announced(capsys: pytest.CaptureFixture[str]) -> None:
    script = ("import sys\nfrom utils.runs.folders import announce_run_folder\nsys.stdout.write('epoch 1 50%\\r')\n"
              "announce_run_folder('output/ghost_1_seed1')\nprint('x' * 70000)\nannounce_run_folder('out put/ghost_2')\n")
    folders = colab.run_streaming([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    assert folders == [Path("output/ghost_1_seed1"), Path("out put/ghost_2")]
    assert "run folder: out put/ghost_2" in capsys.readouterr().out


def test_run_streaming_forwards_output_and_reports_failure(capsys: pytest.CaptureFixture[str]) -> None:
    colab.run_streaming([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); "
                                               "sys.stdout.write('50%\\r100%\\n')"])
    assert capsys.readouterr().out == "out\nerr\n50%\r100%\n"
    with pytest.raises(subprocess.CalledProcessError):
        colab.run_streaming([sys.executable, "-c", "raise SystemExit(3)"])


def test_interrupting_run_streaming_interrupts_the_command_once(capsys: pytest.CaptureFixture[str]) -> None:
    child = ("import time\nprint('ready', flush=True)\ntry:\n    time.sleep(60)\n"
             "except KeyboardInterrupt:\n    print('child saw SIGINT', flush=True)\n")
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    # as in a Jupyter kernel: SIGINT raises KeyboardInterrupt even where the suite was started with it ignored
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            colab.run_streaming([sys.executable, "-c", child])
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, handler)
    assert capsys.readouterr().out.splitlines() == ["ready", "child saw SIGINT"]
