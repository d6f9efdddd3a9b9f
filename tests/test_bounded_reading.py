"""Hostile or mistaken texts cost little and end in messages: lr_lambda expressions, YAML files (configs, study files,
run folders' config.yml), JSON and CSV run records, and names printed in tables."""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

import compare_runs
from models.lr_lambda import MAX_DEPTH, MAX_LENGTH, LrLambda
from models.optimization import optimization_problems
from tests.test_checkpoint_safety import snapshot
from tests.test_untrusted_files import trained  # noqa: F401 (a fixture: a one-epoch train.py run)
from utils.config import Config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


def lr_lambda_problems(text: str, epochs: int = 10) -> list[str]:
    return optimization_problems(Config(lr_scheduler="LambdaLR", lr_scheduler_params={"lr_lambda": text},
                                        num_epochs=epochs))


LR_LAMBDA_CASES = {
    "min of one value": ("min(epoch)", "min(...) takes 2 to 100 arguments"),
    "5,000 unary minus signs": ("-" * 5000 + "1", f"5,001 characters; an lr_lambda has at most {MAX_LENGTH}"),
    "a 1.8 MB expression": ("1+" * 900_000 + "1", "1,800,001 characters"),
    "deep nesting": ("-" * 400 + "1", f"nested more than {MAX_DEPTH} deep"),
    "overflow": ("epoch ** 1e308", "cannot be evaluated at epoch 2: OverflowError"),
    "division by zero": ("1 / (epoch - 3)", "cannot be evaluated at epoch 3: ZeroDivisionError"),
    "a complex number": ("(-1) ** 0.5", "not a finite number"),
}


@pytest.mark.parametrize("case", LR_LAMBDA_CASES)
def test_every_lr_lambda_error_is_a_message(case):
    """Before: TypeError, RecursionError tracebacks, and 187 s of --check for the 1.8 MB expression."""
    text, message = LR_LAMBDA_CASES[case]
    (problem,) = lr_lambda_problems(text)
    assert problem.startswith("lr_scheduler_params.lr_lambda: ") and message in problem
    assert len(problem) < 300  # the expression is shortened in the message


def test_the_thesis_forms_still_evaluate():
    assert lr_lambda_problems("lambda epoch: 0.1 ** (epoch // 30)") == []
    assert LrLambda("max(0.1, 0.975 ** epoch) * (1 + 0 % 3) - -0.0")(1000) == 0.1
    with pytest.raises(ValueError, match="cannot be evaluated at epoch 3"):
        LrLambda("1 / (epoch - 3)")(3)  # while training too: a message, not a ZeroDivisionError


# ---- run records from someone else: compare_runs.py skips a wrong one with a warning naming it ----


def set_value(name, key, value):
    """An edit of a run folder's summary.json or config.yml: key set to value."""
    dump, load = (json.dumps, json.loads) if name.endswith(".json") else (yaml.safe_dump, yaml.safe_load)

    def edit(run_dir):
        record = load((run_dir / name).read_text())
        record[key] = value
        (run_dir / name).write_text(dump(record))
    return edit, name


def set_summary(key, value):
    return set_value("summary.json", key, value)


def set_config(key, value):
    return set_value("config.yml", key, value)


def write_file(name, text):
    return (lambda run_dir: (run_dir / name).write_text(text)), name


def alias_bomb(key: str = "tags") -> str:
    """A 2 kB YAML document whose aliases expand to 9 ** 9 (387 million) strings."""
    text, previous = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n', "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
        previous = name
    return text + f"{key}: *i\n"


METRICS_HEADER = "epoch,train_loss,train_acc,valid_loss,valid_acc,valid_acc_top5,lr\n"
CRAFTED_RECORDS = {
    "summary tags 5": (set_summary("tags", 5), "tags: 5 is not a list of texts"),
    "summary duration NaN": (set_summary("duration_s", float("nan")), "duration_s: nan is not a finite number"),
    "summary epochs text": (set_summary("epochs_run", "two"), "epochs_run: 'two' is not a whole number"),
    "summary state list": (set_summary("state", ["finished"]), "state: ['finished'] is not a text"),
    "summary device 5": (set_summary("device", 5), "device: 5 is not a mapping"),
    "summary parameters negative": (set_summary("parameters", -1), "parameters: -1 is not a whole number"),
    "summary best list": (set_summary("best_valid_acc", []), "best_valid_acc: [] is not a mapping"),
    "summary a list": (write_file("summary.json", "[1, 2]"), "expected a JSON object, got list"),
    "summary deep nesting": (write_file("summary.json", "[" * 100_000 + "]" * 100_000), "nested too deep"),
    "summary 5 MB": (write_file("summary.json", json.dumps({"description": "x" * (5 << 20)})),
                     "larger than 4,194,304 bytes"),
    "config image_augmentations 5": (set_config("image_augmentations", 5), "image_augmentations: 5 is not a map"),
    "config tags 5": (set_config("tags", 5), "tags: 5 is not a list of texts"),
    "config image_size text": (set_config("image_size", "big"), "image_size: 'big' is not a list"),
    "config grayscale text": (set_config("convert_to_grayscale", "yes"), "convert_to_grayscale: 'yes' is not true"),
    "config dropout inf": (set_config("dropout", float("inf")), "dropout: inf is not a number"),
    "config optimizer_params 5": (set_config("optimizer_params", 5), "optimizer_params: 5 is not a mapping"),
    "config alias bomb": (write_file("config.yml", alias_bomb()), "once its aliases (*name) are expanded"),
    "config long string": (write_file("config.yml", "description: " + "x" * 20_000 + "\n"),
                           "a value of 20,000 characters; at most 10,000"),
    "config deep nesting": (write_file("config.yml", "a: " + "[" * 50 + "]" * 50 + "\n"), "nested more than 32"),
    "metrics epoch inf": (write_file("metrics.csv", METRICS_HEADER + "inf,1,1,1,1,1,1\n"), "epoch inf is not"),
    "metrics epoch negative": (write_file("metrics.csv", METRICS_HEADER + "-1,1,1,1,1,1,1\n"), "epoch -1.0 is not"),
    "metrics epoch fraction": (write_file("metrics.csv", METRICS_HEADER + "1.5,1,1,1,1,1,1\n"), "epoch 1.5 is not"),
    "metrics 20 MB": (write_file("metrics.csv", METRICS_HEADER + "1,1,1,1,1,1,1\n" * 1_300_000),
                      "larger than 16,777,216 bytes"),
}


@pytest.mark.parametrize("seeds", [[], ["--seeds"]], ids=["plain", "seeds"])
@pytest.mark.parametrize("case", CRAFTED_RECORDS)
def test_a_wrong_record_is_skipped_with_a_warning_naming_it(trained, tmp_path, capsys, case, seeds):
    _, run_dir = trained
    folder = tmp_path / "runs"
    good, bad = folder / "good_run", folder / "bad_run"
    shutil.copytree(run_dir, good)
    shutil.copytree(run_dir, bad)
    edit, name = CRAFTED_RECORDS[case][0]
    edit(bad)
    before = snapshot(tmp_path)
    assert compare_runs.main([str(folder), *seeds]) == 0
    out, error = capsys.readouterr()
    (warning,) = [line for line in error.splitlines() if line.startswith("warning: ")]
    assert str(bad / name) in warning and CRAFTED_RECORDS[case][1] in warning and warning.endswith("(skipped)")
    assert "Traceback" not in error and len(out) < 10_000 and ("good_run" in out or seeds)
    assert snapshot(tmp_path) == before


def test_a_newline_in_a_run_folders_name_cannot_forge_a_table_line(trained, tmp_path, capsys):
    _, run_dir = trained
    folder = tmp_path / "runs"
    shutil.copytree(run_dir, folder / "ghost_1\nghost_forged  finished  1.0s  \x1b[31m")
    assert compare_runs.main([str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "ghost_1\\nghost_forged  finished  1.0s  \\x1b[31m" in lines[2]


# The command's own peak: VmHWM at exit. Not ru_maxrss, which Linux carries over across fork and exec from the
# test process (often larger than the command), so that a peak read from os.wait4 can hide the command's own.
PEAK = ("import atexit, os, runpy, sys\n"
        "def peak():\n"
        "    with open(os.environ['CARS_PEAK_FILE'], 'w') as out:\n"
        "        out.write(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))\n"
        "atexit.register(peak)\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")


def peak_memory(command: list[str], limit_bytes: int = 8 << 30) -> tuple[int, str, int]:
    """(exit status, stderr, peak resident memory in bytes) of a Python script run with an address-space limit."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    python, script, *args = command
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak_kib"
        process = subprocess.run([python, "-c", PEAK, script, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, preexec_fn=limit, env={**os.environ,
                                                                                "CARS_PEAK_FILE": str(peak_file)})
        return process.returncode, process.stderr.decode(errors="replace"), int(peak_file.read_text()) << 10


@pytest.mark.parametrize("crafted", ["alias bomb", "200 MB string"])
def test_hostile_yaml_in_a_run_folder_costs_little_memory(trained, tmp_path, crafted):
    """Before: the 2 kB alias bomb ended compare_runs (plain and --seeds) and predict in MemoryError after 12-76 s
    (11 GB without a limit); the 200 MB string took compare_runs 131 s and 1 GB, and printed 419 MB. Now each
    refuses the file at no more memory than the same command takes on the run as train.py wrote it."""
    data, run_dir = trained
    image = next((data / "test").iterdir())
    commands = [("compare_runs.py", [tmp_path / "runs"], 0), ("compare_runs.py", [tmp_path / "runs", "--seeds"], 0),
                ("predict.py", [tmp_path / "runs" / run_dir.name, image], 2)]
    run = shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name)
    normal = [peak_memory([sys.executable, script, *map(str, args)])[2] for script, args, _ in commands]
    config = run / "config.yml"
    if crafted == "alias bomb":
        config.write_text(alias_bomb("image_augmentations"))
    else:
        with config.open("a") as handle:
            handle.write("description: '" + "x" * (200 << 20) + "'\n")
    for (script, args, status), usual in zip(commands, normal):
        code, error, peak = peak_memory([sys.executable, script, *map(str, args)])
        assert code == status and str(config) in error and "Traceback" not in error, error[-3000:]
        assert len(error) < 2000 and peak < usual + (64 << 20), f"{script}: {peak >> 20} MiB, usually {usual >> 20}"


def test_a_neptune_line_nested_too_deep_is_skipped_naming_it(tmp_path):
    from utils.runs.neptune_offline import readable_neptune_runs

    run = tmp_path / "neptune_run"
    run.mkdir()
    (run / "data-1.log").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    readable, (problem,) = readable_neptune_runs([run])
    assert readable == [] and problem.startswith(f"{run / 'data-1.log'}, line 1: not a Neptune offline operation")
    assert problem.endswith("(skipped)")
