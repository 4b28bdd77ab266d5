"""The five measurements; each returns plain figures per peer."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.images import Layout

from . import rss
from .client import OCI_ACCEPT, Download, concurrent_fetch, fetch, skopeo_pull
from .peers import Nginx, Peers
from .wrk import WrkResult, run_wrk

MIB = 1024 * 1024
_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line with the time since start."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def _largest_layer(layout: Layout) -> str:
    layers = next(iter(layout.layer_digests.values()))
    return max(layers, key=lambda d: layout.blob_sizes[d])


_SCRATCH = 64 * MIB


def settle(recycle: int = 0) -> None:
    """Flush dirty pages, so that writeback left by earlier steps does not slow this one; then
    write and delete `recycle` bytes of scratch file, so that the page cache the step will
    fill lands on memory the machine has used before. On these VMs (Firecracker) the host
    backs guest memory on first touch: a page-cache write to memory never touched since boot
    costs ~2.8 s of kernel time per GiB, to reused memory ~0.2 s (`python3` writing 1 GiB files
    in 1 MiB writes, 2026-12-02), and memory freed more than ~2 s before is fresh again (the
    guest reports free pages to the host). Which peer happens to meet fresh memory would
    otherwise decide the cold figures; freed pages are the first the kernel hands out again,
    so the step must start right after this."""
    os.sync()
    if recycle <= 0:
        return
    block = bytes(_SCRATCH)
    with tempfile.NamedTemporaryFile(prefix="bench-recycle-") as f:
        for _ in range(-(-recycle // _SCRATCH)):
            f.write(block)


def upstream_summary(p: Peers) -> str:
    """What reached the upstream since the last reset, e.g. `HEAD manifests 300, GET /v2/ 300`."""
    kinds: Counter[str] = Counter()
    for method, path in list(p.proxy.requests):
        parts = path.split("?")[0].rstrip("/").split("/")
        kind = "/v2/" if len(parts) <= 2 else parts[-2]
        kinds[f"{method} {kind}"] += 1
    return ", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "none"


def _get_ok(url: str, headers: dict[str, str] | None = None, digest: str = "") -> Download:
    d = fetch(url, headers=headers)
    if d.status != 200 or (digest and not d.matches(digest)):
        raise RuntimeError(f"GET {url}: status {d.status}, sha256 {d.sha256[:12]} (want {digest})")
    return d


def _warm_blob(p: Peers, url: str, digest: str, limit: int = 20) -> tuple[int, str]:
    """GET until one GET makes no upstream request (distribution caches lazily); (GETs, X-Cache)."""
    for tries in range(1, limit + 1):
        p.proxy.reset()
        cache = _get_ok(url, digest=digest).headers.get("x-cache", "-")
        if tries > 1 and not p.proxy.count("GET", digest):
            return tries, cache
        time.sleep(0.2)
    raise RuntimeError(f"{url} still fetches from the upstream after {limit} GETs")


@dataclass
class WrkFigures:
    """wrk results per peer, and upstream requests the peer made meanwhile."""

    runs: dict[str, WrkResult] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)
    cache: dict[str, str] = field(default_factory=dict)


def warm_manifests(p: Peers, name: str, seconds: int) -> WrkFigures:
    """Measure 1: GET manifest by tag, 32 connections, after one warming request."""
    out = WrkFigures()
    for peer, base in p.urls().items():
        url = f"{base}/v2/{name}/manifests/latest"
        _get_ok(url, OCI_ACCEPT)
        out.cache[peer] = _get_ok(url, OCI_ACCEPT).headers.get("x-cache", "-")
        p.proxy.reset()
        say(f"  wrk manifests on {peer} ({seconds}s, 32 connections)")
        out.runs[peer] = run_wrk(url, connections=32, duration=seconds, headers=OCI_ACCEPT)
        out.upstream[peer] = upstream_summary(p)
        say(f"    {out.runs[peer].rps:.0f} req/s; {out.runs[peer].describe()}")
        say(f"    upstream requests during the run: {out.upstream[peer]}")
    return out


def warm_blobs(p: Peers, name: str, layout: Layout, nginx: Nginx, seconds: int) -> WrkFigures:
    """Measure 2: GET a 64 MiB blob, 8 connections, after warming; nginx as the ceiling."""
    digest = _largest_layer(layout)
    out = WrkFigures()
    targets = {f"{peer}": f"{base}/v2/{name}/blobs/{digest}" for peer, base in p.urls().items()}
    targets["nginx"] = f"{nginx.url}/{digest.split(':', 1)[1]}"
    for peer, url in targets.items():
        tries, cache = _warm_blob(p, url, digest)
        out.cache[peer] = f"{cache} after {tries} GETs"
        p.proxy.reset()
        say(f"  wrk blob on {peer} ({seconds}s, 8 connections)")
        out.runs[peer] = run_wrk(url, connections=8, duration=seconds)
        out.upstream[peer] = upstream_summary(p)
        say(f"    {out.runs[peer].mib_per_s:.0f} MiB/s; {out.runs[peer].describe()}")
    return out


@dataclass
class ColdPulls:
    """skopeo pull seconds per peer and round; upstream requests per peer (last round)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)

    def median(self, peer: str) -> float:
        return statistics.median(self.seconds[peer])


def cold_pulls(p: Peers, images: dict[str, list[str]], image_bytes: int) -> ColdPulls:
    """Measure 3: skopeo copy of a fresh image per peer and round; `images[peer][round]`,
    `image_bytes` each (the peer stores them and skopeo writes them to a folder)."""
    hosts = {
        "direct": p.upstream.host,
        "direct via proxy": p.proxy.host,
        "mirror": p.mirror.host,
        "distribution": p.dist.host,
    }
    out = ColdPulls()
    rounds = len(next(iter(images.values())))
    order = list(hosts)
    for r in range(rounds):
        for peer in order[r % len(order) :] + order[: r % len(order)]:  # rotate who goes first
            host = hosts[peer]
            settle(recycle=2 * image_bytes)
            p.proxy.reset()
            seconds = skopeo_pull(f"{host}/{images[peer][r]}:latest", p.root / "pull-out")
            out.seconds.setdefault(peer, []).append(seconds)
            out.upstream[peer] = upstream_summary(p)
            say(f"  round {r + 1}: {peer:<16} {seconds:6.2f}s")
    return out


@dataclass
class Stampede:
    """16 simultaneous cold GETs of one blob: upstream requests and body checks per peer."""

    gets: dict[str, int] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)
    good_bodies: dict[str, int] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    n: int = 16


def stampede(p: Peers, images: dict[str, tuple[str, Layout]], n: int = 16) -> Stampede:
    """Measure 4: `n` threads GET one fresh blob at once through each peer."""
    out = Stampede(n=n)
    for peer, base in p.urls().items():
        name, layout = images[peer]
        digest = _largest_layer(layout)
        settle()
        p.proxy.reset()
        results, wall = concurrent_fetch(f"{base}/v2/{name}/blobs/{digest}", n)
        out.gets[peer] = p.proxy.count("GET", digest)
        out.heads[peer] = p.proxy.count("HEAD", digest)
        out.good_bodies[peer] = sum(d.matches(digest) for d in results)
        out.wall[peer] = wall
        say(
            f"  {peer}: {out.gets[peer]} upstream GET(s), {out.heads[peer]} HEAD(s), "
            f"{out.good_bodies[peer]}/{n} bodies with the right sha256, {wall:.1f}s"
        )
    return out


@dataclass
class BigPull:
    """One cold 1 GiB blob through a peer: time and peak RSS of its processes."""

    seconds: float
    ok: bool
    headers_after: float
    last_gap: float
    upstream_gets: int
    peak_worker: int  # largest single serving process (a gunicorn worker, or the registry)
    peak_master: int
    peak_sum: int
    before: int  # largest serving process just before the download
    samples: int
    cpu: float  # CPU seconds the serving processes used meanwhile
    cpu_sys: float  # of which in the kernel
    seq: int = 0  # position in the run order


def sampled_pull(
    url: str,
    digest: str,
    pids: Callable[[], dict[int, str]],
    upstream_gets: Callable[[], int],
    size: int,
) -> tuple[BigPull, Download]:
    """GET `url` (`size` bytes) cold while sampling the RSS and CPU time of the serving
    processes `pids()`; `upstream_gets()` is asked afterwards how many upstream GETs it caused."""
    settle(recycle=2 * size)
    start = pids()
    before = max(rss.rss(pid) or 0 for pid in start)
    cpu = [rss.cpu_times(pid) for pid in start]
    with rss.RssSampler(pids, interval=0.05) as sampler:
        d = fetch(url, timeout=900)
    user = sum(rss.cpu_times(pid)[0] - c[0] for pid, c in zip(start, cpu, strict=True))
    system = sum(rss.cpu_times(pid)[1] - c[1] for pid, c in zip(start, cpu, strict=True))
    b = BigPull(
        seconds=d.seconds,
        ok=d.matches(digest),
        headers_after=d.headers_after,
        last_gap=d.last_gap,
        upstream_gets=upstream_gets(),
        peak_worker=sampler.peak_of("worker"),
        peak_master=sampler.peak_of("master"),
        peak_sum=sampler.peak_sum,
        before=before,
        samples=sampler.samples,
        cpu=user + system,
        cpu_sys=system,
    )
    return b, d


def _big_pull(p: Peers, peer: str, url: str, digest: str, size: int) -> BigPull:
    pid_sets: dict[str, Callable[[], dict[int, str]]] = {
        "mirror": lambda: rss.gunicorn_pids(p.mirror_pid),
        "distribution": lambda: {p.dist_pid: "worker"},
    }

    def upstream_gets() -> int:
        return p.proxy.count("GET", digest)

    p.proxy.reset()
    b, d = sampled_pull(url, digest, pid_sets[peer], upstream_gets, size)
    say(
        f"  {peer}: {d.size / MIB:.0f} MiB in {b.seconds:.1f}s (last read waited "
        f"{b.last_gap * 1000:.0f} ms), sha256 {'ok' if b.ok else 'WRONG'}, peak RSS "
        f"{b.peak_worker / MIB:.0f} MiB per process (before {b.before / MIB:.0f}), sum "
        f"{b.peak_sum / MIB:.0f} MiB, {b.samples} samples, {b.cpu:.1f} CPU s "
        f"({b.cpu_sys:.1f} in the kernel)"
    )
    return b


def big_pulls(p: Peers, images: list[tuple[str, Layout]]) -> dict[str, list[BigPull]]:
    """Measure 5: a cold large blob through each peer while sampling RSS; one fresh image per
    round, and the peer that goes first alternates (the host's state drifts as data piles up).
    """
    out: dict[str, list[BigPull]] = {}
    peers = list(p.urls().items())
    for r, (name, layout) in enumerate(images):
        digest = _largest_layer(layout)
        for peer, base in peers if r % 2 == 0 else peers[::-1]:
            url = f"{base}/v2/{name}/blobs/{digest}"
            b = _big_pull(p, peer, url, digest, layout.blob_sizes[digest])
            b.seq = sum(len(v) for v in out.values())
            out.setdefault(peer, []).append(b)
    return out


def memory_snapshot(p: Peers) -> dict[str, list[int]]:
    """Current RSS (bytes) of the mirror's workers and of distribution."""
    workers = [rss.rss(pid) or 0 for pid in rss.children(p.mirror_pid)]
    return {"mirror workers": sorted(workers), "distribution": [rss.rss(p.dist_pid) or 0]}
