"""A Lightning callback that records what each rank of a run trains with, one JSON file per rank and fit.

Tests load it into the processes they start through Lightning's own extension point, the entry point group
``pytorch_lightning.callbacks_factory`` (``probe_path`` writes the package metadata that declares it); the run's
code is not changed. It writes under $RANK_PROBE_DIR: the rank, the world size, the run folder, the seed of the
process and of the training sampler, and the optimizer's configured learning rate.
"""

import json
import os
from pathlib import Path

from pytorch_lightning.callbacks import Callback

PROBE_DIR_ENV = "RANK_PROBE_DIR"


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


def callbacks():
    """The entry point: a probe only where the test asked for one."""
    return [RankProbe()] if os.environ.get(PROBE_DIR_ENV) else []


def probe_path(folder: Path) -> Path:
    """A folder for PYTHONPATH whose package metadata declares the probe to Lightning."""
    info = folder / "rank_probe-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rank-probe\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pytorch_lightning.callbacks_factory]\nrank_probe = rank_probe:callbacks\n")
    return folder


def read_probes(folder: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
