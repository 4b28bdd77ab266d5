"""How many CPUs this process may use: its CPU affinity, capped by its cgroup's CPU quota.

`multiprocessing.cpu_count()` counts the host's CPUs: in a container limited to 2 CPUs on a
64-core host it gave 64 gunicorn processes (each with its threads, its database connections and
its memory) competing for 2 CPUs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _quota(folder: Path, v2: bool) -> float | None:
    """The CPUs one cgroup folder allows (None: no limit there, or no such file)."""
    try:
        if v2:  # cpu.max: "max 100000" or "QUOTA PERIOD"
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
        else:  # cgroup v1: cpu.cfs_quota_us is -1 when unlimited
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        if quota == "max" or int(quota) <= 0:
            return None
        return int(quota) / int(period or 100000)
    except (OSError, ValueError):
        return None


def cgroup_cpu_limit(proc_cgroup: str, root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota on the way from this process's cgroups up to the root, in CPUs.

    `proc_cgroup` is the text of /proc/self/cgroup: `0::/PATH` for cgroup v2 (mounted at
    `root`), `N:cpu,cpuacct:/PATH` for v1 (mounted at `root/cpu,cpuacct`). A path that does not
    exist under the mount (a container that sees only its own cgroup) is skipped on the way up.
    """
    limits = []
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            mount, v2 = root, True
        elif "cpu" in controllers.split(","):
            mount, v2 = root / controllers, False
        else:
            continue
        folder = mount / path.strip("/")
        while True:
            if (limit := _quota(folder, v2)) is not None:
                limits.append(limit)
            if folder == mount or mount not in folder.parents:
                break
            folder = folder.parent
    return min(limits, default=None)


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), capped by its cgroup quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        limit = cgroup_cpu_limit(Path("/proc/self/cgroup").read_text())
    except OSError:
        limit = None
    return cpus if limit is None else max(1, min(cpus, math.ceil(limit)))
