"""Checkpoints are read weights_only: what training writes (every optimizer and scheduler, the thesis's lr_lambda
texts, the template's options) loads that way, and a checkpoint holding anything else is refused before any work,
naming the file and what it holds, unless --trust-checkpoint."""

import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import evaluate
import export_model
import predict
import train
from models.optimization import optimization_problems, optimizer_names, scheduler_names
from tests.test_training_module import fit
from utils.checkpoint_safety import CheckpointError, check_resume_checkpoint, load_checkpoint
from utils.config import Config
from utils.runs.thesis import load_thesis_runs, thesis_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"
# Optimizers that train none of this project's networks (the checks below show it): left out of the pairs.
UNTRAINABLE = ("Muon", "SparseAdam")
OPTIMIZER_PARAMS = {"ASGD": {"lr": 0.01}, "LBFGS": {"lr": 0.1, "max_iter": 2}, "SGD": {"lr": 0.1, "momentum": 0.9}}
SCHEDULER_PARAMS = {
    "CosineAnnealingLR": {"T_max": 2}, "CosineAnnealingWarmRestarts": {"T_0": 1},
    "CyclicLR": {"base_lr": 0.01, "max_lr": 0.1, "cycle_momentum": False}, "ExponentialLR": {"gamma": 0.9},
    "MultiStepLR": {"milestones": [1]}, "MultiplicativeLR": {"lr_lambda": "0.9 + 0 * epoch"},
    "OneCycleLR": {"max_lr": 0.1, "total_steps": 4}, "ReduceLROnPlateau": {"patience": 0}, "StepLR": {"step_size": 1},
    "SequentialLR": {"schedulers": [{"LinearLR": {"total_iters": 1}}, {"LambdaLR": {"lr_lambda": "0.9 ** epoch"}}],
                     "milestones": [1]}}


def thesis_lambdas() -> list[str]:
    """The lr_lambda texts of the thesis's LambdaLR runs (Python lambda source)."""
    texts = {(thesis_config(run).get("lr_scheduler_params") or {}).get("lr_lambda")
             for run in load_thesis_runs().values()}
    return sorted(texts - {None})


def training_pairs() -> list[tuple[str, str, dict | None]]:
    """Each trainable optimizer and each scheduler (LambdaLR with every thesis text) at least once, paired."""
    optimizers = [name for name in optimizer_names() if name not in UNTRAINABLE]
    schedulers = [(name, SCHEDULER_PARAMS.get(name)) for name in scheduler_names() if name != "LambdaLR"]
    schedulers += [("LambdaLR", {"lr_lambda": text}) for text in thesis_lambdas()]
    count = max(len(optimizers), len(schedulers))
    return [(optimizers[i % len(optimizers)], *schedulers[i % len(schedulers)]) for i in range(count)]


def test_the_pairs_cover_every_scheduler_and_the_left_out_optimizers_cannot_train(tmp_path):
    pairs = training_pairs()
    assert {name for _, name, _ in pairs} == set(scheduler_names()) and len(thesis_lambdas()) == 4
    assert {name for name, _, _ in pairs} == set(optimizer_names()) - set(UNTRAINABLE)
    assert "Muon only supports 2D parameters" in optimization_problems(Config(optimizer="Muon",
                                                                              optimizer_params=None))[0]
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        fit(tmp_path, num_epochs=1, optimizer="SparseAdam", optimizer_params=None)


@pytest.mark.parametrize("optimizer, scheduler, params", training_pairs(),
                         ids=[f"{o}-{s}-{i}" for i, (o, s, _) in enumerate(training_pairs())])
def test_checkpoints_of_every_optimizer_and_scheduler_load_weights_only(tmp_path, optimizer, scheduler, params):
    summary, _ = fit(tmp_path, num_epochs=2, optimizer=optimizer,
                     optimizer_params=OPTIMIZER_PARAMS.get(optimizer, {"lr": 0.01}), lr_scheduler=scheduler,
                     lr_scheduler_params=params)
    assert summary["state"] == "finished", summary.get("error")
    run_dir = tmp_path / "run"
    for name in ("best.ckpt", "last.ckpt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(run_dir / name) == []
        checkpoint = load_checkpoint(run_dir / name)  # weights_only
        assert checkpoint["hyper_parameters"]["optimizer"] == optimizer
        if scheduler == "LambdaLR":  # the expression's text, never a function
            assert checkpoint["lr_schedulers"][0]["lr_lambdas"] == [{"expression": params["lr_lambda"]}]
    check_resume_checkpoint(run_dir / "last.ckpt", run_dir)


# ---- a train.py run of the template, and copies of it as they could arrive from someone else ----


def train_tiny_run(data: Path, folder: Path, *settings: str) -> Path:
    """The run folder of a train.py run of the template on tiny images, records under folder."""
    args = ["-c", str(TEMPLATE), "-d", str(data)]
    for setting in ["image_size=[32, 32]", "batch_size=8", "num_workers=0", "output_channels=64", "accelerator=cpu",
                    f"output_path={folder / 'output'}", f"logging_dir={folder / 'logs'}", "log_to_mlflow=false",
                    *settings]:
        args += ["--set", setting]
    assert train.main(args) == 0
    (run_dir,) = (folder / "output").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def template_run(make_prepared, tmp_path_factory, one_torch_thread):
    """(prepared data, run folder) of a train.py run of the template with the options that shape checkpoints."""
    data = make_prepared("checkpoint_data", num_classes=4, images_per_class=6, min_width=40, max_width=64)
    tmp = tmp_path_factory.mktemp("template_run")
    return data, train_tiny_run(
        data, tmp, "num_epochs=2", "lr_scheduler=LambdaLR",
        f"lr_scheduler_params={{lr_lambda: '{thesis_lambdas()[-1]}'}}", "precision=bf16-mixed", "channels_last=true",
        "early_stopping_patience=4", "augment_tensors=true", "tensor_augmentations={RandomErasing: {}}",
        "loss_params={epsilon: 0.2}", "cache_images=true", f"cache_path={tmp / 'cache'}")


class ShellCommand:
    """Pickled as a call of os.system: unpickling it with pickle's full power runs the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of everything under folder (links not followed)."""
    return {str(path.relative_to(folder)): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in folder.rglob("*")}


def received(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the run as a colleague could send it."""
    copy = tmp_path / "received" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


def with_payload(run_dir: Path, marker: Path) -> None:
    """Put an object that runs `touch marker` when unpickled into both checkpoints."""
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = load_checkpoint(run_dir / name)
        checkpoint["note"] = ShellCommand(f"touch {shlex.quote(str(marker))}")
        torch.save(checkpoint, run_dir / name)


def commands(run_dir: Path, data: Path) -> dict[str, tuple]:
    """(script, arguments, checkpoint read) of each command that reads a run's checkpoint."""
    image = next((data / "test").iterdir())
    return {"predict": (predict, [run_dir, image], "best.ckpt"), "evaluate": (evaluate, [run_dir], "best.ckpt"),
            "export": (export_model, [run_dir, "--format", "onnx"], "best.ckpt"),
            "resume": (train, ["--resume", run_dir, "--set", "num_epochs=3"], "last.ckpt")}


def test_the_template_run_loads_weights_only_and_resumes(template_run, tmp_path, capsys):
    data, run_dir = template_run
    for name in ("best.ckpt", "last.ckpt"):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(run_dir / name) == []
        assert load_checkpoint(run_dir / name)["hyper_parameters"]["lr_scheduler_params"] == {
            "lr_lambda": thesis_lambdas()[-1]}
    copy = received(run_dir, tmp_path)
    script, argv, _ = commands(copy, data)["predict"]
    assert script.main([str(a) for a in argv]) == 0
    assert train.main(["--resume", str(copy), "--set", "num_epochs=3"]) == 0  # Lightning loads it weights_only
    assert load_checkpoint(copy / "last.ckpt")["epoch"] == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "resume"])
def test_a_checkpoint_holding_code_is_refused_before_any_work(template_run, tmp_path, capsys, command):
    data, run_dir = template_run
    copy, marker = received(run_dir, tmp_path), tmp_path / "payload_ran"
    with_payload(copy, marker)
    before, original = snapshot(tmp_path), snapshot(run_dir)
    script, argv, checkpoint = commands(copy, data)[command]
    assert script.main([str(a) for a in argv]) == 2
    error = capsys.readouterr().err
    assert f"{copy / checkpoint}: holds an object of type posix.system" in error
    assert "loading it would run code from the file" in error and "--trust-checkpoint" in error
    assert "Traceback" not in error and not marker.exists()
    assert snapshot(tmp_path) == before and snapshot(run_dir) == original  # nothing written anywhere


def test_trust_checkpoint_loads_it_anyway(template_run, tmp_path, capsys):
    data, run_dir = template_run
    copy, marker = received(run_dir, tmp_path), tmp_path / "payload_ran"
    with_payload(copy, marker)
    script, argv, _ = commands(copy, data)["predict"]
    assert script.main([str(a) for a in [*argv, "--trust-checkpoint"]]) == 0
    assert marker.exists()  # what trusting a file means: its pickle ran
    assert "class" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.parse_args(["--trust-checkpoint"])  # only with --resume
    assert "--trust-checkpoint goes with --resume" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_whose_state_would_delete_a_file_outside_the_run(template_run, tmp_path, capsys):
    """Lightning deletes the 'previous' checkpoint a ModelCheckpoint state names when it lies under the run folder
    as written: '..' makes such a path point anywhere."""
    _, run_dir = template_run
    copy, victim = received(run_dir, tmp_path), tmp_path / "victim.txt"
    victim.write_text("someone's work")
    checkpoint = load_checkpoint(copy / "last.ckpt")
    for key, state in checkpoint["callbacks"].items():
        if key.startswith("ModelCheckpoint"):
            state["best_model_path"] = f"{copy.resolve()}/../../victim.txt"
    torch.save(checkpoint, copy / "last.ckpt")
    assert train.main(["--resume", str(copy), "--set", "num_epochs=3"]) == 2
    error = capsys.readouterr().err
    assert f"{copy / 'last.ckpt'}: its ModelCheckpoint state names files for Lightning to delete" in error
    assert "victim.txt' leads outside the run folder" in error and victim.read_text() == "someone's work"
    checkpoint["callbacks"] = {"ModelCheckpoint{}": {"best_model_path": "s3://bucket/work.ckpt"}}
    torch.save(checkpoint, copy / "last.ckpt")
    with pytest.raises(CheckpointError, match="'s3://bucket/work.ckpt' is a remote location"):
        check_resume_checkpoint(copy / "last.ckpt", copy)


def test_damaged_checkpoints_are_named_not_tracebacks(tmp_path):
    path = tmp_path / "best.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        check_resume_checkpoint(path, tmp_path)
