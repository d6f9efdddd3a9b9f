"""Prepare raw Stanford Cars files for training: ``python prepare_stanford_dataset.py [-c config.yml]``.

Reads ``stanford_raw_data_path`` and ``stanford_data_path`` from the config; ``--raw`` / ``--out``
override them (with both given, no config is needed).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from datasets.preparation import (DataPreparationError, check_archive_target, default_archive_path, make_data_archive,
                                  prepare_stanford_dataset)
from datasets.raw.files import RawDataMissing
from utils.config import ConfigError, load_config


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", default="config.yml", help="config file (default: config.yml)")
    parser.add_argument("--raw", help="folder with the raw files (overrides stanford_raw_data_path)")
    parser.add_argument("--out", help="folder for the prepared data (overrides stanford_data_path)")
    parser.add_argument("--force", action="store_true", help="replace existing prepared data (and archive)")
    parser.add_argument("--archive", action="store_true",
                        help="also write <out>.tar.gz of train/, test/ and the label CSVs (for Colab)")
    return parser.parse_args(argv)


def config_paths(config_path: str, need_config: bool) -> dict[str, Any]:
    """The two path keys of the validated config file ({} when the file is absent and not needed)."""
    path = Path(config_path)
    if not path.is_file():
        if need_config:
            raise DataPreparationError(
                f"config file {path} not found; create it from config_template.yml or pass both --raw and --out"
            )
        return {}
    config = load_config(path)
    return {"stanford_raw_data_path": config.stanford_raw_data_path, "stanford_data_path": config.stanford_data_path}


def where_to_get_it(args: argparse.Namespace) -> str:
    """Where the raw folder was named, where Stanford Cars comes from, and how to give its folder."""
    given = f"--raw {args.raw}" if args.raw else f"stanford_raw_data_path in {args.config}"
    return (f" (from {given})\nStanford Cars (16,185 photos of 196 car models) is not downloaded by this project: get "
            "it from a mirror (torchvision's StanfordCars files, or a Kaggle copy; docs/data.md lists the three layouts "
            "it comes in), put its files in one folder and give that folder: python prepare_stanford_dataset.py --raw "
            "FOLDER. To try the project without it: make demo")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_paths(args.config, need_config=args.raw is None or args.out is None)
        raw = args.raw or config.get("stanford_raw_data_path")
        out = args.out or config.get("stanford_data_path")
        for value, key in ((raw, "stanford_raw_data_path"), (out, "stanford_data_path")):
            if not value:
                raise DataPreparationError(f"{args.config}: {key} is not set")
        if args.archive:
            check_archive_target(default_archive_path(out), force=args.force)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            summary = prepare_stanford_dataset(raw, out, force=args.force)
        print(f"prepared {summary.num_train} train and {summary.num_test} test images of {summary.num_classes} "
              f"classes ({summary.layout} layout) in {summary.out_path}")
        for note in summary.notes:
            print(f"note: {note}")
        if summary.oriented_images:
            print(f"{summary.oriented_images} image(s) carried an EXIF orientation tag; it is set to 1 in the copies "
                  "(pixels untouched), as Stanford's boxes refer to the stored pixels")
        if args.archive:
            archive = make_data_archive(out, default_archive_path(out), force=args.force)
            print(f"wrote {archive}")
    except RawDataMissing as error:
        print(f"error: {error}{where_to_get_it(args)}", file=sys.stderr)
        return 1
    except (DataPreparationError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
