"""Upper bounds of the config values that size memory or processes, in every config the project reads (a new
run's, a run folder's), refused before any allocation; and loading a config imports no torch."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import evaluate
import predict
import train
from training.memory import size_text, training_memory
from utils.config import Config, ConfigError, load_config
from utils.config.schema import (MAX_BATCH_SIZE, MAX_DEVICES, MAX_EPOCHS, MAX_IMAGE_SIDE, MAX_OUTPUT_CHANNELS,
                                 MAX_PREFETCH, MAX_WORKERS)
from utils.config.template import SECURITY_DOC_PATH, limits_table_markdown

ROOT = Path(__file__).resolve().parents[1]
# (key, a value past its bound, the range the message states)
PAST_THE_BOUNDS = [
    ("image_size", [20000, 20000], f"at least 1 and at most {MAX_IMAGE_SIDE}"),
    ("output_channels", 100_000_000, f"at least 1 and at most {MAX_OUTPUT_CHANNELS}"),
    ("batch_size", 1_000_000, f"at least 1 and at most {MAX_BATCH_SIZE}"),
    ("validation_batch_size", 100_000, f"at least 1 and at most {MAX_BATCH_SIZE}"),
    ("num_workers", 10_000, f"at least 0 and at most {MAX_WORKERS}"),
    ("prefetch_factor", 1_000, f"at least 1 and at most {MAX_PREFETCH}"),
    ("num_epochs", 10**9, f"at least 1 and at most {MAX_EPOCHS}"),
    ("warmup_epochs", 10**9, f"at least 0 and at most {MAX_EPOCHS}"),
    ("freeze_backbone_epochs", 10**9, f"at least 0 and at most {MAX_EPOCHS}"),
    ("early_stopping_patience", 10**9, f"at least 0 and at most {MAX_EPOCHS}"),
    ("devices", 100_000, f"at least -1 and at most {MAX_DEVICES}"),
]


def write_config(folder: Path, values: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def label_files(folder: Path) -> Path:
    """A folder with the prepared data's two label files: train.py checks the data folder before torch loads, and
    the checks that need torch (augmentations, the memory estimate) after it."""
    prepared = folder / "prepared"
    prepared.mkdir(parents=True, exist_ok=True)
    for name in ("train_labels.csv", "test_labels.csv"):
        (prepared / name).write_text("", encoding="utf-8")
    return prepared


def crafted_run(folder: Path, values: dict) -> Path:
    """A run folder as someone else could send it: its config.yml and a checkpoint that loads."""
    write_config(folder, values)
    torch.save({"hyper_parameters": {"num_classes": 3}, "state_dict": {}, "epoch": 0, "global_step": 0},
               folder / "best.ckpt")
    return folder


@pytest.mark.parametrize("key, value, valid", PAST_THE_BOUNDS, ids=[key for key, _, _ in PAST_THE_BOUNDS])
def test_train_check_names_the_file_key_value_and_range(tmp_path, capsys, key, value, valid):
    path = write_config(tmp_path, {key: value})
    assert train.main(["--check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: ") and f"  - {key}: {value!r} is out of range; " in err
    assert valid in err and "Traceback" not in err


@pytest.mark.parametrize("script", [predict, evaluate], ids=["predict", "evaluate"])
def test_a_run_folders_config_is_bounded_too(tmp_path, capsys, script):
    run_dir = crafted_run(tmp_path / "run", {"image_size": [20000, 20000], "output_channels": 100_000_000})
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"")
    argv = [str(run_dir), str(photo)] if script is predict else [str(run_dir)]
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{run_dir / 'config.yml'}: 2 configuration problems" in err and "Traceback" not in err
    assert f"image_size: [20000, 20000] is out of range; values must be at least 1 and at most {MAX_IMAGE_SIDE}" in err
    assert f"output_channels: 100000000 is out of range; value must be at least 1 and at most " \
           f"{MAX_OUTPUT_CHANNELS}" in err


def test_the_bounds_are_refused_before_allocating_under_an_address_space_limit(tmp_path):
    """image_size [20000, 20000] once peaked at 4.1 GiB in train.py --check (the augmentations tried on an image of
    that size), a Pad of 20000 pixels made that trial a 4.8 GB image; output_channels 10^8 made predict.py build a
    384 GB layer. Under a 6 GiB address-space limit each is refused with a message, at the resident size of the
    imports alone. The peak is the process's own (VmHWM, reset by exec), not ru_maxrss, which Linux carries over
    from the forking test process across exec."""
    big_image = write_config(tmp_path / "image", {"image_size": [20000, 20000]})
    big_padding = write_config(tmp_path / "padding", {"image_augmentations": {"Pad": {"padding": 20000}},
                                                      "stanford_data_path": str(label_files(tmp_path))})
    run_dir = crafted_run(tmp_path / "run", {"output_channels": 100_000_000})
    (tmp_path / "photo.jpg").write_bytes(b"")
    limited = ("import atexit, resource, runpy, sys\n"
               "resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))\n"
               "atexit.register(lambda: print('maxrss_kib', [line.split()[1] for line in open('/proc/self/status') "
               "if line.startswith('VmHWM')][0], file=sys.stderr))\n"
               "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")  # -c: cwd on the path
    for argv, fragment in ((["train.py", "--check", "-c", str(big_image)], "image_size: [20000, 20000] is out of"),
                           (["predict.py", str(run_dir), str(tmp_path / "photo.jpg")],
                            "output_channels: 100000000 is out of range"),
                           (["train.py", "--check", "-c", str(big_padding)],
                            "image_augmentations.Pad: padding 20000 is past 908 (4 x image_size's larger side)")):
        done = subprocess.run([sys.executable, "-c", limited, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr, done.stderr
        maxrss_gib = int(done.stderr.rsplit("maxrss_kib", 1)[1].split()[0]) / 2**20
        assert maxrss_gib < 2, f"{argv[0]} held {maxrss_gib:.1f} GiB"


def test_docs_security_lists_every_bound_with_its_reason():
    table = limits_table_markdown()
    assert table in SECURITY_DOC_PATH.read_text(encoding="utf-8"), \
        "docs/security.md's table of limits differs from Config: run python -m utils.config.template"
    for key, _, valid in PAST_THE_BOUNDS:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{key}` |"))
        assert valid in row and len(row.split(" | ")[2]) > 20, row


def test_the_bounds_hold_for_command_line_values_too(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, {}), [("batch_size", MAX_BATCH_SIZE + 1)],
                    origins={"batch_size": f"--set batch_size={MAX_BATCH_SIZE + 1}"})
    assert caught.value.problems[0].startswith(f"--set batch_size={MAX_BATCH_SIZE + 1}: {MAX_BATCH_SIZE + 1} is out "
                                               f"of range; value must be at least 1 and at most {MAX_BATCH_SIZE}")
    at_the_bounds = {"image_size": [MAX_IMAGE_SIDE, MAX_IMAGE_SIDE], "batch_size": MAX_BATCH_SIZE,
                     "output_channels": MAX_OUTPUT_CHANNELS, "num_workers": MAX_WORKERS, "devices": -1}
    config = load_config(write_config(tmp_path, at_the_bounds))
    assert (config.image_size, config.batch_size, config.devices) == ([MAX_IMAGE_SIDE] * 2, MAX_BATCH_SIZE, -1)


def test_a_batch_past_the_machines_memory_is_refused_with_the_estimate(tmp_path, capsys):
    """Within the bounds, 4096 images of 2048x2048 would still need terabytes: the estimate (the network run on the
    meta device, nothing allocated) says so before any work."""
    path = write_config(tmp_path, {"batch_size": 4096, "image_size": [2048, 2048], "accelerator": "cpu",
                                   "stanford_data_path": str(label_files(tmp_path))})
    assert train.main(["--check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "  - batch_size: 4096 at image_size [2048, 2048]: training would hold about " in err
    assert "TiB per training process (activations kept for the backward pass " in err
    assert "more than this machine's memory (" in err and "lower batch_size or image_size" in err


def test_the_estimate_grows_with_the_batch_and_check_reports_it_with_the_cache(make_prepared, tmp_path, capsys):
    small, double = (training_memory(Config(batch_size=size, image_size=[64, 64])) for size in (8, 16))
    assert small.weights == double.weights and 1.9 < double.activations / small.activations <= 2
    assert double.input_batch == 16 * 3 * 64 * 64 * 4
    data = make_prepared("memory_report", num_classes=3, images_per_class=4)
    path = write_config(tmp_path, {"image_size": [32, 32], "cache_images": True, "log_to_mlflow": False,
                                   "log_to_tensorboard": False, "output_path": str(tmp_path / "out"),
                                   "logging_dir": str(tmp_path / "logs"), "accelerator": "cpu"})
    assert train.main(["--check", "-c", str(path), "-d", str(data)]) == 0
    out = capsys.readouterr().out
    assert "memory while training: about " in out and "per training process" in out
    images = sum(len((data / name).read_text().splitlines()) - 1 for name in ("train_labels.csv", "test_labels.csv"))
    assert f"image cache: {size_text(images * 3 * 32 * 32)} ({images} images of 32x32, uint8)" in out
