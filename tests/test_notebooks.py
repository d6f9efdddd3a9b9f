"""The two notebooks, executed top to bottom with injected parameters on generated data (off Colab)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from datasets.normalization import compute_normalization_params
from utils.runs.records import is_run_dir

REPO = Path(__file__).resolve().parents[1]
COLAB_NOTEBOOK = REPO / "train_colab.ipynb"
NORMALIZATION_NOTEBOOK = REPO / "notebooks" / "normalization_coeffs.ipynb"
NOTEBOOKS = [COLAB_NOTEBOOK, NORMALIZATION_NOTEBOOK]
EXECUTABLE_PROBE = "import sys\nprint(sys.executable)"


@pytest.fixture(scope="module")
def kernel_of_this_interpreter(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A "python3" kernelspec running this interpreter, found first (JUPYTER_PATH has priority)."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (cars tests)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(jupyter_path))
        yield


@pytest.fixture(scope="module")
def prepared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated raw files prepared with `prepare_stanford_dataset.py --archive`: input/stanford(.tar.gz)."""
    root = tmp_path_factory.mktemp("notebook_data")
    raw = root / "raw"
    subprocess.run([sys.executable, "-m", "datasets.synthetic", str(raw), "--layout", "updated",
                    "--classes", "4", "--per-class", "8"], cwd=REPO, check=True, capture_output=True)
    out = root / "input" / "stanford"
    subprocess.run([sys.executable, "prepare_stanford_dataset.py", "--raw", str(raw), "--out", str(out),
                    "--archive"], cwd=REPO, check=True, capture_output=True)
    assert (root / "input" / "stanford.tar.gz").is_file()
    return out


def execute(path: Path, parameters: dict[str, Any], cwd: Path) -> nbformat.NotebookNode:
    """Run a notebook papermill-style: the parameter values go into a cell right after the tagged one."""
    notebook = nbformat.read(path, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    injected = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(injected))
    notebook.cells.append(nbformat.v4.new_code_cell(EXECUTABLE_PROBE))
    NotebookClient(notebook, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    assert text_output(notebook.cells[-1]).strip() == sys.executable
    return notebook


def text_output(cell: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []) if output["output_type"] == "stream")


def all_text(notebook: nbformat.NotebookNode) -> str:
    return "".join(text_output(cell) for cell in notebook.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_notebooks_carry_no_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: a cell has outputs"


def test_colab_parameters_cell_holds_the_thesis_parameters() -> None:
    notebook = nbformat.read(COLAB_NOTEBOOK, as_version=4)
    source = next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    names = {line.split("=")[0].strip() for line in source.splitlines() if "=" in line and not line.startswith("#")}
    assert {"colab_google_drive_mount_point", "colab_remote_project_wdir", "local_project_wdir",
            "DATA_ON_COLAB", "colab_data_dir", "RESUME_RUN", "TRAIN_ARGS"} <= names


@pytest.mark.parametrize("grayscale, crop", [(False, True), (True, False)])
def test_normalization_notebook_prints_the_function_values(kernel_of_this_interpreter: Any, prepared_data: Path,
                                                            grayscale: bool, crop: bool) -> None:
    parameters = {"data_path": str(prepared_data), "image_size": [32, 40], "convert_to_grayscale": grayscale,
                  "crop_to_bboxes": crop, "erase_background": True}
    notebook = execute(NORMALIZATION_NOTEBOOK, parameters, cwd=NORMALIZATION_NOTEBOOK.parent)

    printed = yaml.safe_load(text_output(notebook.cells[-2]))
    key = "normalization_params_grayscale" if grayscale else "normalization_params_rgb"
    assert list(printed) == [key]
    mean, std = compute_normalization_params(prepared_data, (32, 40), grayscale, crop, True)
    assert printed[key] == {"mean": [round(v, 4) for v in mean], "std": [round(v, 4) for v in std]}
    assert len(mean) == (1 if grayscale else 3)


def colab_parameters(root: Path, data: Path, **changes: Any) -> dict[str, Any]:
    """Test values: Drive paths in tmp folders, tiny one-epoch training, records under root/output."""
    parameters = {
        "colab_google_drive_mount_point": str(root / "drive"),
        "colab_remote_project_wdir": str(root / "drive" / "cars"),
        "local_project_wdir": str(REPO),
        "DATA_ON_COLAB": True,
        "colab_data_dir": str(root / "colab_disk" / "stanford"),
        "data_archive": str(data.parent / "stanford.tar.gz"),
        "CONFIG_FILE": "config_template.yml",
        "RESUME_RUN": False,
        "TRAIN_ARGS": ["--set", f"output_path={root / 'output'}", "--set", f"logging_dir={root / 'logs'}",
                       "--set", "image_size=[32,32]", "--set", "batch_size=8", "--set", "num_workers=0",
                       "--set", "num_epochs=1", "--set", "architecture=shuff_v2_x05",
                       "--set", "log_to_neptune=false"],
    }
    parameters.update(changes)
    return parameters


def metrics_rows(run_dir: Path) -> list[str]:
    return (run_dir / "metrics.csv").read_text().strip().splitlines()[1:]


def test_colab_notebook_trains_off_colab_from_the_archive_and_resumes(
        kernel_of_this_interpreter: Any, prepared_data: Path, tmp_path: Path) -> None:
    notebook = execute(COLAB_NOTEBOOK, colab_parameters(tmp_path, prepared_data), cwd=REPO)

    text = all_text(notebook)
    unpacked = tmp_path / "colab_disk" / "stanford"
    assert "local runtime" in text and f"training on {unpacked}" in text
    assert (unpacked / "train_labels.csv").read_text() == (prepared_data / "train_labels.csv").read_text()
    runs = [p for p in (tmp_path / "output").iterdir() if is_run_dir(p)]
    assert len(runs) == 1
    run_dir = runs[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["architecture"] == "shuff_v2_x05"
    assert len(metrics_rows(run_dir)) == 1
    assert (run_dir / "last.ckpt").is_file() and any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run_dir / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert any(o.get("data", {}).get("image/png") for c in notebook.cells for o in c.get("outputs", []))

    # as a runtime interrupted after its first epoch leaves it, then continued for a second epoch
    summary["state"] = "interrupted"
    (run_dir / "summary.json").write_text(json.dumps(summary))
    resume_args = colab_parameters(tmp_path, prepared_data)["TRAIN_ARGS"] + ["--set", "num_epochs=2"]
    notebook = execute(COLAB_NOTEBOOK, colab_parameters(tmp_path, prepared_data, RESUME_RUN=True,
                                                        TRAIN_ARGS=resume_args), cwd=REPO)

    assert f"resuming {run_dir}" in all_text(notebook)
    assert [p for p in (tmp_path / "output").iterdir() if is_run_dir(p)] == [run_dir]
    assert json.loads((run_dir / "summary.json").read_text())["state"] == "finished"
    assert [row.split(",")[0] for row in metrics_rows(run_dir)] == ["1", "2"]
