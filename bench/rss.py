"""Resident memory and CPU time of server processes, read from /proc (no psutil)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

KIB = 1024
MIB = 1024 * 1024


def _status_field(pid: int, field: str) -> int | None:
    """A `kB` field of /proc/PID/status in bytes, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * KIB
    return None


def rss(pid: int) -> int | None:
    """Current resident set size (VmRSS) in bytes."""
    return _status_field(pid, "VmRSS")


def hwm(pid: int) -> int | None:
    """Lifetime peak resident set size (VmHWM) in bytes."""
    return _status_field(pid, "VmHWM")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds the process has used so far ((0, 0) if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def children(pid: int) -> list[int]:
    """Direct children of `pid` (gunicorn workers of a master)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command, which may contain spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class RssSampler:
    """Samples VmRSS of a changing set of processes every `interval` seconds in a thread.

    `pids()` is called at each sample and returns {pid: role}; `peak[pid]` is the largest RSS
    seen for a pid, `peak_sum` the largest total over one sample.
    """

    def __init__(self, pids: Callable[[], dict[int, str]], interval: float = 0.05) -> None:
        self._pids = pids
        self.interval = interval
        self.peak: dict[int, int] = {}
        self.roles: dict[int, str] = {}
        self.peak_sum = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        total = 0
        for pid, role in self._pids().items():
            value = rss(pid)
            if value is None:
                continue
            self.roles[pid] = role
            self.peak[pid] = max(self.peak.get(pid, 0), value)
            total += value
        self.peak_sum = max(self.peak_sum, total)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def peak_of(self, role: str) -> int:
        """Largest per-process peak among processes with this role (0 if none)."""
        return max((v for p, v in self.peak.items() if self.roles.get(p) == role), default=0)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()


def gunicorn_pids(master: int) -> dict[int, str]:
    """{pid: role} for a gunicorn master and its workers."""
    return {master: "master", **{pid: "worker" for pid in children(master)}}
