"""Raw Stanford files (both layouts, archives / folders / Kaggle folders) -> prepared data."""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

import prepare_stanford_dataset as script
from datasets import preparation
from datasets.preparation import DataPreparationError, LABEL_COLUMNS, make_data_archive, prepare_stanford_dataset
from datasets.synthetic import class_name, mat_bytes, struct_array
from datasets.synthetic_images import MARGIN, class_colour


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LABEL_COLUMNS
        return list(reader)


def luminance(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def assert_box_colour(image: Image.Image, box, class_id: int) -> None:
    """The box's plain margin (inside the box) has the class colour; check a few margin points."""
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1 + 1) * MARGIN / 2, (y2 - y1 + 1) * MARGIN / 2
    expected = class_colour(class_id)
    for x, y in ((x1 + mx, y1 + my), (x2 - mx, y1 + my), (x1 + mx, y2 - my), (x2 - mx, y2 - my)):
        pixel = image.getpixel((round(x), round(y)))
        if image.mode == "L":
            assert abs(pixel - luminance(expected)) < 30, (pixel, expected)
        else:
            assert max(abs(a - b) for a, b in zip(pixel, expected)) < 40, (pixel, expected)


@pytest.mark.parametrize("layout", ["updated", "original", "class_folders"])
@pytest.mark.parametrize("form", ["archives", "folders", "kaggle"])
def test_prepare_every_layout_labels_and_boxes_land_on_right_images(data_make_raw, tmp_path, layout, form):
    raw, generated = data_make_raw(layout=layout, archives=form == "archives", doubled=form == "kaggle")
    if form == "kaggle":  # cars_train/cars_train/, car_data/car_data/
        assert any(len(set(p.relative_to(raw).parts[:2])) == 1 for p in raw.rglob("0*.jpg"))
    summary = prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert (summary.layout, summary.num_classes) == (layout, 4)
    assert summary.num_train == summary.num_test == 12
    assert summary.grayscale_images == sum(im.grayscale for im in generated.images) > 0
    expected = {(im.split, im.name): im for im in generated.images}
    seen_modes = set()
    for split in ("train", "test"):
        rows = read_csv(tmp_path / "out" / f"{split}_labels.csv")
        assert len(rows) == 12
        assert sorted(p.name for p in (tmp_path / "out" / split).iterdir()) == sorted(r["image_fname"] for r in rows)
        for row in rows:
            truth = expected[(split, row["image_fname"])]
            box = tuple(int(row[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
            assert (int(row["class"]), box, row["class_name"]) == (truth.class_id, truth.box, class_name(truth.class_id))
            with Image.open(tmp_path / "out" / split / row["image_fname"]) as image:
                assert image.size == truth.size
                seen_modes.add(image.mode)
                assert_box_colour(image, box, truth.class_id)
    assert seen_modes == {"RGB", "L"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_mat_files_are_matlab_like_and_large_values_survive(data_make_raw, tmp_path):
    raw, generated = data_make_raw(classes=2, per_class=2, min_width=300, max_width=400)
    annotations = scipy.io.loadmat(raw / "cars_annos.mat")["annotations"]
    assert annotations.shape == (1, 4)
    dtypes = {annotations[0, i][f].dtype for i in range(4) for f in ("bbox_x2", "class")}
    assert np.dtype(np.uint16) in dtypes and np.dtype(np.uint8) in dtypes
    assert annotations[0, 0]["bbox_x2"].shape == (1, 1)
    prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    boxes = {r["image_fname"]: tuple(int(r[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
             for split in ("train", "test") for r in read_csv(tmp_path / "out" / f"{split}_labels.csv")}
    assert boxes == {im.name: im.box for im in generated.images}
    assert max(b[2] for b in boxes.values()) > 255


def rewrite_annotations(raw: Path, change) -> None:
    mat = scipy.io.loadmat(raw / "cars_annos.mat")
    annotations = mat["annotations"]
    records = [{name: annotations[0, i][name].item() if annotations[0, i][name].dtype.kind == "U"
                else int(annotations[0, i][name].item()) for name in annotations.dtype.names}
               for i in range(annotations.shape[1])]
    change(records)
    (raw / "cars_annos.mat").write_bytes(mat_bytes(annotations=struct_array(records), class_names=mat["class_names"]))


def test_box_outside_image_is_clipped_with_warning(data_make_raw, tmp_path):
    raw, generated = data_make_raw()
    first = generated.images[0]

    def widen(records):
        records[0]["bbox_x2"] = 5000
        records[0]["bbox_y1"] = 0

    rewrite_annotations(raw, widen)
    with pytest.warns(UserWarning, match=r"1 bounding box\(es\) reached outside their image and were clipped"):
        summary = prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert summary.clipped_boxes == 1
    row = next(r for r in read_csv(tmp_path / "out" / f"{first.split}_labels.csv") if r["image_fname"] == first.name)
    assert int(row["bbox_x2"]) == first.size[0] - 1


def test_class_id_outside_class_names(data_make_raw, tmp_path):
    raw, generated = data_make_raw()
    rewrite_annotations(raw, lambda records: records[1].update({"class": 99}))
    with pytest.raises(DataPreparationError, match=r"1 annotation\(s\) have a class id outside 1..4.*class 99"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_mat_without_fields_or_variable_or_unreadable(data_make_raw, tmp_path):
    raw, _ = data_make_raw()
    rewrite_annotations(raw, lambda records: [r.pop("test") for r in records])
    with pytest.raises(DataPreparationError, match=r"cars_annos.mat: 'annotations' lacks field\(s\) test"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    (raw / "cars_annos.mat").write_bytes(mat_bytes(something=np.zeros(3)))
    with pytest.raises(DataPreparationError, match=r"has no variable 'annotations' \(found: something\)"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    (raw / "cars_annos.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataPreparationError, match="cars_annos.mat is not a readable MATLAB .mat file"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)


def test_missing_raw_files_are_named_with_layout(data_make_raw, tmp_path):
    raw, _ = data_make_raw(layout="original")
    (raw / "cars_test.tgz").unlink()
    with pytest.raises(DataPreparationError, match=r"original Stanford Cars layout.*lacks: cars_test.tgz"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    raw, _ = data_make_raw(name="raw2")
    (raw / "car_ims.tgz").unlink()
    with pytest.raises(DataPreparationError, match=r"updated Stanford Cars layout.*lacks: car_ims.tgz"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataPreparationError, match=r"no Stanford Cars raw files found.*car_ims.tgz.*cars_train.tgz"):
        prepare_stanford_dataset(tmp_path / "empty", tmp_path / "out", progress=False)


def test_class_folder_layout_missing_parts_and_bad_rows_are_named(data_make_raw, tmp_path):
    raw, _ = data_make_raw(layout="class_folders", archives=False, doubled=True)
    (raw / "anno_test.csv").unlink()
    shutil.rmtree(raw / "car_data" / "car_data" / "test")
    with pytest.raises(DataPreparationError) as error:
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    message = str(error.value)
    assert "looks like the class_folders Stanford Cars layout (car_data/car_data/train/<class name>/" in message
    assert message.endswith("lacks: car_data/car_data/test/ (a folder per class), anno_test.csv")
    lines = (raw / "anno_train.csv").read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0]
    (raw / "anno_train.csv").write_text("\n".join(lines))
    (raw / "anno_test.csv").write_text("\n".join(lines[:2]))
    (raw / "car_data" / "car_data" / "test").mkdir()
    with pytest.raises(DataPreparationError, match=r"anno_train.csv, line 3: expected file name, x1, y1, x2, y2, "
                                                   r"class id \(whole numbers\), found '00003.jpg,\d+,\d+,\d+,\d+'"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)


def test_class_folder_zip_missing_parts_or_truncated(data_make_raw, tmp_path):
    raw, _ = data_make_raw(layout="class_folders")
    with zipfile.ZipFile(raw / "archive.zip") as archive:
        members = [(info, archive.read(info)) for info in archive.infolist() if info.filename != "names.csv"]
    with zipfile.ZipFile(raw / "archive.zip", "w") as archive:
        for info, data in members:
            archive.writestr(info, data)
    with pytest.raises(DataPreparationError, match=r"class_folders Stanford .* lacks: names.csv \(in archive.zip\)"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    data = (raw / "archive.zip").read_bytes()
    (raw / "archive.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataPreparationError, match="archive.zip is truncated or corrupt"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_kaggle_mirror_without_test_labels_explains(data_make_raw, tmp_path):
    raw, _ = data_make_raw(layout="original", archives=False, doubled=True)
    (raw / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DataPreparationError) as error:
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert "cars_test_annos_withlabels.mat is missing" in str(error.value)
    assert "cars_test_annos.mat has boxes but no 'class' field" in str(error.value)


def test_browser_renamed_downloads_are_used_when_alone_and_said(data_make_raw, tmp_path, capsys):
    raw, _ = data_make_raw(layout="original")
    for name in ("cars_test_annos_withlabels.mat", "car_devkit.tgz"):
        stem, suffix = name.split(".")
        (raw / name).rename(raw / f"{stem} (1).{suffix}")
    assert script.main(["--raw", str(raw), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "note: used cars_test_annos_withlabels (1).mat as cars_test_annos_withlabels.mat" in out
    assert "note: used car_devkit (1).tgz as car_devkit.tgz" in out
    (raw / "cars_test_annos_withlabels (2).mat").write_bytes((raw / "cars_test_annos_withlabels (1).mat").read_bytes())
    summary = prepare_stanford_dataset(raw, tmp_path / "out2", progress=False)
    assert summary.notes[1].startswith("cars_test_annos_withlabels (2).mat: the same bytes as "
                                       "cars_test_annos_withlabels (1).mat")
    (raw / "cars_test_annos_withlabels.mat").write_bytes(mat_bytes(annotations=struct_array([{"fname": "x.jpg"}])))
    with pytest.raises(DataPreparationError, match=r"different files that could each be cars_test_annos_withlabels"
                                                   r".mat: cars_test_annos_withlabels.mat, "
                                                   r"cars_test_annos_withlabels \(1\).mat, cars_test_annos_withlabels "
                                                   r"\(2\).mat"):
        prepare_stanford_dataset(raw, tmp_path / "out3", progress=False)


def test_two_different_class_folder_zips_are_refused_by_name(data_make_raw, tmp_path):
    raw, _ = data_make_raw(layout="class_folders")
    shutil.copy(raw / "archive.zip", raw / "archive (1).zip")
    assert prepare_stanford_dataset(raw, tmp_path / "out", progress=False).notes == [
        "archive (1).zip: the same bytes as archive.zip, which was used"]
    other, _ = data_make_raw(layout="class_folders", name="other", seed=5)
    shutil.copy(other / "archive.zip", raw / "archive (1).zip")
    with pytest.raises(DataPreparationError, match=r"could each be Kaggle's class-folder archive: archive.zip, "
                                                   r"archive \(1\).zip"):
        prepare_stanford_dataset(raw, tmp_path / "out2", progress=False)


def test_image_names_not_matching_annotations_are_counted(data_make_raw, tmp_path):
    raw, _ = data_make_raw(layout="original", archives=False)
    for name in ("00001.jpg", "00002.jpg"):
        (raw / "cars_test" / name).rename(raw / "cars_test" / f"renamed_{name}")
    with pytest.raises(DataPreparationError) as error:
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    message = str(error.value)
    assert "2 of 12 annotated image(s) were not found" in message
    assert "00001.jpg" in message and "renamed_00001.jpg" in message and "partial" in message
    assert not (tmp_path / "out").exists()


def test_truncated_archive(data_make_raw, tmp_path):
    raw, _ = data_make_raw()
    data = (raw / "car_ims.tgz").read_bytes()
    (raw / "car_ims.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataPreparationError, match="car_ims.tgz is truncated or corrupt"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out.*")) == []


def exif_mm(tag: int) -> bytes:
    """An APP1 Exif payload in big-endian (Motorola) byte order, as many cameras write it: orientation only."""
    entry = (0x0112).to_bytes(2, "big") + (3).to_bytes(2, "big") + (1).to_bytes(4, "big") + tag.to_bytes(2, "big")
    return b"Exif\0\0MM\0*" + (8).to_bytes(4, "big") + (1).to_bytes(2, "big") + entry + bytes(2) + bytes(4)


def test_exif_orientation_of_raw_jpegs_is_set_to_1_and_boxes_stay_on_the_stored_pixels(data_make_raw, tmp_path):
    raw, generated = data_make_raw(layout="original", archives=False)
    tagged = {"00001.jpg": 6, "00002.jpg": 8}
    for (name, tag), byte_order in zip(tagged.items(), ("II", "MM")):
        with Image.open(raw / "cars_train" / name) as image:
            exif = Image.Exif()
            exif[0x0112] = tag
            payload = exif.tobytes() if byte_order == "II" else exif_mm(tag)
            image.save(raw / "cars_train" / name, quality=95, exif=payload)
        with Image.open(raw / "cars_train" / name) as image:
            assert image.getexif()[0x0112] == tag
    summary = prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert summary.oriented_images == 2
    truth = {im.name: im for im in generated.images if im.split == "train"}
    rows = {r["image_fname"]: r for r in read_csv(tmp_path / "out" / "train_labels.csv")}
    for name in tagged:
        before, after = (raw / "cars_train" / name).read_bytes(), (tmp_path / "out" / "train" / name).read_bytes()
        assert len(before) == len(after) and sum(a != b for a, b in zip(before, after)) == 1
        box = tuple(int(rows[name][k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
        with Image.open(tmp_path / "out" / "train" / name) as image:
            assert image.getexif()[0x0112] == 1 and image.size == truth[name].size and box == truth[name].box
            assert_box_colour(image.convert(image.mode), box, truth[name].class_id)


def test_every_unusable_image_is_named_with_its_reason(data_make_raw, tmp_path, capsys):
    raw, _ = data_make_raw(layout="original", archives=False)
    train = raw / "cars_train"
    (train / "00003.jpg").write_bytes((train / "00003.jpg").read_bytes()[:-300])
    Image.new("RGB", (60, 40), "red").save(train / "00004.jpg", format="GIF")
    Image.new("RGB", (60, 40), "red").save(train / "00005.jpg", format="WEBP")
    Image.new("RGB", (1, 1), "red").save(train / "00006.jpg")
    Image.new("1", (14000, 14000)).save(raw / "cars_test" / "00001.jpg", format="PNG")
    with pytest.raises(DataPreparationError) as error:
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    message = str(error.value)
    assert "5 raw image(s) cannot be used" in message and "partial" in message
    for line in (f"{train}:00003.jpg truncated or damaged image file", f"{train}:00004.jpg is a GIF image, not a JPEG",
                 f"{train}:00005.jpg is a WEBP image, not a JPEG", f"{train}:00006.jpg is only 1x1 pixels",
                 f"{raw / 'cars_test'}:00001.jpg over Pillow's decompression-bomb limit"):
        assert line in message
    assert not (tmp_path / "out").exists()
    assert script.main(["--raw", str(raw), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "\nerror: 5 raw image(s) cannot be used" in err and "Traceback" not in err


def write_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_unsafe_archive_members_are_refused(data_make_raw, tmp_path, kind):
    raw, _ = data_make_raw()
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    bad = tarfile.TarInfo({"dotdot": "car_ims/../../evil.jpg", "absolute": "/tmp/evil.jpg"}.get(kind, "car_ims/evil.jpg"))
    if kind == "symlink":
        bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        bad.type, bad.linkname = tarfile.LNKTYPE, "/etc/passwd"
    elif kind == "device":
        bad.type = tarfile.CHRTYPE
    members: list = [bad] if kind not in ("dotdot", "absolute") else [(bad.name, jpeg.getvalue())]
    with tarfile.open(raw / "car_ims.tgz") as original:
        members += [(m.name, original.extractfile(m).read()) for m in original if m.isfile()]
    write_tar(raw / "car_ims.tgz", members)
    with pytest.raises(DataPreparationError, match="refusing archive member"):
        prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "out").exists()


def test_interrupted_prepare_leaves_no_partial_output(data_make_raw, tmp_path, monkeypatch):
    raw, _ = data_make_raw()
    real_write = preparation.write_labels
    calls = []

    def fail_on_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(*args)

    monkeypatch.setattr(preparation, "write_labels", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        prepare_stanford_dataset(raw, tmp_path / "data" / "out", progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_existing_data_kept_without_force_and_replaced_only_when_complete(data_make_raw, tmp_path, monkeypatch):
    raw, _ = data_make_raw()
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_labels.csv").write_text("earlier labels")
    with pytest.raises(DataPreparationError, match="already exists.*--force"):
        prepare_stanford_dataset(raw, out, progress=False)
    assert (out / "train_labels.csv").read_text() == "earlier labels"

    def broken(*args):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(preparation, "write_labels", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            prepare_stanford_dataset(raw, out, force=True, progress=False)
    assert (out / "train_labels.csv").read_text() == "earlier labels"
    prepare_stanford_dataset(raw, out, force=True, progress=False)
    assert (out / "train_labels.csv").read_text().startswith("image_fname")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_force_replaces_only_prepared_data_and_never_the_raw_files(data_make_raw, tmp_path):
    raw, _ = data_make_raw()
    raw_files = sorted(p.name for p in raw.iterdir())
    for out in (raw, tmp_path):
        with pytest.raises(DataPreparationError, match="holds the raw data folder"):
            prepare_stanford_dataset(raw, out, force=True, progress=False)
    assert sorted(p.name for p in raw.iterdir()) == raw_files
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("mine")
    with pytest.raises(DataPreparationError, match=r"not prepared data \(it holds thesis.txt\)"):
        prepare_stanford_dataset(raw, documents, force=True, progress=False)
    assert (documents / "thesis.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_stanford_dataset(raw, empty, progress=False).num_train > 0


def test_script_reads_config_and_writes_archive(data_make_raw, tmp_path, capsys):
    raw, _ = data_make_raw()
    config = tmp_path / "config.yml"
    config.write_text(f"stanford_raw_data_path: {raw}\nstanford_data_path: {tmp_path / 'input' / 'stanford'}\n"
                      "architecture: ghost\n")
    assert script.main(["-c", str(config), "--archive"]) == 0
    archive = tmp_path / "input" / "stanford.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"train", "test", "train_labels.csv", "test_labels.csv"} <= names
    assert len([n for n in names if n.startswith("train/")]) == 12
    assert script.main(["-c", str(config)]) == 1
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(DataPreparationError, match="already exists"):
        make_data_archive(tmp_path / "input" / "stanford", archive)
    assert script.main(["-c", str(tmp_path / "missing.yml"), "--raw", str(raw)]) == 1
    err = capsys.readouterr().err
    assert "config file" in err and "--raw and --out" in err
    assert script.main(["-c", str(tmp_path / "missing.yml"), "--raw", str(raw), "--out", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2" / "test_labels.csv").is_file()


def test_missing_raw_data_says_where_stanford_cars_comes_from_and_how_to_give_it(tmp_path, capsys):
    config = tmp_path / "config.yml"
    config.write_text(f"stanford_raw_data_path: {tmp_path / 'raw'}\nstanford_data_path: {tmp_path / 'out'}\n")
    assert script.main(["-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"raw data folder {tmp_path / 'raw'} does not exist (from stanford_raw_data_path in {config})" in err
    (tmp_path / "empty").mkdir()
    assert script.main(["--raw", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    empty = capsys.readouterr().err
    assert "no Stanford Cars raw files found" in empty and f"(from --raw {tmp_path / 'empty'})" in empty
    for message in (err, empty):
        assert "not downloaded by this project" in message and "docs/data.md" in message
        assert "python prepare_stanford_dataset.py --raw FOLDER" in message and "make demo" in message
    assert not (tmp_path / "out").exists()


def test_script_checks_archive_and_config_before_preparing(data_make_raw, tmp_path, capsys):
    raw, _ = data_make_raw()
    (tmp_path / "o3.tar.gz").write_text("an earlier archive")
    assert script.main(["--raw", str(raw), "--out", str(tmp_path / "o3"), "--archive"]) == 1
    assert "o3.tar.gz already exists" in capsys.readouterr().err
    (tmp_path / "o4.tar.gz").mkdir()
    assert script.main(["--raw", str(raw), "--out", str(tmp_path / "o4"), "--archive", "--force"]) == 1
    assert "o4.tar.gz is a folder" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()
    config = tmp_path / "config.yml"
    config.write_text("stanford_data_path: [1]\n")
    assert script.main(["-c", str(config), "--raw", str(raw)]) == 1
    assert "stanford_data_path: expected string" in capsys.readouterr().err


def test_class_names_fall_back_to_cars_annos_when_devkit_absent(data_make_raw, tmp_path):
    raw, _ = data_make_raw()
    (raw / "car_devkit.tgz").unlink()
    prepare_stanford_dataset(raw, tmp_path / "out", progress=False)
    assert read_csv(tmp_path / "out" / "train_labels.csv")[0]["class_name"].startswith("Synthetic")
    mat = scipy.io.loadmat(raw / "cars_annos.mat")
    (raw / "cars_annos.mat").write_bytes(mat_bytes(annotations=mat["annotations"]))
    with pytest.raises(DataPreparationError, match="car_devkit.tgz"):
        prepare_stanford_dataset(raw, tmp_path / "out2", progress=False)
