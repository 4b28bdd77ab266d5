"""Run wrk with a generated Lua script (custom headers, machine-readable summary)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_MARK = "BENCH-RESULT"
_GRID = "BENCH-LATENCY"

# `done` prints wrk's totals on one line, then its latency percentiles on a grid (every 1 %,
# every 0.1 % from 90 %, and the maximum: the run's latency distribution, in us) so that runs
# can be pooled (wrk 4.1's Lua gives no access to the histogram itself); no `response` hook,
# so bodies are never handed to Lua.
_SCRIPT = """
wrk.method = "GET"
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "%(mark)s requests=%%.0f bytes=%%.0f duration_us=%%.0f connect=%%.0f read=%%.0f "
    .. "write=%%.0f status=%%.0f timeout=%%.0f p50_us=%%.0f p99_us=%%.0f\\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
  local parts = {}
  for tenths = 10, 999 do
    if tenths %% 10 == 0 or tenths > 900 then
      parts[#parts + 1] = string.format("%%.1f:%%.0f", tenths / 10, latency:percentile(tenths / 10))
    end
  end
  parts[#parts + 1] = string.format("100.0:%%.0f", latency.max)
  io.write("%(grid)s " .. table.concat(parts, " ") .. "\\n")
end
"""


@dataclass
class WrkResult:
    """Totals of one wrk run."""

    requests: int
    bytes: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    # (percent, latency in us) from 1 % to 100 %, ascending: the run's distribution.
    grid: list[tuple[float, float]] = field(default_factory=list, repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def mib_per_s(self) -> float:
        return self.bytes / self.seconds / (1024 * 1024)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def describe(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in self.errors.items() if v) or "no errors"
        return (
            f"{self.requests} requests, {self.bytes / 2**20:.0f} MiB in {self.seconds:.1f}s, "
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, {errors}"
        )


def pooled_percentile(runs: Iterable[WrkResult], percent: float) -> float:
    """The `percent` percentile, in ms, of the requests of all `runs` taken together: each
    run's grid read as its requests' distribution (the requests between two grid points
    counted at the upper one), weighted by its request count. Many short runs interleaved
    with another peer's sample the same stretch of a noisy machine; the median of each run's
    own p99 swings instead with whichever few runs caught a pause."""
    # In requests x tenths of a percent (the grid's step): whole numbers, compared exactly.
    weighted: list[tuple[float, int]] = []
    for run in runs:
        below = 0
        for at, us in run.grid:
            tenths = round(at * 10)
            weighted.append((us, run.requests * (tenths - below)))
            below = tenths
    total = sum(w for _, w in weighted)
    if not total:
        raise ValueError("no requests in the runs")
    seen = 0
    for us, weight in sorted(weighted):
        seen += weight
        if seen * 1000 >= round(percent * 10) * total:
            return us / 1000
    raise AssertionError("unreachable: the weights add up to the total")


def _lua_headers(headers: dict[str, str]) -> str:
    lines = []
    for key, value in headers.items():
        if "]]" in key + value:
            raise ValueError(f"header not expressible in the wrk script: {key}: {value}")
        lines.append(f"wrk.headers[ [[{key}]] ] = [[{value}]]")
    return "\n".join(lines)


def run_wrk(
    url: str,
    *,
    connections: int,
    threads: int = 2,
    duration: int = 10,
    headers: dict[str, str] | None = None,
    timeout: int = 30,
    lua: str = "",
) -> WrkResult:
    """`wrk -tT -cC -dDs` against `url`; raises RuntimeError if wrk fails. `lua` is added
    to the script (e.g. `setup`/`request` functions spreading the load: bench/multi.py)."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        marks = {"mark": _MARK, "grid": _GRID}
        script.write_text(_SCRIPT % {"headers": _lua_headers(headers or {}), **marks} + lua)
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            f"--timeout={timeout}s",
            "-s",
            str(script),
            url,
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + timeout + 30, check=False
        )
    lines = proc.stdout.splitlines()
    line = next((x for x in lines if x.startswith(_MARK + " ")), None)
    grid = next((x for x in lines if x.startswith(_GRID + " ")), None)
    if proc.returncode != 0 or line is None or grid is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    fields = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    return WrkResult(
        requests=int(fields["requests"]),
        bytes=int(fields["bytes"]),
        seconds=fields["duration_us"] / 1e6,
        errors={k: int(fields[k]) for k in ("connect", "read", "write", "status", "timeout")},
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        grid=[(float(at), float(us)) for at, us in (x.split(":") for x in grid.split()[1:])],
    )
