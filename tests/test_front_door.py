"""A new user's first hour on a fresh clone: make demo (at a tiny size), then every command it prints and every
command of the README's Quick start, each run exactly as written, in a copy of the repository's files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils.mlflow.store import mlflow_client

ROOT = Path(__file__).resolve().parents[1]
TINY_DEMO = ["DEMO_CLASSES=3", "DEMO_PER_CLASS=6", "DEMO_EPOCHS=1", "DEMO_IMAGE_SIZE=32"]


def fresh_clone(target: Path) -> Path:
    """The repository's files as a clone has them (tracked, and new ones not ignored), with .venv the running
    interpreter's environment (installing one is make's first step, not under test here)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return target


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A fresh clone after make demo (tiny); what make printed (its output, then its errors)."""
    clone = fresh_clone(tmp_path_factory.mktemp("clone"))
    stamp = clone.parent / "prod.installed"  # the requirements count as installed: make does not run pip
    stamp.touch()
    done = subprocess.run(["make", "demo", f"PROD_STAMP={stamp}", *TINY_DEMO], cwd=clone, capture_output=True,
                          text=True, timeout=900, env=user_environment())
    assert done.returncode == 0, done.stdout + done.stderr
    return clone, done.stdout + done.stderr


def user_environment() -> dict[str, str]:
    """A shell's environment, without this test run's virtual environment or Python path."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    prefix = str(Path(sys.prefix) / "bin")
    environment["PATH"] = os.pathsep.join(part for part in environment.get("PATH", "").split(os.pathsep)
                                          if part != prefix)
    return environment


def run_as_printed(command: str, clone: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, shell=True, cwd=clone, capture_output=True, text=True, timeout=600,
                          env=user_environment())
    assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    return done


def printed_steps(output: str) -> tuple[list[str], str]:
    """The commands of make demo's closing lines, and the run they name."""
    lines = output[output.index("Next steps"):].splitlines()
    run = re.search(r"the run: (\S+?)\)", lines[0]).group(1)
    return [line.strip() for line in lines[1:] if line.startswith("  .venv/bin/python ")], run


def test_make_demo_ends_with_next_steps_that_run_as_printed(demo):
    clone, output = demo
    steps, run = printed_steps(output)
    assert [step.split()[1] for step in steps] == ["compare_runs.py", "evaluate.py", "predict.py", "export_model.py"]
    assert (clone / run / "best.ckpt").is_file()
    for step in steps:
        run_as_printed(step, clone)
    assert (clone / run / "model.pt2").is_file() and (clone / run / "model.pt2.json").is_file()
    assert "demo/output/mlflow.db" in output  # the dashboard of the demo's runs
    client = mlflow_client(f"sqlite:///{clone / 'demo' / 'output' / 'mlflow.db'}")
    table = client.search_runs([client.get_experiment_by_name("cars").experiment_id])
    assert "C-50" in {run.info.run_name for run in table} and len(table) == 2  # the thesis's best run beside yours
    for noise in ("💡", "LeafSpec", "Warning", "preparing data took 0.", "GPU available", "Total params",
                  "alembic", "Creating initial MLflow database", "Experiment with name"):
        assert noise not in output, noise


def readme_quick_start() -> list[str]:
    """The README's Quick start commands after make demo (comments dropped)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quick start"):readme.index("\n## ", readme.index("## Quick start") + 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_the_readme_quick_start_commands_run_as_written_after_make_demo(demo):
    clone, output = demo
    commands = readme_quick_start()
    assert commands[:2] == ["make demo", "make test"]  # the two commands; the demo ran above, the suite is this
    _, run = printed_steps(output)
    photo = next(line for line in output.splitlines() if "predict.py" in line).split()[3]
    after = [command.replace("demo/output/ghost_<time>", run).replace("demo/stanford/test/<photo>.jpg", photo)
             for command in commands[2:] if command.startswith(".venv/bin/python ")]
    assert [command.split()[1] for command in after] == ["compare_runs.py", "evaluate.py", "predict.py",
                                                          "export_model.py"]
    printed, _ = printed_steps(output)
    shown = run_as_printed(after[0], clone)
    assert Path(run).name in shown.stdout  # compare_runs.py with no argument shows the demo's run
    for command in after[1:]:  # the same as make demo printed (run by the test above), or run here
        if command not in printed:
            run_as_printed(command, clone)
    dashboard = next(command for command in commands if command.startswith("make dashboard"))
    assert shlex.split(dashboard)[2] == "DASHBOARD_DB=demo/output/mlflow.db"
    assert (clone / "demo" / "output" / "mlflow.db").is_file()
