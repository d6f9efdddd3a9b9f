"""The one checkpoint reader: a checkpoint is compared with the network the run's config builds before torch
allocates any of it, so a crafted file costs at most about the network's size, and is refused naming the file.

Crafted files are written here in torch.save's zip format (data.pkl naming storage records, one record per tensor),
so that a file can declare a tensor far larger than what it holds, or hold a compressed record, without the test
allocating it. Memory is measured with resource.getrusage in a subprocess under an address-space limit."""

import collections
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from models.arch_dict import build_network
from models.run_loading import load_trained_model
from utils.checkpoint_safety import CheckpointError, check_resume_checkpoint, read_index

ROOT = Path(__file__).resolve().parents[1]
NETWORK = {"architecture": "ghost", "num_classes": 3, "img_channels": 3, "dropout": 0.2, "output_channels": 64}
GIB = 2**30


class _Storage:
    def __init__(self, key: str, storage_type: type, numel: int):
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _Tensor:
    """A tensor as torch.save pickles it: a rebuild call naming its storage; the storage may be larger than any
    bytes written for it (the file then declares what it does not hold)."""

    def __init__(self, storage: _Storage, shape: tuple[int, ...]):
        self.storage, self.shape = storage, shape

    def __reduce_ex__(self, protocol):
        stride = tuple(int(torch.tensor(self.shape[i + 1:]).prod()) for i in range(len(self.shape)))
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, self.shape, stride, False, collections.OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def write_checkpoint(path: Path, content: dict, records: dict[str, bytes | int], compressed: set[str] = frozenset()):
    """A zip file as torch.save writes it; a record given as an int is that many zero bytes, written in chunks."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(content)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, data in records.items():
            method = zipfile.ZIP_DEFLATED if key in compressed else zipfile.ZIP_STORED
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as member:
                if isinstance(data, int):
                    chunk = bytes(min(data, 64 * 2**20))
                    for start in range(0, data, len(chunk)):
                        member.write(chunk[:data - start])
                else:
                    member.write(data)


def lightning_content(state: dict, num_classes: int, records: dict[str, bytes | int]) -> dict:
    """A checkpoint as train.py writes one (the parts the tools read), its tensors written to ``records``."""
    tensors = {}
    for name, value in state.items():
        key = str(len(records))
        kind = {torch.float32: torch.FloatStorage, torch.int64: torch.LongStorage}[value.dtype]
        records[key] = value.contiguous().numpy().tobytes()
        tensors[f"network.{name}"] = _Tensor(_Storage(key, kind, value.numel()), tuple(value.shape))
    return {"epoch": 0, "global_step": 1, "state_dict": collections.OrderedDict(tensors),
            "hyper_parameters": {"num_classes": num_classes}, "optimizer_states": [], "lr_schedulers": []}


@pytest.fixture(scope="module")
def network_state():
    torch.manual_seed(0)
    return build_network(NETWORK["architecture"], NETWORK["num_classes"], img_channels=3, dropout=0.2,
                         output_channels=NETWORK["output_channels"]).state_dict()


def crafted(path: Path, state: dict, num_classes: int = 3, extra: int | None = None, compressed: bool = False):
    records: dict[str, bytes | int] = {}
    content = lightning_content(state, num_classes, records)
    if extra is not None:  # an extra tensor of `extra` bytes beside the weights
        records["extra"] = extra
        content["extra"] = _Tensor(_Storage("extra", torch.FloatStorage, extra // 4), (extra // 4,))
    write_checkpoint(path, content, records, {"extra"} if compressed else set())
    return path


def load(path: Path):
    return load_trained_model(path, NETWORK["architecture"], 3, NETWORK["dropout"], NETWORK["output_channels"])


def test_a_file_written_like_torch_save_loads_into_the_network(network_state, tmp_path):
    trained = load(crafted(tmp_path / "good.ckpt", network_state))
    assert trained.num_classes == 3 and trained.epoch == 1 and trained.global_step == 1
    for name, value in trained.network.state_dict().items():
        torch.testing.assert_close(value, network_state[name], rtol=0, atol=0)


def test_the_index_describes_tensors_without_reading_them(network_state, tmp_path):
    path = crafted(tmp_path / "extra.ckpt", network_state, extra=64 * 2**20)
    index = read_index(path)
    assert index.content["extra"].shape == (16 * 2**20,) and index.content["extra"].dtype == "float32"
    assert index.storages["extra"].nbytes == 64 * 2**20
    assert index.content["state_dict"]["network.classifier.weight"].shape == (3, 64)


@pytest.mark.parametrize("num_classes", [2_000_000, 10**8])
def test_a_saved_num_classes_that_the_weights_do_not_have_is_refused(network_state, tmp_path, num_classes):
    path = crafted(tmp_path / "classes.ckpt", network_state, num_classes=num_classes)
    with pytest.raises(CheckpointError, match=rf"{path}: the weights do not fit .* {num_classes} classes .*"
                                              r"classifier.weight has shape \[3, 64\]"):
        load(path)


def test_records_that_are_compressed_or_larger_than_the_network_are_refused(network_state, tmp_path):
    compressed = crafted(tmp_path / "compressed.ckpt", network_state, extra=16 * 2**20, compressed=True)
    for read in (load, lambda path: check_resume_checkpoint(path, tmp_path)):
        with pytest.raises(CheckpointError, match=rf"{compressed}: .*data/extra is compressed"):
            read(compressed)
    large = crafted(tmp_path / "large.ckpt", network_state, extra=256 * 2**20)
    with pytest.raises(CheckpointError, match=rf"{large}: .* holds 2\d\d MiB of records for a network of"):
        load(large)


def test_a_record_of_another_size_than_its_index_declares_is_refused(network_state, tmp_path):
    records: dict[str, bytes | int] = {}
    content = lightning_content(network_state, 3, records)
    records["0"] = records["0"][:8]
    write_checkpoint(tmp_path / "short.ckpt", content, records)
    with pytest.raises(CheckpointError, match=r"short.ckpt: .*record data/0 holds 8 bytes, the index declares"):
        load(tmp_path / "short.ckpt")


MEASURE = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from tests.test_checkpoint_reading import NETWORK, load
from utils.checkpoint_safety import CheckpointError


def peak_kib():  # VmHWM: this process's own peak (ru_maxrss starts from the forking test process's)
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))


load(sys.argv[2])  # a normal checkpoint: the imports and one network
baseline = peak_kib()
results = {}
for path in sys.argv[3:]:
    try:
        load(path)
        results[path] = "loaded"
    except CheckpointError as error:
        results[path] = str(error)
print(json.dumps({"baseline_kib": baseline, "peak_kib": peak_kib(),
                  "results": results}))
"""


def test_crafted_checkpoints_cost_no_more_memory_than_a_normal_one(network_state, tmp_path):
    """The process is the point: its peak memory, under an address-space limit that the old reader exceeded."""
    good = crafted(tmp_path / "good.ckpt", network_state)
    hostile = [crafted(tmp_path / "classes_2m.ckpt", network_state, num_classes=2_000_000),
               crafted(tmp_path / "classes_1e8.ckpt", network_state, num_classes=10**8),
               crafted(tmp_path / "deflated_3gib.ckpt", network_state, extra=3 * GIB, compressed=True)]
    assert hostile[2].stat().st_size < 40 * 2**20
    process = subprocess.run([sys.executable, "-c", MEASURE, str(12 * GIB), str(good), *map(str, hostile)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    measured = json.loads(process.stdout.strip().splitlines()[-1])
    for path in hostile:
        assert measured["results"][str(path)].startswith(f"{path}: "), measured["results"][str(path)]
    assert "Traceback" not in process.stderr
    assert measured["peak_kib"] - measured["baseline_kib"] < 64 * 1024, measured


def test_resume_refuses_a_checkpoint_that_does_not_fit_the_runs_network(network_state, make_prepared, tmp_path,
                                                                         capsys):
    import train
    from utils.config import load_config, save_config

    data = make_prepared("reading_data", num_classes=3, images_per_class=3, min_width=40, max_width=48)
    run_dir = tmp_path / "ghost_20260101-000000"
    run_dir.mkdir()
    config = load_config(ROOT / "config_template.yml", [("stanford_data_path", str(data)), ("output_channels", 64),
                                                        ("output_path", str(tmp_path)), ("image_size", [32, 32])])
    save_config(config, run_dir / "config.yml")
    (run_dir / "summary.json").write_text(json.dumps({"state": "interrupted"}))
    crafted(run_dir / "last.ckpt", network_state, num_classes=2_000_000)
    assert train.main(["--resume", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert f"{run_dir / 'last.ckpt'}: the weights do not fit a ghost network" in error and "Traceback" not in error
