"""Files that can come from someone else (run folders, study files, Neptune offline folders, raw-data archives,
photos) run no code and make no command read or write outside the folder it was given: each crafted file below is
refused with a message naming it, its payload never runs, and nothing outside the asked-for folder changes."""

import json
import shlex
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import EpsImagePlugin

import compare_runs
import evaluate
import export_model
import predict
import prepare_stanford_dataset
import sweep
import train
from datasets.photos import UnsafeImageError, open_image
from tests.test_checkpoint_safety import received, snapshot, train_tiny_run
from utils.output_files import links_leaving
from utils.runs.neptune_offline import readable_neptune_runs

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"


@pytest.fixture(scope="module")
def trained(make_prepared, tmp_path_factory, one_torch_thread):
    """(prepared data, run folder) of a one-epoch train.py run."""
    data = make_prepared("untrusted_data", num_classes=3, images_per_class=6, min_width=40, max_width=64)
    return data, train_tiny_run(data, tmp_path_factory.mktemp("untrusted_run"), "num_epochs=1",
                                "log_to_tensorboard=false")


def run_commands(run_dir: Path, data: Path) -> dict[str, tuple]:
    """(script, arguments) of each command given a run folder."""
    image = next((data / "test").iterdir())
    return {"predict": (predict, [run_dir, image]), "evaluate": (evaluate, [run_dir]),
            "export": (export_model, [run_dir, "--format", "onnx"]),
            "resume": (train, ["--resume", run_dir, "--set", "num_epochs=2"])}


def call(script, argv, capsys) -> tuple[int, str]:
    code = script.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_a_yaml_tag_that_constructs_an_object_is_refused(trained, tmp_path, capsys):
    data, run_dir = trained
    copy, marker = received(run_dir, tmp_path), tmp_path / "payload_ran"
    tag = f"\nnote: !!python/object/apply:os.system [{json.dumps('touch ' + shlex.quote(str(marker)))}]\n"
    config = copy / "config.yml"
    config.write_text(config.read_text() + tag)
    study = tmp_path / "study.yml"
    study.write_text(f"name: tiny\nbase: {{config: {TEMPLATE}}}\nruns: [{{id: A}}]{tag}")
    before = snapshot(tmp_path)
    for name, (script, argv) in run_commands(copy, data).items():
        code, error = call(script, argv, capsys)
        assert code == 2 and f"{config}" in error and "python/object/apply:os.system" in error, name
    code, error = call(compare_runs, [copy.parent], capsys)
    assert code == 0 and f"warning: {config}: damaged run record, not readable YAML" in error
    code, error = call(sweep, [study, "--check"], capsys)
    assert code == 2 and f"{study}" in error and "python/object/apply:os.system" in error
    assert not marker.exists() and "Traceback" not in error
    assert snapshot(tmp_path) == before


def test_summary_paths_pointing_outside_the_run_are_never_followed(trained, tmp_path, capsys):
    """summary.json's run_dir and resumed checkpoints are records: commands use the folder they were given."""
    data, run_dir = trained
    copy, elsewhere = received(run_dir, tmp_path), tmp_path / "elsewhere"
    shutil.copytree(run_dir, elsewhere)
    summary_path = copy / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(run_dir=str(elsewhere), resumed=[{"at": "2020-01-01T00:00:00",
                                                     "checkpoint": str(elsewhere / "last.ckpt")}])
    summary_path.write_text(json.dumps(summary))
    untouched = snapshot(elsewhere)
    for name, (script, argv) in run_commands(copy, data).items():
        code, error = call(script, argv, capsys)
        assert code == 0, (name, error)
    assert call(compare_runs, [copy.parent], capsys)[0] == 0
    assert snapshot(elsewhere) == untouched
    summary = json.loads(summary_path.read_text())
    assert summary["run_dir"] == str(copy) and summary["resumed"][-1]["checkpoint"] == str(copy / "last.ckpt")
    assert (copy / "model.onnx").is_file() and not (elsewhere / "model.onnx").exists()


@pytest.mark.parametrize("link", ["metrics.csv", "best.ckpt", "summary.json.partial"])
def test_a_link_leading_out_of_a_run_folder_is_refused(trained, tmp_path, capsys, link):
    """A link to a file outside (a dangling one too, which a write would create) is neither read nor written."""
    data, run_dir = trained
    copy, outside = received(run_dir, tmp_path), tmp_path / "outside"
    outside.mkdir()
    target = outside / link
    if link != "summary.json.partial":  # an outside file the commands could read (a valid one)
        shutil.copy(copy / link, target)
    (copy / link).unlink(missing_ok=True)
    (copy / link).symlink_to(target)
    before = snapshot(tmp_path)
    for name, (script, argv) in run_commands(copy, data).items():
        code, error = call(script, argv, capsys)
        assert code == 2 and f"{copy / link}: a symbolic link to {target}, outside the run folder" in error, name
    code, error = call(compare_runs, [copy.parent], capsys)
    assert f"warning: {copy / link}: a symbolic link to {target}" in error and "(skipped)" in error
    assert snapshot(tmp_path) == before and not (outside / "summary.json.partial").exists()


def test_links_inside_a_run_folder_are_fine_and_neptune_folders_are_checked_too(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "secret.log"
    run_dir.mkdir()
    (run_dir / "best.ckpt").write_bytes(b"x")
    (run_dir / "latest.ckpt").symlink_to("best.ckpt")
    assert links_leaving(run_dir) == []
    neptune = tmp_path / "offline" / "run__1"
    neptune.mkdir(parents=True)
    outside.write_text('{"obj": {"type": "AssignString", "path": ["sys", "name"], "value": "secret"}}\n')
    (neptune / "data-1.log").symlink_to(outside)
    damaged = tmp_path / "offline" / "run__2"
    damaged.mkdir()
    (damaged / "data-1.log").write_text('{"obj": {"type": "AssignString"}}\nnot json\n')
    readable, problems = readable_neptune_runs([neptune, damaged])
    assert readable == []
    assert problems[0].startswith(f"{neptune / 'data-1.log'}: a symbolic link to {outside}, outside the Neptune")
    assert problems[1].startswith(f"{damaged / 'data-1.log'}, line 2: not a Neptune offline operation")


@pytest.mark.parametrize("member", ["../x", "/tmp/x", "car_data/car_data/train/link"])
def test_a_zip_member_that_could_land_outside_is_refused(data_make_raw, tmp_path, capsys, member):
    raw, _ = data_make_raw(layout="class_folders")
    info = zipfile.ZipInfo(member)
    if member.endswith("link"):
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(raw / "archive.zip", "a") as archive:
        archive.writestr(info, "/etc/passwd" if member.endswith("link") else "payload")
    before = snapshot(tmp_path)
    assert prepare_stanford_dataset.main(["--raw", str(raw), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert f"{raw / 'archive.zip'}: refusing archive member '{member}'" in error
    assert snapshot(tmp_path) == before


def test_an_eps_photo_is_refused_before_ghostscript_runs(trained, tmp_path, capsys, monkeypatch):
    """Pillow renders EPS by running Ghostscript on the file's PostScript; a stand-in records whether it ran."""
    data, run_dir = trained
    marker = tmp_path / "ghostscript_ran"

    def ghostscript(*args, **kwargs):
        marker.touch()
        raise OSError("stand-in")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs")
    photo = tmp_path / "photo.jpg"
    photo.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\nshowpage\n%%EOF\n")
    code, error = call(predict, [run_dir, photo], capsys)
    assert code == 1 and f"{photo}: is an EPS file, which Pillow decodes by running Ghostscript" in error
    with pytest.raises(UnsafeImageError), open_image(photo):
        pass
    assert not marker.exists()
