"""The gunicorn worker count follows the CPUs this process may use (config/cpus.py), read from
fake cgroup trees: cgroup v2 `cpu.max` and v1 `cpu.cfs_quota_us`, limits on the way up."""

from __future__ import annotations

import os
from pathlib import Path

from config.cpus import cgroup_cpu_limit, usable_cpus


def _write(root: Path, folder: str, **files: str) -> None:
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name.replace("_", ".", 1)).write_text(text + "\n")


def test_v2_quota(tmp_path: Path) -> None:
    _write(tmp_path, "", cpu_max="max 100000")
    _write(tmp_path, "kubepods/pod1", cpu_max="150000 100000")
    assert cgroup_cpu_limit("0::/kubepods/pod1\n", tmp_path) == 1.5


def test_v2_tightest_limit_on_the_way_up(tmp_path: Path) -> None:
    _write(tmp_path, "slice", cpu_max="50000 100000")
    _write(tmp_path, "slice/service", cpu_max="max 100000")
    assert cgroup_cpu_limit("0::/slice/service\n", tmp_path) == 0.5


def test_v2_unlimited(tmp_path: Path) -> None:
    _write(tmp_path, "", cpu_max="max 100000")
    assert cgroup_cpu_limit("0::/\n", tmp_path) is None


def test_v2_own_cgroup_mounted_as_root(tmp_path: Path) -> None:
    """A container without a cgroup namespace sees a host path that is not under its mount."""
    _write(tmp_path, "", cpu_max="200000 100000")
    assert cgroup_cpu_limit("0::/docker/0123abcd\n", tmp_path) == 2


def test_v1_quota_and_other_controllers(tmp_path: Path) -> None:
    _write(tmp_path, "cpu,cpuacct/docker/c1", cpu_cfs_quota_us="300000", cpu_cfs_period_us="100000")
    _write(tmp_path, "cpu,cpuacct", cpu_cfs_quota_us="-1", cpu_cfs_period_us="100000")
    text = "4:memory:/docker/c1\n2:cpu,cpuacct:/docker/c1\n0::/docker/c1\n"
    assert cgroup_cpu_limit(text, tmp_path) == 3


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert cgroup_cpu_limit("0::/\n1:cpu:/\n", tmp_path) is None


def test_usable_cpus_on_this_machine() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
