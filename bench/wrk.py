"""Run wrk with a generated Lua script (custom headers, machine-readable summary)."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_MARK = "BENCH-RESULT"

# `done` prints wrk's totals on one line; no `response` hook, so bodies are never handed to Lua.
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
        script.write_text(_SCRIPT % {"headers": _lua_headers(headers or {}), "mark": _MARK} + lua)
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
    line = next((x for x in proc.stdout.splitlines() if x.startswith(_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    fields = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    return WrkResult(
        requests=int(fields["requests"]),
        bytes=int(fields["bytes"]),
        seconds=fields["duration_us"] / 1e6,
        errors={k: int(fields[k]) for k in ("connect", "read", "write", "status", "timeout")},
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
    )
