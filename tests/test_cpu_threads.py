"""Threads for the CPU a script gets: its affinity and cgroup quota, room for the loader workers, OpenMP waiting
passively, and the user's OMP_NUM_THREADS or the config's cpu_threads first."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import train
from utils.cpu_threads import (auto_threads, available_cpus, cgroup_cpu_limit, chosen_threads, default_loader_workers,
                               use_cpu_threads, worker_threads_environment)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "config_template.yml"


def cpu_max(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


def test_the_cgroup_quota_caps_the_usable_cpus(tmp_path):
    assert cgroup_cpu_limit(cpu_max(tmp_path, "150000 100000\n")) == 1.5
    assert cgroup_cpu_limit(cpu_max(tmp_path, "max 100000\n")) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None
    assert cgroup_cpu_limit(cpu_max(tmp_path, "garbage")) is None
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "absent") == affinity
    assert available_cpus(cpu_max(tmp_path, "50000 100000")) == 1
    assert available_cpus(cpu_max(tmp_path, "150000 100000")) == min(affinity, 2)
    assert available_cpus(cpu_max(tmp_path, f"{100000 * (affinity + 4)} 100000")) == affinity


def test_loader_workers_keep_cpus_free_and_one_thread_is_the_least():
    assert [auto_threads(2, 2), auto_threads(2, 0), auto_threads(1, 8), auto_threads(8, 8), auto_threads(16, 3)] == \
        [1, 2, 1, 4, 14]
    assert default_loader_workers(2) == 2 and default_loader_workers(64) == 8


def test_the_users_omp_num_threads_wins_then_the_config(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert chosen_threads(1, 0) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert chosen_threads(5, 0) == (5, "cpu_threads")
    threads, origin = chosen_threads(None, 2)
    assert threads == auto_threads(available_cpus(), 2) and "loader worker" in origin


def test_a_sweeps_cpu_workers_share_the_cpus_and_wait_passively():
    assert worker_threads_environment(2) == {"OMP_NUM_THREADS": str(max(1, available_cpus() // 2)),
                                             "OMP_WAIT_POLICY": "PASSIVE"}


def test_once_torch_is_loaded_only_its_thread_count_is_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    before = torch.get_num_threads()
    try:
        assert use_cpu_threads(1) == (1, "cpu_threads")
        assert torch.get_num_threads() == 1
        assert "OMP_NUM_THREADS" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    finally:
        torch.set_num_threads(before)


def test_train_sets_the_configs_cpu_threads(make_prepared, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    data = make_prepared("threads_data", num_classes=2, images_per_class=3, min_width=40, max_width=48)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert train.main(["-c", str(TEMPLATE), "-d", str(data), "--set", "cpu_threads=1", "--check"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


FRESH_PROCESS = """
import json, os, sys
import train
code = train.main(sys.argv[1:])
import torch
print(json.dumps({"code": code, "policy": os.environ.get("OMP_WAIT_POLICY"), "threads": torch.get_num_threads(),
                  "env_threads": os.environ.get("OMP_NUM_THREADS")}))
"""


def test_before_torch_loads_train_makes_openmp_wait_passively(make_prepared, tmp_path):
    """The process is the point: OpenMP reads its wait policy once, when torch loads it."""
    data = make_prepared("threads_data", num_classes=2, images_per_class=3, min_width=40, max_width=48)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("OMP_")}
    process = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, "-c", str(TEMPLATE), "-d", str(data), "--set", "num_workers=2",
         "--check"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    seen = json.loads(process.stdout.strip().splitlines()[-1])
    expected = auto_threads(available_cpus(), 2)
    assert seen == {"code": 0, "policy": "PASSIVE", "threads": expected, "env_threads": str(expected)}


def test_a_process_that_loaded_torch_keeps_its_threads_unless_the_config_names_them(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert use_cpu_threads(None, 0)[0] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
