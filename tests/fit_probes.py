"""Lightning callbacks that tests load into the processes they start, through Lightning's own extension point, the
entry point group ``pytorch_lightning.callbacks_factory`` (``fit_env`` writes the package metadata that declares
them and puts it on PYTHONPATH); the run's code is not changed.

- ``RankProbe`` (with $RANK_PROBE_DIR) records what each rank trains with, one JSON file per rank and fit: the rank,
  the world size, the run folder, the seed of the process and of the training sampler, and the configured
  learning rate.
- ``EpochGate`` (with $EPOCH_GATE = "N:folder") holds rank 0 before its epoch N+1 until folder/release exists,
  and names the run folder it holds in folder/held/, so a test can signal or kill a run that has N epochs recorded
  and checkpointed, however fast the machine trains. It lets go at SIGTERM as a batch would end, and ends the process
  after HOLD_LIMIT_S (its test failed before releasing it). Other ranks wait for rank 0 in their next collective,
  as they would behind a slow rank 0.
"""

import json
import os
import sys
import time
from pathlib import Path

from pytorch_lightning.callbacks import Callback

PROBE_DIR_ENV = "RANK_PROBE_DIR"
GATE_ENV = "EPOCH_GATE"
HOLD_LIMIT_S = 600


class RankProbe(Callback):
    def on_train_start(self, trainer, pl_module):
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "pid": os.getpid(),
                  "run_dir": str(Path(trainer.default_root_dir).resolve()), "seed": os.environ.get("PL_GLOBAL_SEED"),
                  "sampler": type(sampler).__name__, "sampler_seed": getattr(sampler, "seed", None),
                  "lr": trainer.optimizers[0].defaults["lr"], "epoch": trainer.current_epoch}
        folder = Path(os.environ[PROBE_DIR_ENV])
        name = f"rank{trainer.global_rank}-{os.getpid()}-{len(list(folder.glob('*.json')))}.json"
        (folder / name).write_text(json.dumps(record))


class EpochGate(Callback):
    def __init__(self, epochs: int, folder: Path):
        self.epochs = epochs
        self.folder = folder

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.global_rank != 0 or trainer.current_epoch < self.epochs or (self.folder / "release").exists():
            return
        (self.folder / "held").mkdir(exist_ok=True)
        (self.folder / "held" / str(os.getpid())).write_text(str(Path(trainer.default_root_dir).resolve()))
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not (self.folder / "release").exists() and not trainer.received_sigterm:
            if time.monotonic() > deadline:  # its test failed before releasing it: leave no process behind
                print(f"fit_probes: held {HOLD_LIMIT_S} s and never released; exiting", file=sys.stderr, flush=True)
                os._exit(75)
            time.sleep(0.05)  # Ctrl-C raises here; SIGTERM only sets the flag, which the loop reads after a batch


def callbacks():
    """The entry point: the probe and the gate only where the test asked for them."""
    found = [RankProbe()] if os.environ.get(PROBE_DIR_ENV) else []
    if os.environ.get(GATE_ENV):
        epochs, folder = os.environ[GATE_ENV].split(":", 1)
        found.append(EpochGate(int(epochs), Path(folder)))
    return found


def fit_env(folder: Path, probes: Path | None = None, hold_after: int | None = None) -> dict[str, str]:
    """The environment for a test's training processes: one thread each, the package metadata that declares these
    callbacks to Lightning on PYTHONPATH, the probe writing into probes, and the gate holding rank 0 after
    hold_after epochs (see held) until release(folder) is called."""
    info = folder / "fit_probes-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fit-probes\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytorch_lightning.callbacks_factory]\nfit_probes = fit_probes:callbacks\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(folder), str(root / "tests"), str(root)])}
    if probes is not None:
        probes.mkdir(exist_ok=True)
        env[PROBE_DIR_ENV] = str(probes)
    if hold_after is not None:
        env[GATE_ENV] = f"{hold_after}:{folder}"
    return env


def held(folder: Path) -> dict[int, Path]:
    """The processes the gate holds now or held: pid -> the run folder."""
    marks = folder / "held"
    return {int(path.name): Path(path.read_text()) for path in marks.iterdir()} if marks.is_dir() else {}


def release(folder: Path) -> None:
    """Let every run held by fit_env(folder, hold_after=...) go on."""
    (folder / "release").touch()


def read_probes(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
