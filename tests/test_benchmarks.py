"""Each benchmark the README quotes runs to its table at a tiny size (the figures themselves are not checked: a
benchmark's numbers belong in the README, not in assertions). A GPU session has minutes: a benchmark broken by a
change elsewhere must fail here first."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# benchmark -> (tiny arguments, with {work} for a scratch folder; a line its table prints)
BENCHMARKS = {
    "epoch_time": (["--train", "8", "--test", "8", "--epochs", "1", "--settings", "1,3", "--workers", "0",
                    "--generate-workers", "1", "--work", "{work}", "--out", "{work}"],
                   "| reference-like (no cache, CPU aug, fp32) |"),
    "loader": (["--images", "8", "--workers", "0", "--generate-workers", "1", "--work", "{work}"],
               "| cache + CPU aug (torchvision, per image) | 0 |"),
    "host_overhead": (["--steps", "10", "--rounds", "1"], "| self.log every step (before) |"),
    "learning_curve": (["--classes", "2", "--per-class", "4", "--epochs", "1", "--seeds", "2", "--image-size", "32",
                        "--precision", "32", "--workers", "0", "--work", "{work}"], "Welch's t-test"),
    "train_step": (["--batch-size", "2", "--image-size", "64", "--rounds", "1", "--steps", "1", "--warmup", "1",
                    "--threads", "1"], "| timm ghostnet_100 |"),
    "data_pipeline": (["--images", "8", "--repeats", "1", "--work", "{work}"], "| pipeline | images/s |"),
    "mlflow_logging": (["--epochs", "2"], "| store | per epoch, median |"),
    "sweep_overhead": (["--runs", "1", "--size", "32", "--work", "{work}"], "worker start-up (launch to first trial)"),
    "deploy": (["--image-size", "32", "--num-classes", "4", "--architectures", "sq_10", "sq_11",
                "--repeats", "2", "--calibration-images", "2", "--work", "{work}/exports"], "| sq_11 |"),
    "busy_cpu": (["--epochs", "1", "--classes", "2", "--per-class", "4", "--image-size", "32", "--hogs", "1",
                  "--work", "{work}"], "| auto |"),
    "cold_start": (["--repeats", "1", "--work", "{work}"], "| `predict.py RUN PHOTO` |"),
    "recipes": (["--epochs", "1", "--seeds", "2", "--size", "16", "--per-class", "4", "--jobs", "1",
                 "--arms", "ghost,mixup_alpha: 0.2", "--work", "{work}"], "| mixup_alpha: 0.2 | `mixup_alpha=0.2` |"),
}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_to_its_table(name, tmp_path, capsys, monkeypatch):
    """Each benchmark's main, called in-process (the processes a benchmark starts itself are real)."""
    arguments, expected = BENCHMARKS[name]
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # recipes sets it for its jobs
    importlib.import_module(f"benchmarks.{name}").main([part.format(work=tmp_path) for part in arguments])
    output = capsys.readouterr()
    assert expected in output.out, (output.out + output.err)[-3000:]


def test_the_recipes_table_goes_between_its_markers_and_a_page_without_them_is_refused():
    from benchmarks.recipes import TABLE_END, TABLE_START, with_table

    page = f"# page\n{TABLE_START}\n| old |\n{TABLE_END}\nafter\n"
    assert with_table(page, "| new |\n", Path("p.md")) == f"# page\n{TABLE_START}\n| new |\n{TABLE_END}\nafter\n"
    with pytest.raises(ValueError, match="p.md needs one"):
        with_table(f"# page\n{TABLE_END}\n{TABLE_START}\n", "| new |", Path("p.md"))


def test_docs_recipes_holds_the_measured_table_of_every_arm():
    from benchmarks.recipes import BASE_ARM, OPTIONS, TABLE_END, TABLE_START

    page = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    section = page[page.index(TABLE_START):page.index(TABLE_END)]
    assert "with `python -m benchmarks.recipes " in section and " cores" in section
    for arm in ["ghost", BASE_ARM, *OPTIONS]:
        assert f"| {arm} |" in section, arm
