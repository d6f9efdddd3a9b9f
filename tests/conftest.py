"""Shared test settings: one torch thread, the cuda marker's skip, data fixtures, progress bars."""

import os

import pytest as _data_pytest

CUDA_DRY_RUN_ENV = "CARS_CUDA_TESTS_DEVICE"  # =cpu: run the cuda group's bodies on the CPU (a dry run)
SESSION_THREADS = {}  # OMP_NUM_THREADS as the session began


def pytest_configure(config):
    """One OpenMP thread for torch in this process and the processes the tests start, unless the caller set
    OMP_NUM_THREADS: the tests' tensors are tiny, and on a shared machine two spinning OpenMP threads make them
    many times slower (tests/test_models_architectures.py took 884 s with 2 threads, 8 of its cases 5.5x longer)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    SESSION_THREADS["count"] = os.environ["OMP_NUM_THREADS"].strip()


@_data_pytest.fixture(autouse=True)
def torch_threads_as_the_session_began():
    """A test that changes torch's thread count (a script's main choosing its threads) leaves the session's count
    for the tests after it."""
    yield
    import sys

    torch, count = sys.modules.get("torch"), SESSION_THREADS.get("count", "")
    if torch is not None and count.isdigit() and int(count) > 0 and torch.get_num_threads() != int(count):
        torch.set_num_threads(int(count))


@_data_pytest.fixture(autouse=True)
def sigint_as_the_test_began():
    """Lightning sets SIGINT to be ignored after a Ctrl-C in a fit run in this process (so that a second Ctrl-C cannot
    stop its graceful shutdown) and leaves it so: the next test gets the handler this one began with."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    yield
    if handler is not None:
        signal.signal(signal.SIGINT, handler)


def pytest_collection_modifyitems(config, items):
    """The tests marked serial first (make test's xdist workers take whole files in this order, so one worker runs
    them one after another from the start while the others run the rest); skip the tests marked cuda when torch can
    use no CUDA GPU (unless CARS_CUDA_TESTS_DEVICE=cpu)."""
    serial_files = {item.path for item in items if item.get_closest_marker("serial")}
    if len(serial_files) > 1:
        raise _data_pytest.UsageError(f"tests marked serial must share one file, so that one xdist worker runs them "
                                      f"one at a time; found them in {', '.join(sorted(map(str, serial_files)))}")
    items.sort(key=lambda item: item.get_closest_marker("serial") is None)
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked or os.environ.get(CUDA_DRY_RUN_ENV) == "cpu":
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = _data_pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in marked:
        item.add_marker(skip)


# ---- data area fixtures (datasets/) ----


@_data_pytest.fixture
def data_make_raw(tmp_path):
    """Factory: write a small synthetic raw Stanford dataset; returns (raw_dir, SyntheticDataset)."""
    from datasets.synthetic import generate_synthetic_stanford

    def make(layout="updated", archives=True, doubled=False, classes=4, per_class=6, name="raw", **kwargs):
        raw = tmp_path / name
        result = generate_synthetic_stanford(raw, layout=layout, num_classes=classes, images_per_class=per_class,
                                             archives=archives, doubled_folders=doubled, **kwargs)
        return raw, result

    return make


@_data_pytest.fixture(scope="session")
def make_prepared(tmp_path_factory):
    """Factory for module fixtures: generate a synthetic raw Stanford set in a new folder, prepare it, return the
    prepared folder."""
    from datasets.preparation import prepare_stanford_dataset
    from datasets.synthetic import generate_synthetic_stanford

    def make(name, **generate_kwargs):
        root = tmp_path_factory.mktemp(name)
        generate_synthetic_stanford(root / "raw", **generate_kwargs)
        prepare_stanford_dataset(root / "raw", root / "prepared", progress=False)
        return root / "prepared"

    return make


@_data_pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one torch thread for a module's tests avoids OpenMP spinning on a shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@_data_pytest.fixture(autouse=True, scope="session")
def close_progress_bars():
    """Trainings interrupted on purpose leave Lightning's tqdm bars open; close them inside the session so they
    do not print after pytest's closing summary line."""
    yield
    from tqdm import tqdm

    for bar in list(tqdm._instances):
        bar.close()


@_data_pytest.fixture(autouse=True)
def remove_logging_after_each_test():
    """A script's main sets up logging on the streams pytest captures for that test and closes afterwards: take its
    handlers and level away, so that later tests' log records do not go to closed streams."""
    import logging

    level = logging.getLogger().level
    yield
    from utils.logger import remove_logging

    remove_logging()
    logging.getLogger().setLevel(level)


# ---- servers ----


@_data_pytest.fixture
def postgres_url():
    """A PostgreSQL server on 127.0.0.1 from the pgserver wheel: initialised by pgserver, restarted on a TCP port.
    Its data lives outside pytest's folders (/tmp/pytest-of-<user> is private, and as root the server runs as its
    own user, who must reach its data folder)."""
    import atexit
    import shutil
    import socket
    import tempfile
    from pathlib import Path

    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="cars-postgres-"))
    folder.chmod(0o755)
    data = folder / "pgdata"
    server = pgserver.get_server(data, cleanup_mode=None)
    user = server.system_user  # postgres refuses to run as root: pgserver runs it as its own user then
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pgserver.pg_ctl(["-w", "-m", "fast", "-o", f"-h 127.0.0.1 -p {port} -k {data}", "-l", str(data / "log"),
                     "restart"], pgdata=data, user=user, timeout=60)
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=user, timeout=60)
    atexit.unregister(server._cleanup)  # stopped above; its exit hook would log to pytest's closed streams
    shutil.rmtree(folder, ignore_errors=True)
