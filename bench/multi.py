"""The multi-instance step of `make bench` (step 9): three instances on PostgreSQL, moto S3
and Redis (tests/support/cluster.py) against one of them alone.

The same cluster serves both sides: "one" is wrk with three threads on instance 1, "three"
one thread on each instance, with the same connections and the same warm objects (a manifest
by tag; a BENCH_MULTI_BLOB_MIB blob served through the mirror from S3). Measured: warm manifest
requests/s and warm blob MiB/s each way, and the peak resident memory of every gunicorn worker
over the whole step (target < 200 MiB). On a 2-CPU machine three instances share the CPUs of
one, so the ratio shows what sharing PostgreSQL, S3 and Redis costs more than any gain.

Knobs: BENCH_MULTI=0 skips the step, BENCH_ONLY=multi runs it alone (rewriting only its
section of bench/RESULTS.md); BENCH_MULTI_SECONDS (wrk seconds per measure, 10),
BENCH_MULTI_CONNECTIONS (48), BENCH_MULTI_BLOB_MIB (16).

`run_spread` (also used by tests/test_cluster.py's load test) is one wrk whose threads each
connect to one instance, rotating over `warm` paths; when `cold` is given, every thread sends
the cold paths in the same order at `cold_per_second` (wrk's clock has one-second steps), so
each cold path is asked of every instance at about the same moment, which is what fetch-once
across instances must coalesce.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.cluster import Cluster, backing_services
from tests.support.images import build_layout, push
from tests.support.registry import Registry

from .client import OCI_ACCEPT
from .measure import say
from .report import Row
from .rss import MIB, RssSampler
from .wrk import WrkResult, run_wrk

RSS_TARGET_MIB = 200
# Persistent database connections (as in production), sized for PostgreSQL's ~100:
# 3 instances x 2 processes x (8 threads + 4 fills + 1) = 78.
CLUSTER_ENV = {
    "WEB_CONCURRENCY": "2",
    "GUNICORN_THREADS": "8",
    "MIRROR_MAX_FILLS": "4",
    "DATABASE_CONN_MAX_AGE": "600",
    "MIRROR_STATS_FLUSH_SECONDS": "5",
    "MIRROR_UPSTREAM_CACHE_SECONDS": "5",
    "GUNICORN_ACCESS_LOG": "",
    "DEBUG": "false",
    "LOG_LEVEL": "INFO",
}

# `setup` runs in wrk's main Lua state once per thread: thread N goes to ports[N mod #ports].
_SPREAD = """
local ports = {%(ports)s}
local warm = {%(warm)s}
local cold = {%(cold)s}
local cold_per_second = %(cold_per_second)f
local threads = 0

function setup(thread)
  threads = threads + 1
  local port = ports[(threads - 1) %% #ports + 1]
  thread.addr = wrk.lookup("127.0.0.1", tostring(port))[1]
  thread:set("port", port)
  thread:set("offset", threads)
end

local started, sent, cold_sent = nil, 0, 0

function init(args)
  wrk.headers["Host"] = "127.0.0.1:" .. port
end

function request()
  started = started or os.time()
  sent = sent + 1
  local due = (os.time() - started + 1) * cold_per_second
  if cold_sent < #cold and cold_sent < due then
    cold_sent = cold_sent + 1
    return wrk.format(nil, cold[cold_sent])
  end
  return wrk.format(nil, warm[(sent + offset) %% #warm + 1])
end
"""


def _lua_list(items: Sequence[object]) -> str:
    if any(isinstance(item, str) and "]]" in item for item in items):
        raise ValueError("a path with ]] is not expressible in the wrk script")
    return ", ".join(f"[[{item}]]" if isinstance(item, str) else str(item) for item in items)


def run_spread(
    ports: Sequence[int],
    warm: Sequence[str],
    *,
    connections: int,
    duration: int,
    cold: Sequence[str] = (),
    cold_per_second: float = 0.0,
    threads_per_port: int = 1,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """wrk over `ports` (127.0.0.1), `threads_per_port` threads each, `connections` in all."""
    lua = _SPREAD % {
        "ports": _lua_list(list(ports)),
        "warm": _lua_list(list(warm)),
        "cold": _lua_list(list(cold)),
        "cold_per_second": cold_per_second,
    }
    return run_wrk(
        f"http://127.0.0.1:{ports[0]}/",
        connections=connections,
        threads=len(ports) * threads_per_port,
        duration=duration,
        headers=headers,
        lua=lua,
    )


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass
class MultiFigures:
    """wrk results by measure ("manifest", "blob") and side ("one", "three"); peak RSS by
    gunicorn worker."""

    wrk: dict[str, dict[str, WrkResult]]
    rss_peak: dict[str, int]
    connections: int
    seconds: int
    blob_mib: int


def multi(root: Path) -> MultiFigures:
    """Start the cluster and its upstream under `root`, measure, stop."""
    seconds = _env_int("BENCH_MULTI_SECONDS", 10)
    connections = _env_int("BENCH_MULTI_CONNECTIONS", 48)
    blob_mib = _env_int("BENCH_MULTI_BLOB_MIB", 16)
    work = root / "multi"
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        upstream = stack.enter_context(Registry(workdir=work / "upstream"))
        layout = build_layout(work / "layout", layer_sizes=[blob_mib * MIB], seed=9)
        push(layout, f"{upstream.host}/bench/multi:latest", timeout=900)
        config = work / "mirror.yml"
        config.write_text(
            f"upstreams:\n  - {{name: hub, kind: oci, url: {upstream.url}, prefix: docker.io,"
            " default: true}\n"
        )
        backing = stack.enter_context(backing_services(work))
        say("  9 multi: starting three instances and a worker (PostgreSQL, moto S3, Redis)")
        cluster = stack.enter_context(Cluster(work / "cluster", config, backing, **CLUSTER_ENV))
        digest = layout.layer_digests["linux/amd64"][0]
        paths = {
            "manifest": "/v2/bench/multi/manifests/latest",
            "blob": f"/v2/bench/multi/blobs/{digest}",
        }
        _warm_up(cluster, paths["blob"], digest)
        ports = [server.port for server in cluster.servers]
        sides = {"one": (ports[:1], len(ports)), "three": (ports, 1)}
        found: dict[str, dict[str, WrkResult]] = {}
        with RssSampler(cluster.worker_pids, interval=0.5) as sampler:
            for measure, path in paths.items():
                for side, (targets, threads) in sides.items():
                    say(f"  9 multi: warm {measure}, {side} instance(s)")
                    found.setdefault(measure, {})[side] = run_spread(
                        targets,
                        [path],
                        connections=connections,
                        duration=seconds,
                        threads_per_port=threads,
                        headers=OCI_ACCEPT,
                    )
        peaks = {sampler.roles[pid]: value for pid, value in sampler.peak.items()}
    return MultiFigures(found, peaks, connections, seconds, blob_mib)


def _warm_up(cluster: Cluster, blob: str, digest: str) -> None:
    """Fill the blob through the first instance, check it through every one."""
    first = cluster.servers[0]
    for server in cluster.servers:
        body = httpx.get(f"{server.url}{blob}", timeout=300).content
        if f"sha256:{hashlib.sha256(body).hexdigest()}" != digest:
            raise RuntimeError(f"{server.url}{blob}: wrong bytes")
        first.wait_committed(blob, timeout=60)


def rows(figures: MultiFigures | None, number: int = 9) -> list[Row]:
    """Requests/s and MiB/s, three instances and one (no errors as the target), peak RSS."""
    if figures is None:
        return []
    out = []
    conns = f"wrk, {figures.connections} conns"
    titles = {
        "manifest": ("a", f"warm manifest by tag, requests/s ({conns})", "rps", "{:.0f}"),
        "blob": (
            "b",
            f"warm {figures.blob_mib} MiB blob from S3, MiB/s ({conns})",
            "mib_per_s",
            "{:.1f}",
        ),
    }
    for measure, (letter, title, attribute, shape) in titles.items():
        one, three = figures.wrk[measure]["one"], figures.wrk[measure]["three"]
        value_one, value_three = getattr(one, attribute), getattr(three, attribute)
        out.append(
            Row(
                measure=f"{number}{letter}. 3 instances vs 1: {title}",
                mirror=f"3: {shape.format(value_three)}; 1: {shape.format(value_one)}",
                distribution="-",
                reference="-",
                ratio=f"{value_three / value_one:.2f} 3/1" if value_one else "-",
                target="0 errors",
                met=one.error_count == 0 and three.error_count == 0,
            )
        )
    peak = max(figures.rss_peak.values(), default=0) / MIB
    out.append(
        Row(
            measure=f"{number}c. 3 instances: peak RSS of a gunicorn worker, MiB",
            mirror=f"{peak:.0f} (highest of {len(figures.rss_peak)})",
            distribution="-",
            reference="-",
            ratio="-",
            target=f"< {RSS_TARGET_MIB} MiB",
            met=peak < RSS_TARGET_MIB,
        )
    )
    return out


def explanations(number: int = 9) -> list[str]:
    what = (__doc__ or "").split("\n\n")[1]
    return [f"{number}. Three instances (one cache): " + " ".join(what.split())]


def details(figures: MultiFigures | None) -> list[str]:
    """Every wrk run and every worker's peak RSS."""
    if figures is None:
        return []
    lines = []
    for measure, sides in figures.wrk.items():
        for side, result in sides.items():
            lines.append(f"- multi, warm {measure}, {side}: {result.describe()}")
    peaks = ", ".join(
        f"{worker} {value / MIB:.0f}" for worker, value in sorted(figures.rss_peak.items())
    )
    lines.append(f"- multi, peak RSS per gunicorn worker (MiB): {peaks}")
    return lines
