"""After training: compare_runs.py, evaluate.py, predict.py and export_model.py on runs of short CPU trainings
on generated data (two seeds of one RGB setting, a grayscale run, an interrupted run, a snapshot of a run in
progress, and damaged records)."""

import contextlib
import csv
import dataclasses
import io
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml
from PIL import Image, ImageOps
from pytorch_lightning.callbacks import Callback

import compare_runs
import evaluate
import export_model
import predict
import train
from datasets.preparation import prepare_stanford_dataset
from datasets.settings import data_settings, preprocessing_settings
from tests.flat_settings import preprocessing
from datasets.stanford_data import StanfordCarsDataset
from datasets.stanford_data_module import StanfordCarsDataModule
from datasets.synthetic import generate_synthetic_stanford
from models.evaluation import predict_top_k
from models.run_loading import load_trained_model
from utils.config import load_config
from tests.test_data_module import save_with_orientation
from utils.runs.plots import draw_runs, plot_runs
from utils.runs.records import is_run_dir, load_runs, read_metrics
from utils.runs.thesis import load_thesis_runs, reference_record

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spinning when the test machine is shared (trainings included)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SnapshotThenInterrupt(Callback):
    """Copies the run folder while epoch 2 starts (a run in progress), then presses Ctrl-C at its end."""

    def __init__(self, run_parent: Path, snapshot: Path):
        self.run_parent, self.snapshot = run_parent, snapshot

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            (run_dir,) = [p for p in self.run_parent.iterdir() if p.is_dir() and p.name.startswith("ghost_")
                          and (p / "summary.json").is_file() and json.loads((p / "summary.json").read_text())[
                              "state"] == "running"]
            shutil.copytree(run_dir, self.snapshot, ignore=shutil.ignore_patterns("*.ckpt", "tensorboard"))

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


@dataclass
class Runs:
    data: Path
    output: Path
    rgb: list       # two runs differing only by seed
    gray: Path
    interrupted: Path
    running: Path   # copy of the interrupted run taken while it was running
    damaged: list


def _train(data, output, tmp, settings, *extra, callbacks=()):
    args = ["-c", str(TEMPLATE), "-d", str(data), *extra]
    for setting in ["image_size=[32, 32]", "batch_size=8", "num_workers=0", "output_channels=64",
                    "accelerator=cpu", "log_to_tensorboard=false", "log_to_mlflow=false", f"output_path={output}",
                    f"logging_dir={tmp / 'logs'}", "optimizer_params={lr: 0.003, weight_decay: 0.05}",
                    "lr_scheduler=null", "lr_scheduler_params=null", *settings]:
        args += ["--set", setting]
    before = set(output.iterdir()) if output.is_dir() else set()
    assert train.main(args, extra_callbacks=callbacks) == 0
    return sorted(p for p in set(output.iterdir()) - before if is_run_dir(p))


@pytest.fixture(scope="module")
def runs(one_thread, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("after_training")
    generate_synthetic_stanford(tmp / "raw", num_classes=4, images_per_class=10, min_width=40, max_width=64)
    data, output = tmp / "stanford", tmp / "output"
    prepare_stanford_dataset(tmp / "raw", data, progress=False)
    rgb = _train(data, output, tmp, ["num_epochs=2", "tags=[rgb, seeds]"], "--seeds", "2")
    (gray,) = _train(data, output, tmp, ["num_epochs=2", "convert_to_grayscale=true", "tags=[gray]"])
    running = output / "ghost_snapshot_in_progress"
    handler = signal.getsignal(signal.SIGINT)
    before = set(output.iterdir())
    try:
        with pytest.raises(SystemExit):
            _train(data, output, tmp, ["num_epochs=3", "tags=[rgb, interrupted]"],
                   callbacks=[SnapshotThenInterrupt(output, running)])
    finally:
        signal.signal(signal.SIGINT, handler)
    (interrupted,) = [p for p in set(output.iterdir()) - before if p != running and is_run_dir(p)]
    damaged = [output / "ghost_damaged_summary", output / "ghost_damaged_metrics"]
    for path in damaged:
        shutil.copytree(rgb[0], path, ignore=shutil.ignore_patterns("*.ckpt"))
    summary = (damaged[0] / "summary.json").read_text()
    (damaged[0] / "summary.json").write_text(summary[: len(summary) // 2])
    (damaged[1] / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n2,not-a-number\n")
    return Runs(data, output, rgb, gray, interrupted, running, damaged)


def run(script, argv, capsys):
    code = script.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_without_its_data(run_dir, tmp_path):
    """A copy of a run whose config points at prepared data that is not there (as on another machine)."""
    moved = tmp_path / run_dir.name
    shutil.copytree(run_dir, moved)
    config = moved / "config.yml"
    cfg = yaml.safe_load(config.read_text())
    cfg["stanford_data_path"] = str(tmp_path / "data_elsewhere")
    config.write_text(yaml.safe_dump(cfg))
    return moved


def summary_of(run_dir):
    return json.loads((Path(run_dir) / "summary.json").read_text())


def table_rows(text):
    """Data lines of a printed table, split on runs of 2+ spaces."""
    lines = text.strip().splitlines()
    dashes = next(i for i, line in enumerate(lines) if set(line.replace(" ", "")) == {"-"})
    return [re.split(r"\s{2,}", line.strip()) for line in lines[dashes + 1:] if line.strip()
            and not line.startswith(("table written", "curves of"))]


# ---- compare_runs.py -----------------------------------------------------------------------------------


def test_records_as_written(runs):
    assert summary_of(runs.interrupted)["state"] == "interrupted"
    assert summary_of(runs.running)["state"] == "running"
    assert [row["epoch"] for row in read_metrics(runs.running)] == [1]
    assert [summary_of(r)["seed"] for r in runs.rgb] == [42, 43]


def test_table_shows_every_run_with_its_state_and_reports_damaged_records(runs, capsys):
    code, out, err = run(compare_runs, [runs.output], capsys)
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:5] == ["run_id", "state", "duration", "runtime", "architecture"]
    for column in ("image_size", "batch_size", "parameters", "grayscale", "normalize", "image_augmentations",
                   "tensor_augmentations", "crop_to_bboxes", "loss", "optimizer", "lr", "weight_decay",
                   "lr_scheduler", "dropout", "output_channels", "epochs", "train_loss_min", "valid_loss_min",
                   "train_acc_max", "valid_acc_max", "tags", "description"):
        assert column in header
    rows = {row[0]: row for row in table_rows(out)}
    assert set(rows) == {r.name for r in [*runs.rgb, runs.gray, runs.interrupted, runs.running]}
    assert rows[runs.interrupted.name][1] == "interrupted"
    assert rows[runs.running.name][1] == "running"
    assert rows[runs.rgb[0].name][1] == "finished"
    for damaged in runs.damaged:
        assert str(damaged) in err and damaged.name not in out
    assert "summary.json" in err and "not-a-number" in err


def test_csv_values_come_from_the_records(runs, capsys, tmp_path):
    path = tmp_path / "table.csv"
    code, out, _ = run(compare_runs, [runs.output, "--csv", path], capsys)
    assert code == 0
    table = {row["run_id"]: row for row in csv.DictReader(path.open())}
    for run_dir in [*runs.rgb, runs.gray, runs.interrupted]:
        metrics = read_metrics(run_dir)
        summary = summary_of(run_dir)
        row = table[run_dir.name]
        assert float(row["valid_loss_min"]) == min(m["valid_loss"] for m in metrics)
        assert float(row["valid_acc_max"]) == max(m["valid_acc"] for m in metrics)
        assert float(row["train_loss_min"]) == min(m["train_loss"] for m in metrics)
        assert float(row["train_acc_max"]) == max(m["train_acc"] for m in metrics)
        assert int(row["epochs"]) == len(metrics) == summary["epochs_run"]
        assert int(row["parameters"]) == summary["parameters"]
        assert float(row["duration"]) == summary["duration_s"]
        assert row["runtime"] == "local/cpu" and row["architecture"] == "ghost" and row["image_size"] == "32x32"
        assert row["optimizer"] == "AdamW" and float(row["lr"]) == 0.003 and float(row["weight_decay"]) == 0.05
        assert row["output_channels"] == "64" and row["batch_size"] == "8"
    assert table[runs.gray.name]["grayscale"] == "True" and table[runs.rgb[0].name]["grayscale"] == "False"
    assert table[runs.gray.name]["tags"] == "gray"


def test_filter_by_tag_and_architecture(runs, capsys):
    _, out, _ = run(compare_runs, [runs.output, "--tag", "rgb", "--columns", "run_id,tags"], capsys)
    assert {row[0] for row in table_rows(out)} == {r.name for r in [*runs.rgb, runs.interrupted, runs.running]}
    _, out, _ = run(compare_runs, [runs.output, "--tag", "rgb", "--tag", "interrupted", "--columns", "run_id"], capsys)
    assert {row[0] for row in table_rows(out)} == {runs.interrupted.name, runs.running.name}
    _, out, _ = run(compare_runs, [runs.output, "-a", "ghost", "--tag", "gray", "--columns", "run_id"], capsys)
    assert [row[0] for row in table_rows(out)] == [runs.gray.name]
    code, out, _ = run(compare_runs, [runs.output, "-a", "sq_10"], capsys)
    assert code == 0 and "no runs found matching the filters" in out


def test_sort_by_any_column_and_choose_columns(runs, capsys, tmp_path):
    path = tmp_path / "sorted.csv"
    with_metrics = {r.name for r in [*runs.rgb, runs.gray, runs.interrupted, runs.running]}
    for flags, reverse in (([], False), (["--descending"], True)):
        _, out, _ = run(compare_runs, [runs.output, "--sort", "valid_loss_min", *flags, "--columns",
                                       "valid_loss_min,run_id,state", "--csv", path, "--force"], capsys)
        assert out.splitlines()[0].split() == ["valid_loss_min", "run_id", "state"]
        rows = list(csv.DictReader(path.open()))
        assert list(rows[0]) == ["valid_loss_min", "run_id", "state"]
        assert {row["run_id"] for row in rows} == with_metrics
        losses = [float(row["valid_loss_min"]) for row in rows]
        assert losses == sorted(losses, reverse=reverse)
        assert [row[1] for row in table_rows(out)] == [row["run_id"] for row in rows]
    _, out, _ = run(compare_runs, [runs.output, "--sort", "state", "--columns", "state"], capsys)
    states = [row[0] for row in table_rows(out)]
    assert states == sorted(states)
    code, _, err = run(compare_runs, [runs.output, "--sort", "valid_accuracy"], capsys)
    assert code == 2 and "unknown column 'valid_accuracy'" in err and "valid_acc_max" in err
    code, _, err = run(compare_runs, [runs.output, "--columns", "run_id,colour"], capsys)
    assert code == 2 and "unknown column 'colour'" in err


def test_seed_groups_give_mean_std_min_max(runs, capsys, tmp_path):
    path = tmp_path / "seeds.csv"
    code, out, _ = run(compare_runs, [runs.output, "--seeds", "--columns", "run_id,runs,seed,valid_acc_max,"
                                      "valid_loss_min,grayscale", "--csv", path], capsys)
    assert code == 0
    rows = list(csv.DictReader(path.open()))
    # the seed pair, gray, and the interrupted run with its in-progress copy (same config, same seed)
    assert sorted(row["runs"] for row in rows) == ["1", "2", "2"]
    (group,) = [row for row in rows if row["seed"] == "42,43"]
    assert group["run_id"] == ",".join(r.name for r in runs.rgb) and group["seed"] == "42,43"
    losses = [min(m["valid_loss"] for m in read_metrics(r)) for r in runs.rgb]
    assert float(group["valid_loss_min_mean"]) == pytest.approx(statistics.fmean(losses), abs=1e-12)
    assert float(group["valid_loss_min_std"]) == pytest.approx(statistics.stdev(losses), abs=1e-12)
    assert float(group["valid_loss_min_min"]) == min(losses) and float(group["valid_loss_min_max"]) == max(losses)
    assert f"{statistics.fmean(losses):.4f} ± " in out


def test_plot_draws_validation_curves_of_selected_runs(runs, capsys, tmp_path):
    path = tmp_path / "curves.png"
    code, out, _ = run(compare_runs, [runs.output, "--tag", "rgb", "--plot", path], capsys)
    assert code == 0 and "curves of 4 run(s)" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded, _ = load_runs([runs.output])
    assert plot_runs([r for r in loaded if r.run_id == runs.gray.name], tmp_path / "one.png") == 1


def test_thesis_runs_join_the_table_and_the_plot_as_references(runs, capsys, tmp_path):
    path = tmp_path / "curves.png"
    code, out, _ = run(compare_runs, [runs.output, "--tag", "gray", "--reference", "C-50", "C-1", "--plot", path,
                                      "--columns", "run_id,epochs,valid_acc_max,parameters"], capsys)
    assert code == 0 and "curves of 3 run(s)" in out
    lines = out.splitlines()
    assert lines[2].split()[0] == runs.gray.name
    assert lines[3].split() == ["C-50", "130", "0.8379", "3.04M"] and lines[4].split()[0] == "C-1"
    loaded, _ = load_runs([runs.gray])
    figure, drawn = draw_runs(loaded, [reference_record(load_thesis_runs()["C-50"])])
    acc_axis = figure.axes[0]
    ours, thesis = acc_axis.get_lines()
    assert drawn == 2 and ours.get_linestyle() == "-" and thesis.get_linestyle() == "--"
    assert list(ours.get_xdata()) == [1, 2] and list(thesis.get_xdata())[:2] == [1, 2]
    assert thesis.get_label() == "thesis C-50" and max(thesis.get_ydata()) == pytest.approx(0.837946)
    code, _, err = run(compare_runs, [runs.output, "--reference", "C-5O"], capsys)
    assert code == 2 and "--reference C-5O: not a thesis run" in err and "did you mean C-5" in err


def test_default_folder_is_the_configs_output_path(runs, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(compare_runs, ["--columns", "run_id"], capsys)
    assert code == 2 and "output: no such folder" in err
    code, out, _ = run(compare_runs, ["--reference", "C-50", "--columns", "run_id"], capsys)
    assert code == 0 and out.splitlines()[2:] == ["C-50"]
    shutil.copytree(runs.gray, tmp_path / "demo" / "output" / runs.gray.name)  # as after make demo
    code, out, err = run(compare_runs, ["--columns", "run_id"], capsys)
    assert code == 0 and out.splitlines()[2:] == [runs.gray.name]
    assert "no config.yml and no output/ yet: showing the runs of make demo in demo/output" in err
    (tmp_path / "config.yml").write_text(f"output_path: {runs.output}\n")
    code, out, _ = run(compare_runs, ["--tag", "gray", "--columns", "run_id"], capsys)
    assert code == 0 and out.splitlines()[2:] == [runs.gray.name]
    (tmp_path / "other.yml").write_text("output_path: 3\n")
    code, _, err = run(compare_runs, ["-c", "other.yml"], capsys)
    assert code == 2 and "other.yml" in err and "output_path" in err
    (tmp_path / "config.yml").write_text("output_path: 3\n")  # read only when no folder is named
    code, out, _ = run(compare_runs, [runs.output, "--tag", "gray", "--columns", "run_id"], capsys)
    assert code == 0 and out.splitlines()[2:] == [runs.gray.name]


def test_a_sweeps_runs_are_found_in_its_study_folder_and_named_by_it(runs, capsys, tmp_path):
    output = tmp_path / "output"
    shutil.copytree(runs.gray, output / runs.gray.name)
    for name in ("A_seed42", "B_seed42"):  # <output_path>/<study>/<id>, as sweep.py writes them
        shutil.copytree(runs.rgb[0], output / "tiny" / name, ignore=shutil.ignore_patterns("*.ckpt"))
    (output / "tiny" / "optuna.db").write_bytes(b"")
    code, out, _ = run(compare_runs, [output, "--columns", "run_id,state"], capsys)
    assert code == 0 and [row[0] for row in table_rows(out)] == [runs.gray.name, "tiny/A_seed42", "tiny/B_seed42"]
    code, out, _ = run(compare_runs, [output / "tiny", "--columns", "run_id"], capsys)
    assert [row[0] for row in table_rows(out)] == ["A_seed42", "B_seed42"]


def test_a_folder_of_runs_given_for_one_run_lists_its_runs(runs, capsys):
    image = next((runs.data / "test").iterdir())
    for script, extra in ((evaluate, []), (predict, [image]), (export_model, ["--format", "pt2"])):
        code, _, err = run(script, [runs.output, *extra], capsys)
        assert code == 2 and f"{runs.output} is a folder of " in err and "not a run; give one of them" in err, err
        assert f"  {runs.gray}\n" in err and f"  {runs.rgb[0]}\n" in err


# ---- evaluate.py ---------------------------------------------------------------------------------------


def test_evaluate_top1_equals_logged_valid_acc_of_the_checkpoint_epoch(runs, capsys, tmp_path):
    out_csv = tmp_path / "predictions.csv"
    for run_dir in runs.rgb[0], runs.gray:
        code, out, err = run(evaluate, [run_dir, "--out", out_csv, "--force"], capsys)
        assert code == 0, err
        best = summary_of(run_dir)["best"]  # best.ckpt is the min-valid_loss epoch
        assert f"checkpoint best.ckpt (epoch {best['epoch']})" in out
        top1 = float(re.search(r"top-1 accuracy: ([\d.]+)", out).group(1))
        loss = float(re.search(r"validation loss \(\w+\): ([\d.]+)", out).group(1))
        assert top1 == pytest.approx(best["valid_acc"], abs=1e-4)
        assert loss == pytest.approx(best["valid_loss"], abs=1e-4)
        assert "per-class accuracy, all 4 classes, worst first:" in out  # --classes 10 (the default) > 4 classes
        predictions = list(csv.DictReader(out_csv.open()))
        labels = list(csv.DictReader((runs.data / "test_labels.csv").open()))
        assert [p["image_fname"] for p in predictions] == [row["image_fname"] for row in labels]
        assert [p["true_class"] for p in predictions] == [row["class"] for row in labels]
        correct = statistics.fmean(int(p["correct"]) for p in predictions)
        assert correct == pytest.approx(best["valid_acc"], abs=1e-6)


def test_evaluate_a_checkpoint_file_matches_its_epoch(runs, capsys):
    # last.ckpt of the interrupted run; evaluated with another batch size: top-1 is exact, loss to rounding.
    cfg = load_config(runs.interrupted / "config.yml")
    trained = load_trained_model(runs.interrupted / "last.ckpt", "ghost", 3, cfg.dropout, cfg.output_channels)
    (logged,) = [row for row in read_metrics(runs.interrupted) if row["epoch"] == trained.epoch]
    code, out, _ = run(evaluate, [runs.interrupted / "last.ckpt", "-d", runs.data, "--batch-size", 5], capsys)
    assert code == 0
    assert f"checkpoint last.ckpt (epoch {trained.epoch})" in out
    assert f"top-1 accuracy: {logged['valid_acc']:.4f}" in out
    assert f"logged at epoch {trained.epoch}: valid_acc {logged['valid_acc']:.4f}" in out
    loss = float(re.search(r"validation loss \(\w+\): ([\d.]+)", out).group(1))
    assert loss == pytest.approx(logged["valid_loss"], abs=1e-4)


def test_evaluate_reports_confused_pairs_and_worst_classes_from_predictions(runs, capsys, tmp_path):
    out_csv = tmp_path / "p.csv"
    _, out, _ = run(evaluate, [runs.rgb[1], "--out", out_csv, "--classes", 4], capsys)
    predictions = list(csv.DictReader(out_csv.open()))
    mistakes = {}
    for p in predictions:
        if p["correct"] == "0":
            key = f"{p['true_class_name']} -> {p['predicted_class_name']}: "
            mistakes[key] = mistakes.get(key, 0) + 1
    for key, count in mistakes.items():
        assert f"{key}{count}" in out
    worst_section = out.split("per-class accuracy")[1].split("most confused")[0]
    percentages = [float(x) for x in re.findall(r"([\d.]+)%", worst_section)]
    assert percentages == sorted(percentages) and len(percentages) == 4
    _, out, _ = run(evaluate, [runs.rgb[1], "--classes", 2], capsys)
    assert "per-class accuracy, worst 2 classes first:" in out


def test_evaluate_errors_name_the_fault(runs, capsys, tmp_path):
    code, _, err = run(evaluate, [tmp_path / "missing_run"], capsys)
    assert code == 2 and "missing_run" in err
    code, _, err = run(evaluate, [runs.running], capsys)
    assert code == 2 and "no best.ckpt" in err
    broken = tmp_path / "broken_run"
    shutil.copytree(runs.running, broken)
    (broken / "best.ckpt").write_bytes(b"not a checkpoint")
    code, _, err = run(evaluate, [broken], capsys)
    assert code == 2 and "best.ckpt: not a readable checkpoint" in err


# ---- predict.py ----------------------------------------------------------------------------------------


def test_predict_preprocessing_is_the_validation_one(runs):
    for run_dir in runs.rgb[0], runs.gray:
        cfg = load_config(run_dir / "config.yml")
        preprocessing = preprocessing_settings(cfg)
        validation = StanfordCarsDataset(runs.data, "test", train=False, preprocessing=preprocessing)
        boxed = StanfordCarsDataset(runs.data, "test", train=True,  # --bbox crops
                                    preprocessing=dataclasses.replace(preprocessing, crop_to_bboxes=True))
        for index in (0, 5):
            path = validation.paths[index]
            assert torch.equal(predict.photo_tensor(path, cfg), validation[index][0])
            box = validation.records[index].box
            assert torch.equal(predict.photo_tensor(path, cfg, box), boxed[index][0])


def test_predict_top_k_matches_evaluation_and_skips_non_images(runs, capsys, tmp_path):
    out_csv = tmp_path / "p.csv"
    run(evaluate, [runs.rgb[0], "--out", out_csv], capsys)
    expected = {row["image_fname"]: row for row in csv.DictReader(out_csv.open())}
    names = list(expected)[:2]
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a photo")
    images = [runs.data / "test" / names[0], text_file, tmp_path, runs.data / "test" / names[1]]
    code, out, err = run(predict, [runs.rgb[0], *images, "--top", 3], capsys)
    assert code == 1
    assert f"{text_file}: not an image file" in err and "2 of 4 file(s)" in err
    assert f"{tmp_path}: is a folder; pass the image files in it" in err
    blocks = out.split(str(runs.data / "test") + "/")[1:]
    assert len(blocks) == 2
    for name, block in zip(names, blocks):
        lines = block.strip().splitlines()
        assert lines[0] == name and len(lines) == 4
        classes = [int(c) for c in re.findall(r"\(class (\d+)\)", block)]
        probabilities = [float(p) / 100 for p in re.findall(r"([\d.]+)%", block)]
        assert classes == [int(c) for c in expected[name]["top4_classes"].split()][:3]
        assert probabilities == pytest.approx([float(p) for p in expected[name]["top4_probabilities"].split()][:3],
                                              abs=6e-5)
        assert expected[name]["predicted_class_name"] in lines[1]


def test_predict_bbox_uses_the_box(runs, capsys):
    cfg = load_config(runs.rgb[0] / "config.yml")
    image = runs.data / "test" / next(csv.DictReader((runs.data / "test_labels.csv").open()))["image_fname"]
    trained = load_trained_model(runs.rgb[0] / "best.ckpt", "ghost", 3, cfg.dropout, cfg.output_channels)
    box = (2, 2, 20, 20)
    probabilities, indices = predict_top_k(trained.network, predict.photo_tensor(image, cfg, box)[None], 2)
    code, out, _ = run(predict, [runs.rgb[0], image, "--top", 2, "--bbox", ",".join(map(str, box))], capsys)
    assert code == 0
    assert re.findall(r"\(class (\d+)\)", out) == [str(i + 1) for i in indices[0].tolist()]
    assert [float(p) for p in re.findall(r"([\d.]+)%", out)] == pytest.approx(
        [p * 100 for p in probabilities[0].tolist()], abs=0.006)
    code, _, err = run(predict, [runs.rgb[0], image, "--bbox", "0,0,5000,10"], capsys)
    assert code == 1 and str(image) in err and "outside" in err
    with pytest.raises(SystemExit):
        predict.main([str(runs.rgb[0]), str(image), "--bbox", "1,2,3"])
    assert "four integers" in capsys.readouterr().err


def test_predict_turns_photos_by_their_exif_orientation(runs, capsys, tmp_path):
    cfg = load_config(runs.rgb[0] / "config.yml")
    name = next(csv.DictReader((runs.data / "test_labels.csv").open()))["image_fname"]
    with Image.open(runs.data / "test" / name) as image:  # in 8x8 blocks of one colour, which JPEG keeps exactly
        blocks = image.convert("RGB").resize((image.width // 8, image.height // 8))
    upright = blocks.resize((blocks.width * 8, blocks.height * 8), Image.Resampling.NEAREST)
    assert upright.width != upright.height
    upright.save(tmp_path / "upright.jpg", quality=100, subsampling=0)
    photos = []
    for tag in range(1, 9):
        photos.append(tmp_path / f"orientation{tag}.jpg")
        save_with_orientation(upright, tag, photos[-1])
    box = (3, 2, upright.width - 5, upright.height - 4)
    for photo in photos:
        assert torch.equal(predict.photo_tensor(photo, cfg), predict.photo_tensor(tmp_path / "upright.jpg", cfg))
        assert torch.equal(predict.photo_tensor(photo, cfg, box),
                           predict.photo_tensor(tmp_path / "upright.jpg", cfg, box))
    code, out, _ = run(predict, [runs.rgb[0], tmp_path / "upright.jpg", *photos, "--top", 3], capsys)
    answers = [block.split("\n", 1)[1] for block in out.split(str(tmp_path) + "/")[1:]]
    assert code == 0 and len(answers) == 9 and len(set(answers)) == 1


def test_predict_names_large_broken_and_odd_images_and_goes_on(runs, capsys, tmp_path):
    good = runs.data / "test" / next(csv.DictReader((runs.data / "test_labels.csv").open()))["image_fname"]
    over_twice, over_once = tmp_path / "bomb.png", tmp_path / "huge.png"
    Image.new("1", (14000, 14000)).save(over_twice)  # over twice Pillow's limit: an error inside Pillow
    Image.new("1", (10000, 9000)).save(over_once)    # over the limit: only a warning inside Pillow
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:-200])
    frames = [Image.new("RGB", (48, 40), colour) for colour in ("red", "green", "blue")]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
    Image.new("RGB", (48, 40), "red").save(tmp_path / "still.webp")
    Image.new("RGB", (1, 1), "red").save(tmp_path / "dot.png")
    photos = [over_twice, over_once, truncated, tmp_path / "animated.gif", tmp_path / "still.webp",
              tmp_path / "dot.png", good]
    code, out, err = run(predict, [runs.rgb[0], *photos, "--top", 2], capsys)
    assert code == 1 and "Traceback" not in err
    for path in over_twice, over_once:
        assert f"predict.py: error: {path}: over Pillow's decompression-bomb limit" in err
    assert f"predict.py: error: {truncated}: truncated or damaged image file" in err
    assert f"3 of {len(photos)} file(s) could not be predicted" in err
    assert f"{tmp_path / 'animated.gif'}: animated (3 frames); the first frame is used" in err
    assert f"{tmp_path / 'dot.png'}: only 1x1 pixels, enlarged to the network's 32x32 input" in err
    predicted = [line for line in out.splitlines() if not line.startswith(" ")]
    assert predicted == [str(tmp_path / "animated.gif"), str(tmp_path / "still.webp"), str(tmp_path / "dot.png"),
                         str(good)]


# ---- export_model.py -----------------------------------------------------------------------------------


@dataclass
class Exported:
    folder: Path
    rgb: Path       # runs.rgb[0] as ONNX
    gray: Path      # runs.gray as ONNX
    output: str     # what export_model.py printed for the RGB run


@pytest.fixture(scope="module")
def onnx_exports(runs, tmp_path_factory):
    """The RGB and the grayscale run exported to ONNX once for the module's tests (a dynamo export takes seconds)."""
    folder = tmp_path_factory.mktemp("exports")
    outputs = []
    for run_dir, name in ((runs.rgb[0], "car.onnx"), (runs.gray, "gray.onnx")):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert export_model.main([str(run_dir), "--format", "onnx", "--out", str(folder / name)]) == 0
        outputs.append(printed.getvalue())
    return Exported(folder, folder / "car.onnx", folder / "gray.onnx", outputs[0])


def test_export_onnx_matches_pytorch_and_never_overwrites(runs, onnx_exports, capsys):
    target, out = onnx_exports.rgb, onnx_exports.output
    assert "check on 4 validation images" in out and "MB)" in out and "PyTorch on cpu|" in out
    assert re.search(r"latency, batch 1, median of 20 calls after 3 warm-up calls, the two in turns, 1 thread each, "
                     r"CPU time of the calling thread: PyTorch [\d.]+ ms, onnx [\d.]+ ms", out)
    metadata = json.loads((onnx_exports.folder / "car.onnx.json").read_text())
    labels = list(csv.DictReader((runs.data / "test_labels.csv").open()))
    names = {int(row["class"]): row["class_name"] for row in labels}
    assert metadata["class_names"] == [names[i] for i in range(1, 5)]
    assert metadata["preprocessing"]["image_size"] == [32, 32] and metadata["preprocessing"]["grayscale"] is False
    assert metadata["preprocessing"]["mean"] == [0.4707, 0.4602, 0.4550]
    assert metadata["preprocessing"]["std"] == [0.2594, 0.2585, 0.2635]

    cfg = load_config(runs.rgb[0] / "config.yml")
    trained = load_trained_model(runs.rgb[0] / "best.ckpt", "ghost", 3, cfg.dropout, cfg.output_channels)
    validation = StanfordCarsDataset(runs.data, "test", train=False, preprocessing=preprocessing((32, 32)))
    images = torch.stack([validation[i][0] for i in range(6)])
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    for batch in images[:1], images:
        (logits,) = session.run(None, {metadata["input_name"]: batch.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(logits, trained.network(batch).numpy(), atol=1e-4)
    assert session.get_inputs()[0].shape == ["batch", 3, 32, 32] and metadata["opset"] == 18
    assert sorted(p.name for p in onnx_exports.folder.iterdir()) == [
        "car.onnx", "car.onnx.json", "gray.onnx", "gray.onnx.json"]  # one self-contained file: no .onnx.data

    content = target.read_bytes()
    code, _, err = run(export_model, [runs.rgb[0], "--format", "onnx", "--out", target], capsys)
    assert code == 2 and f"{target}: already exists; pass --force" in err
    assert target.read_bytes() == content


def test_export_pt2_grayscale_without_data_uses_generated_inputs(runs, capsys, tmp_path):
    moved = run_without_its_data(runs.gray, tmp_path)
    code, out, err = run(export_model, [moved, "--format", "pt2"], capsys)
    assert code == 0, err
    assert "generated random inputs" in out and "check on 4 generated inputs" in out
    target = moved / "model.pt2"
    metadata = json.loads((moved / "model.pt2.json").read_text())
    recorded = json.loads((runs.gray / "summary.json").read_text())["class_names"]
    assert metadata["format"] == "pt2" and metadata["class_names"] == recorded and len(recorded) == 4
    assert metadata["preprocessing"]["grayscale"] is True and len(metadata["preprocessing"]["mean"]) == 1
    assert metadata["preprocessing"]["input_shape"] == ["batch", 1, 32, 32]
    program = torch.export.load(str(target)).module()
    cfg = load_config(runs.gray / "config.yml")
    trained = load_trained_model(runs.gray / "best.ckpt", "ghost", 1, cfg.dropout, cfg.output_channels)
    for batch in (1, 3):
        images = torch.randn(batch, 1, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(program(images), trained.network(images), atol=1e-4, rtol=0)
    code, _, err = run(export_model, [moved, "--format", "pt2"], capsys)
    assert code == 2 and "already exists" in err


def test_int8_export_reports_fp32_and_int8_side_by_side(runs, capsys, tmp_path):
    target = tmp_path / "car.int8.onnx"
    code, out, err = run(export_model, [runs.rgb[0], "--format", "onnx", "--quantize", "int8", "--out", target,
                                        "--calibration-images", 8], capsys)
    assert code == 0, err
    assert "calibrated on 8 training images" in out
    for row in ("size (MB)", "latency, batch 1, 1 thread (ms)", "latency, batch 1, 2 threads (ms)",
                "top-1 on 20 validation images", "same top-1 class as fp32"):
        assert len(re.findall(rf"^{re.escape(row)}\s+[\d.]+\s+[\d.]+$", out, re.MULTILINE)) == 1, out
    metadata = json.loads((tmp_path / "car.int8.onnx.json").read_text())
    quantization = metadata["quantization"]
    assert quantization["calibration_images"] == 8 and quantization["int8"]["size_bytes"] == target.stat().st_size
    assert quantization["int8"]["size_bytes"] < quantization["fp32"]["size_bytes"] / 2
    assert metadata["preprocessing"]["steps"][-1]["step"] == "normalize"

    validation = StanfordCarsDataset(runs.data, "test", train=False, preprocessing=preprocessing((32, 32)))
    images = torch.stack([validation[i][0] for i in range(len(validation))]).numpy()
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(target)).graph.node)
    predicted = session.run(None, {"images": images})[0].argmax(axis=1)
    top1 = float((predicted == np.array(validation.targets)).mean())
    assert quantization["int8"]["top1"] == pytest.approx(top1)
    assert re.search(rf"^top-1 on 20 validation images\s+[\d.]+\s+{top1:.4f}$", out, re.MULTILINE)


def test_int8_export_refusals_name_the_fault_and_write_nothing(runs, capsys, tmp_path):
    for options, message in ((["--quantize", "int4"], "argument --quantize: invalid choice: 'int4'"),
                             (["--quantize", "int8", "--format", "pt2"], "use it with --format onnx"),
                             (["--calibration-images", "0"], "--calibration-images 0: need at least 1"),
                             (["--max-drop", "-1"], "--max-drop -1.0: need a number")):
        with pytest.raises(SystemExit) as exited:
            export_model.main([str(runs.rgb[0]), "--format", "onnx", *options])
        assert exited.value.code == 2 and message in capsys.readouterr().err
    moved = run_without_its_data(runs.rgb[0], tmp_path)
    code, _, err = run(export_model, [moved, "--format", "onnx", "--quantize", "int8"], capsys)
    assert code == 2 and "--quantize int8 calibrates on the run's training images" in err and "pass -d" in err
    assert not (moved / "model.int8.onnx").exists()
    mine = tmp_path / "mine.onnx"
    mine.write_text("my model")
    code, _, err = run(export_model, [runs.rgb[0], "--format", "onnx", "--quantize", "int8", "--out", mine], capsys)
    assert code == 2 and f"{mine}: already exists; pass --force" in err and mine.read_text() == "my model"
    assert {p.name for p in tmp_path.iterdir()} == {"mine.onnx", moved.name}


def large_photos(source: Path, folder: Path) -> dict[str, Path]:
    """A 4032x3024 photo (a test image enlarged, with noise) stored upright, and stored sideways with EXIF
    orientation 6 (as phones store photos taken in portrait)."""
    with Image.open(source) as image:
        picture = np.asarray(image.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-12, 13, picture.shape)
    picture = Image.fromarray(np.clip(picture + noise, 0, 255).astype(np.uint8))
    photos = {"upright": folder / "upright.jpg", "exif6": folder / "exif6.jpg"}
    picture.save(photos["upright"], quality=92)
    save_with_orientation(picture, 6, photos["exif6"])
    return photos


def test_the_reference_implementation_answers_as_predict(runs, onnx_exports, capsys, tmp_path):
    """deploy/reference_predict.py follows the exported JSON with Pillow, numpy and onnxruntime alone."""
    from deploy import reference_predict

    source = runs.data / "test" / sorted(p.name for p in (runs.data / "test").iterdir())[0]
    photos = large_photos(source, tmp_path)
    box = (700, 500, 3300, 2700)
    for run_dir, channels, model in ((runs.rgb[0], 3, onnx_exports.rgb), (runs.gray, 1, onnx_exports.gray)):
        contract = reference_predict.read_metadata(model)
        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        cfg = load_config(run_dir / "config.yml")
        network = load_trained_model(run_dir / "best.ckpt", "ghost", channels, cfg.dropout,
                                     cfg.output_channels).network
        for photo, given in ((photos["upright"], None), (photos["exif6"], None), (photos["exif6"], box)):
            expected = predict.photo_tensor(photo, cfg, given)
            assert np.array_equal(reference_predict.preprocess(photo, contract["preprocessing"], given),
                                  expected.numpy())
            probabilities, indices = predict_top_k(network, expected[None], 4)
            ours = torch.zeros(4).scatter_(0, indices[0], probabilities[0]).numpy()
            np.testing.assert_allclose(reference_predict.probabilities(session, contract, photo, given), ours,
                                       rtol=0, atol=1e-4)
    cfg = load_config(runs.rgb[0] / "config.yml")
    mean, std = (np.array(cfg.normalization().mean)[:, None, None], np.array(cfg.normalization().std)[:, None, None])
    with Image.open(photos["exif6"]) as image:  # the steps the JSON listed before: no draft, no turn (or a turn)
        for picture in image, ImageOps.exif_transpose(image):
            pixels = np.asarray(picture.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)) / 255
            naive = (pixels.transpose(2, 0, 1) - mean) / std
            assert np.abs(naive - predict.photo_tensor(photos["exif6"], cfg).numpy()).max() > 0.01
    script = ("import sys; sys.modules.update(dict.fromkeys(['torch', 'datasets', 'models', 'utils'])); "
              "import runpy; runpy.run_path('deploy/reference_predict.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", script, str(onnx_exports.gray), str(photos["upright"]), "--top",
                             "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    code, out, _ = run(predict, [runs.gray, photos["upright"], "--top", 2], capsys)
    assert result.returncode == 0 and code == 0, result.stderr
    assert re.findall(r"\(class \d+\)", result.stdout) == re.findall(r"\(class \d+\)", out)


def test_device_cpu_gives_the_default_results(runs, capsys, tmp_path):
    image = runs.data / "test" / sorted(p.name for p in (runs.data / "test").iterdir())[0]
    for script, extra in ((predict, [image, "--top", 3]), (evaluate, [])):
        code, default, _ = run(script, [runs.rgb[0], *extra], capsys)
        assert code == 0 and run(script, [runs.rgb[0], *extra, "--device", "cpu"], capsys)[1] == default
    code, out, err = run(export_model, [runs.rgb[0], "--format", "pt2", "--out", tmp_path / "m.pt2",
                                        "--device", "cpu"], capsys)
    assert code == 0, err
    assert "max |exported - PyTorch on cpu|" in out
    assert re.search(r"latency, batch 1, median of 20 calls after 3 warm-up calls, the two in turns, 1 thread each, "
                     r"CPU time of the calling thread: PyTorch [\d.]+ ms, pt2 [\d.]+ ms", out)
    content = (tmp_path / "m.pt2").read_bytes()
    code, _, err = run(export_model, [runs.rgb[0], "--format", "pt2", "--out", tmp_path / "m.pt2"], capsys)
    assert code == 2 and "already exists; pass --force" in err and (tmp_path / "m.pt2").read_bytes() == content
    code, _, err = run(export_model, [runs.rgb[0], "--format", "pt2", "--out", tmp_path / "m.pt2", "--force"], capsys)
    assert code == 0, err


def test_export_check_rejects_outputs_beyond_the_tolerance():
    from models.export import output_problem

    expected = np.zeros((2, 4), dtype=np.float32)
    assert output_problem(expected, expected + 5e-5) == (pytest.approx(5e-5), None)
    difference, problem = output_problem(expected, expected + 2e-4)
    assert difference == pytest.approx(2e-4) and "tolerance 0.0001" in problem
    assert "shape" in output_problem(expected, expected[:1])[1]


@pytest.mark.parametrize("package", ["onnxruntime", "onnxscript"])
def test_onnx_export_without_the_onnx_packages_says_what_to_install(runs, capsys, monkeypatch, tmp_path, package):
    from models.export import ExportError, export_model as export

    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    install = f"{sys.executable} -m pip install -r {ROOT / 'export_requirements.txt'}"
    with pytest.raises(ExportError, match=f"missing: {package}.*") as raised:
        export(torch.nn.Conv2d(3, 2, 1), tmp_path / "m.onnx", "onnx", torch.zeros(1, 3, 4, 4), {})
    assert install in str(raised.value) and not (tmp_path / "m.onnx").exists()
    code, _, err = run(export_model, [runs.rgb[0], "--format", "onnx", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 2 and install in err and not (tmp_path / "m.onnx").exists()


def test_class_names_come_from_the_run_records_without_the_data(runs, capsys, tmp_path):
    summary = json.loads((runs.rgb[0] / "summary.json").read_text())
    names = StanfordCarsDataModule(data_settings(load_config(runs.rgb[0] / "config.yml")).for_evaluation()).class_names
    assert summary["class_names"] == names
    image = runs.data / "test" / sorted(p.name for p in (runs.data / "test").iterdir())[0]
    moved = run_without_its_data(runs.rgb[0], tmp_path)
    code, out, err = run(predict, [moved, image, "--top", 1], capsys)
    assert code == 0 and "warning" not in err
    assert any(name in out for name in names)
    summary.pop("class_names")
    (moved / "summary.json").write_text(json.dumps(summary))
    code, out, err = run(predict, [moved, image, "--top", 1], capsys)
    assert code == 0 and "records no class names" in err and "(class " in out
    assert not any(name in out for name in names)


# ---- outputs never overwrite what the user made ----------------------------------------------------------


def test_evaluate_refuses_run_records_existing_files_and_bad_options(runs, capsys, tmp_path):
    checkpoint = runs.rgb[0] / "best.ckpt"
    content = checkpoint.read_bytes()
    for target in (checkpoint, runs.rgb[0] / "config.yml", runs.rgb[0] / "metrics.csv"):
        code, _, err = run(evaluate, [runs.rgb[0], "--out", target, "--force"], capsys)
        assert code == 2 and f"{target}: is the run's own {target.name}" in err
    assert checkpoint.read_bytes() == content
    mine = tmp_path / "mine.csv"
    mine.write_text("my table")
    code, _, err = run(evaluate, [runs.rgb[0], "--out", mine], capsys)
    assert code == 2 and "already exists; pass --force" in err and mine.read_text() == "my table"
    code, _, err = run(evaluate, [runs.rgb[0], "--out", tmp_path], capsys)
    assert code == 2 and "is a folder" in err
    for option in (["--classes", "0"], ["--batch-size", "0"], ["--workers", "-1"], ["--device", "banana"]):
        with pytest.raises(SystemExit) as exited:
            evaluate.main([str(runs.rgb[0]), *option])
        assert exited.value.code == 2 and option[0] in capsys.readouterr().err


def test_compare_refuses_run_records_existing_files_and_writes_nothing_without_runs(runs, capsys, tmp_path):
    metrics = runs.rgb[0] / "metrics.csv"
    content = metrics.read_bytes()
    code, _, err = run(compare_runs, [runs.output, "--csv", metrics, "--force"], capsys)
    assert code == 2 and "is the run's own metrics.csv" in err and metrics.read_bytes() == content
    mine = tmp_path / "mine.csv"
    mine.write_text("my table")
    code, _, err = run(compare_runs, [runs.output, "--csv", mine], capsys)
    assert code == 2 and "already exists; pass --force" in err and mine.read_text() == "my table"
    code, _, err = run(compare_runs, [runs.output, "--plot", tmp_path / "curves"], capsys)
    assert code == 2 and "image file name ending in one of" in err and not (tmp_path / "curves.png").exists()
    empty = tmp_path / "no_runs"
    empty.mkdir()
    code, out, err = run(compare_runs, [empty, "--csv", mine, "--force"], capsys)
    assert code == 1 and "no runs found" in out and "nothing written" in err and mine.read_text() == "my table"
    code, _, err = run(compare_runs, [tmp_path / "missing", "--columns", ",,"], capsys)
    assert code == 2 and "missing: no such folder" in err and "--columns: no column names" in err


def test_export_never_writes_over_run_records_or_a_mismatched_extension(runs, capsys, tmp_path):
    checkpoint = runs.rgb[0] / "best.ckpt"
    content = checkpoint.read_bytes()
    for target in (checkpoint, runs.rgb[0] / "last.ckpt"):
        code, _, err = run(export_model, [runs.rgb[0], "--format", "onnx", "--out", target, "--force"], capsys)
        assert code == 2 and f"is the run's own {target.name}" in err
    assert checkpoint.read_bytes() == content
    code, _, err = run(export_model, [runs.rgb[0], "--format", "pt2", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 2 and ".onnx is the onnx extension" in err and not (tmp_path / "m.onnx").exists()


def test_a_failed_export_check_keeps_the_earlier_export(tmp_path, monkeypatch):
    from models import export as export_module

    network, images = torch.nn.Conv2d(3, 2, 1), torch.ones(2, 3, 2, 2)
    target = tmp_path / "m.pt2"
    export_module.export_model(network, target, "pt2", images, {"run": "earlier"}, latency_repeats=1)
    earlier = target.read_bytes(), (tmp_path / "m.pt2.json").read_text()
    torch.nn.init.ones_(network.weight)
    monkeypatch.setattr(export_module, "output_problem", lambda *args, **kwargs: (1.0, "outputs differ (injected)"))
    with pytest.raises(export_module.ExportError, match=r"kept for inspection as .*m\.unchecked\.pt2"):
        export_module.export_model(network, target, "pt2", images, {"run": "later"}, force=True,
                                   latency_repeats=1)
    assert (target.read_bytes(), (tmp_path / "m.pt2.json").read_text()) == earlier
    assert (tmp_path / "m.unchecked.pt2").is_file()


def test_a_named_data_folder_must_be_prepared_data_with_the_run_classes(runs, capsys, tmp_path):
    image = runs.data / "test" / sorted(p.name for p in (runs.data / "test").iterdir())[0]
    (tmp_path / "no_data").mkdir()
    for script, extra in ((predict, [image]), (evaluate, []), (export_model, ["--format", "onnx"])):
        code, _, err = run(script, [runs.rgb[0], *extra, "-d", tmp_path / "no_data"], capsys)
        assert code == 2 and f"-d {tmp_path / 'no_data'}: not prepared data (test_labels.csv not found)" in err
        code, _, err = run(script, [runs.rgb[0], *extra, "-d", tmp_path / "nowhere"], capsys)
        assert code == 2 and f"-d {tmp_path / 'nowhere'}: does not exist" in err
    fewer = tmp_path / "three_classes"
    shutil.copytree(runs.data, fewer)
    for labels in (fewer / "train_labels.csv", fewer / "test_labels.csv"):
        with labels.open() as handle:
            rows = list(csv.reader(handle))
        with labels.open("w", newline="") as handle:
            csv.writer(handle).writerows([rows[0], *(row for row in rows[1:] if row[1] != "4")])
    code, out, err = run(predict, [runs.rgb[0], image, "-d", fewer], capsys)
    assert code == 2 and "the prepared data has 3 classes, the run's network 4" in err


def test_evaluate_names_empty_or_incomplete_data_and_keeps_mismatch_reports_short(runs, capsys, tmp_path):
    empty = tmp_path / "empty_test"
    shutil.copytree(runs.data, empty)
    header = (empty / "test_labels.csv").read_text().splitlines()[0]
    (empty / "test_labels.csv").write_text(header + "\n")
    code, _, err = run(evaluate, [runs.rgb[0], "-d", empty], capsys)
    assert code == 2 and "empty_test/test_labels.csv lists no images to evaluate" in err
    incomplete = tmp_path / "incomplete"
    shutil.copytree(runs.data, incomplete)
    first = sorted((incomplete / "test").iterdir())[0]
    first.unlink()
    code, _, err = run(evaluate, [runs.rgb[0], "-d", incomplete], capsys)
    assert code == 2 and f"missing from {incomplete / 'test'}, e.g. {first.name}" in err
    other = run_without_its_data(runs.rgb[0], tmp_path)
    config = other / "config.yml"
    config.write_text(config.read_text().replace("architecture: ghost", "architecture: mob_v2"))
    code, _, err = run(evaluate, [other, "-d", runs.data], capsys)
    assert code == 2 and "do not fit a mob_v2 network" in err and len(err) < 1000
