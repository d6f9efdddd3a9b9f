"""The synthetic Stanford-format generator and its command line."""

from __future__ import annotations

import re
import tarfile
import zipfile
from pathlib import Path

import pytest
import scipy.io

from datasets.synthetic import class_name, generate_synthetic_stanford, main, narrow_uint


def test_cli_writes_original_layout_and_refuses_overwrite(tmp_path, capsys):
    main([str(tmp_path / "raw"), "--layout", "original", "--classes", "3", "--per-class", "4", "--workers", "2"])
    assert "wrote 12 images of 3 classes" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "raw").iterdir())
    assert names == ["car_devkit.tgz", "cars_test.tgz", "cars_test_annos_withlabels.mat", "cars_train.tgz"]
    with tarfile.open(tmp_path / "raw" / "car_devkit.tgz") as devkit:
        assert set(devkit.getnames()) >= {"devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
                                          "devkit/cars_test_annos.mat", "devkit/README.txt"}
        test_annos = scipy.io.loadmat(devkit.extractfile("devkit/cars_test_annos.mat"))["annotations"]
    assert "class" not in test_annos.dtype.names and test_annos.shape == (1, 6)
    with tarfile.open(tmp_path / "raw" / "cars_train.tgz") as train:
        assert train.getnames()[:2] == ["cars_train", "cars_train/00001.jpg"]
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        main([str(tmp_path / "raw"), "--layout", "original"])


def test_cli_writes_kaggle_class_folder_layout(tmp_path, capsys):
    main([str(tmp_path / "raw"), "--layout", "class_folders", "--classes", "3", "--per-class", "4"])
    assert "wrote 12 images of 3 classes (class_folders layout)" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "raw" / "archive.zip") as archive:
        names = archive.namelist()
        train_rows = archive.read("anno_train.csv").decode().splitlines()
        class_names = archive.read("names.csv").decode().splitlines()
    assert class_names == [class_name(c) for c in (1, 2, 3)]
    assert len(train_rows) == 6 and re.fullmatch(r"00001\.jpg,\d+,\d+,\d+,\d+,[123]", train_rows[0])
    class_id = int(train_rows[0].rsplit(",", 1)[1])
    assert f"car_data/train/{class_name(class_id)}/00001.jpg" in names
    main([str(tmp_path / "folders"), "--layout", "class_folders", "--folders", "--kaggle", "--classes", "3",
          "--per-class", "4"])
    assert (tmp_path / "folders" / "car_data" / "car_data" / "train" / class_name(class_id) / "00001.jpg").is_file()
    assert sorted(p.name for p in (tmp_path / "folders").iterdir()) == ["anno_test.csv", "anno_train.csv", "car_data",
                                                                        "names.csv"]


def test_narrowest_types_and_stanford_sizes(tmp_path):
    assert narrow_uint(255).dtype.name == "uint8" and narrow_uint(256).dtype.name == "uint16"
    result = generate_synthetic_stanford(tmp_path, num_classes=1, images_per_class=2, min_width=480, max_width=900)
    assert all(480 <= im.size[0] <= 900 and 288 <= im.size[1] <= 675 for im in result.images)
    with pytest.raises(ValueError, match="layout"):
        generate_synthetic_stanford(tmp_path / "x", layout="kaggle")


def _file_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("layout, archives", [("updated", True), ("original", False), ("class_folders", True)])
def test_any_number_of_workers_writes_the_same_bytes(tmp_path, layout, archives):
    kwargs = dict(layout=layout, num_classes=3, images_per_class=4, archives=archives, seed=11)
    one = generate_synthetic_stanford(tmp_path / "one", workers=1, **kwargs)
    two = generate_synthetic_stanford(tmp_path / "two", workers=2, **kwargs)
    assert one.images == two.images
    files = _file_bytes(tmp_path / "one")
    assert len(files) >= (1 if layout == "class_folders" else 3) and files == _file_bytes(tmp_path / "two")
    with pytest.raises(ValueError, match="workers must be at least 1"):
        generate_synthetic_stanford(tmp_path / "none", workers=0)
