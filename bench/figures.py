"""What the run found, as table rows and Markdown sections for bench/RESULTS.md."""

from __future__ import annotations

from . import rss
from .measure import BigPull, ColdPulls, Stampede, WrkFigures
from .peers import Peers, log_problems
from .report import Row

MIB = 1024 * 1024
# Targets of the issues that set them (issue 9 raised the manifest rate and set the cold
# large-blob ones; RSS per worker is issue 9's 120 MB for the cold large blob, else 200 MiB).
TARGET_MANIFEST_RATIO = 8
TARGET_BLOB_RATIO = 0.9
TARGET_COLD_RATIO = 1.2
TARGET_BIG_RATIO = 1.0
TARGET_BIG_RSS_MB = 120
TARGET_RSS_MIB = 200

# (phase, RSS snapshot, mirror log warnings so far)
Checkpoint = tuple[str, dict[str, list[int]], int]


def _mib(n: int) -> str:
    return f"{n / MIB:.0f}"


def rows(
    manifests: WrkFigures,
    blobs: WrkFigures,
    cold: ColdPulls,
    herd: Stampede,
    big: dict[str, list[BigPull]],
    cold_mib: int,
    big_mib: int,
) -> list[Row]:
    m_rps, d_rps = manifests.runs["mirror"].rps, manifests.runs["distribution"].rps
    m_bw, d_bw = blobs.runs["mirror"].mib_per_s, blobs.runs["distribution"].mib_per_s
    n_bw = blobs.runs["nginx"].mib_per_s
    direct, via = cold.median("direct"), cold.median("direct via proxy")
    m_cold, d_cold = cold.median("mirror"), cold.median("distribution")
    peak = {peer: max(b.peak_worker for b in runs) for peer, runs in big.items()}
    peak_sum = {peer: max(b.peak_sum for b in runs) for peer, runs in big.items()}
    best = {peer: min(b.seconds for b in runs) for peer, runs in big.items()}
    times = {peer: ", ".join(f"{b.seconds:.1f}" for b in runs) for peer, runs in big.items()}
    all_ok = all(b.ok for runs in big.values() for b in runs)
    return [
        Row(
            "1. Warm manifest by tag, req/s (wrk, 32 conns)",
            f"{m_rps:.0f}",
            f"{d_rps:.0f}",
            "-",
            f"{m_rps / d_rps:.3f} m/d",
            f">= {TARGET_MANIFEST_RATIO} m/d",
            m_rps / d_rps >= TARGET_MANIFEST_RATIO,
        ),
        Row(
            "2. Warm 64 MiB blob, MiB/s (wrk, 8 conns)",
            f"{m_bw:.0f}",
            f"{d_bw:.0f}",
            f"nginx {n_bw:.0f}",
            f"{m_bw / d_bw:.3f} m/d; {m_bw / n_bw:.2f} m/nginx",
            f">= {TARGET_BLOB_RATIO} m/d",
            m_bw / d_bw >= TARGET_BLOB_RATIO,
        ),
        Row(
            f"3. Cold skopeo pull, 3 layers {cold_mib} MiB, s (median)",
            f"{m_cold:.2f}",
            f"{d_cold:.2f}",
            f"direct {direct:.2f}; via proxy {via:.2f}",
            f"{m_cold / direct:.3f} m/direct; {d_cold / direct:.2f} d/direct",
            f"<= {TARGET_COLD_RATIO} m/direct",
            m_cold / direct <= TARGET_COLD_RATIO,
        ),
        Row(
            f"4. Upstream GETs, {herd.n} concurrent cold GETs of one blob",
            f"{herd.gets['mirror']} ({herd.good_bodies['mirror']}/{herd.n} ok)",
            f"{herd.gets['distribution']} ({herd.good_bodies['distribution']}/{herd.n} ok)",
            "-",
            "-",
            "mirror = 1, all bodies ok",
            herd.gets["mirror"] == 1 and herd.good_bodies["mirror"] == herd.n,
        ),
        Row(
            f"5. Peak RSS per serving process, cold {big_mib} MiB blob, MiB",
            f"{_mib(peak['mirror'])} (worker)",
            f"{_mib(peak['distribution'])} (process)",
            "-",
            "-",
            f"< {TARGET_BIG_RSS_MB} MB per worker, sha256 ok",
            peak["mirror"] < TARGET_BIG_RSS_MB * 1_000_000 and all_ok,
        ),
        Row(
            "5b. Peak RSS sum, master + workers, MiB",
            _mib(peak_sum["mirror"]),
            _mib(peak_sum["distribution"]),
            "-",
            "-",
            "-",
            None,
        ),
        Row(
            f"5c. Cold {big_mib} MiB blob GET, s (best; all runs)",
            f"{best['mirror']:.1f} ({times['mirror']})",
            f"{best['distribution']:.1f} ({times['distribution']})",
            "-",
            f"{best['mirror'] / best['distribution']:.2f} m/d (best)",
            f"<= {TARGET_BIG_RATIO} m/d",
            best["mirror"] / best["distribution"] <= TARGET_BIG_RATIO,
        ),
    ]


def explanations(cold_mib: int, big_mib: int, seconds: int, rounds: int) -> list[str]:
    return [
        "Topology: one upstream `docker-registry` (CNCF distribution) <- a counting reverse "
        "proxy (`tests/support/faultproxy.py`, Python, in the benchmark process) <- the mirror "
        "(gunicorn gthread, `WEB_CONCURRENCY=2`, `GUNICORN_THREADS=64`, lease 30 s, stats flush "
        "5 s, upstream cache 5 s, tag TTL 300 s, SQLite + local storage) and, side by side, "
        "distribution's pull-through cache (`proxy.remoteurl`, filesystem storage). All on "
        "127.0.0.1; the load generator shares the same CPUs. Before each cold transfer the run "
        "calls `sync`, so that writeback left by earlier steps does not land on the next one.",
        "",
        f"1. Warm manifest: `wrk -t2 -c32 -d{seconds}s` GET `/v2/bench/warm/manifests/latest` "
        "with an OCI `Accept`, after one warming GET. Requests/s; ratio mirror/distribution.",
        f"2. Warm blob: `wrk -t2 -c8 -d{seconds}s` GET of one 64 MiB layer blob, after full "
        "warming GETs repeated until one of them causes no upstream blob GET (distribution "
        "needs several); MiB/s = bytes wrk received / duration. nginx (2 workers, sendfile) "
        "serving the same file from disk is the ceiling.",
        f"3. Cold pull: `skopeo copy docker://HOST/NAME:latest dir:OUT` of an image with 3 "
        f"random layers ({cold_mib} MiB in all), each peer and round a fresh image (new blobs), "
        f"median of {rounds} rounds (the order of the peers rotates each round). `direct` pulls "
        "from the upstream registry itself; `direct via proxy` through the counting proxy the "
        "peers use (its own cost).",
        "4. Stampede: 16 threads released by a barrier GET the same fresh 32 MiB blob; the "
        "upstream GETs of that blob are counted at the proxy and every body's sha256 checked.",
        f"5. Memory: a cold GET of a {big_mib} MiB single-layer blob through each peer, twice "
        "(a fresh image each time; mirror first, then distribution first); VmRSS of the "
        "gunicorn master and each worker (or of the docker-registry process) sampled every "
        "50 ms; the client hashes and discards the body. The table shows the largest peak; "
        "5c the GET's duration (best of the two, and both).",
    ]


def details(
    p: Peers,
    manifests: WrkFigures,
    blobs: WrkFigures,
    cold: ColdPulls,
    herd: Stampede,
    big: dict[str, list[BigPull]],
    snapshots: list[Checkpoint],
) -> list[str]:
    out = ["wrk runs:", ""]
    for label, fig in (("manifest", manifests), ("blob", blobs)):
        for peer, run in fig.runs.items():
            out.append(
                f"- {label} on {peer}: {run.describe()}; warming: X-Cache "
                f"`{fig.cache.get(peer, '-')}`; requests reaching the upstream proxy during "
                f"the run: {fig.upstream.get(peer, 'none')}"
            )
    out += ["", "Cold pulls (seconds per round; requests seen by the proxy, last round):", ""]
    for peer, values in cold.seconds.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        out.append(f"- {peer}: {rounds} (upstream: {cold.upstream[peer]})")
    out += ["", "Stampede:", ""]
    for peer in herd.gets:
        out.append(
            f"- {peer}: {herd.gets[peer]} GET and {herd.heads[peer]} HEAD of the blob upstream, "
            f"{herd.good_bodies[peer]}/{herd.n} correct bodies, all done in {herd.wall[peer]:.1f}s"
        )
    out += ["", "Large cold blob (in run order; the first peer alternates):", ""]
    for peer, b in sorted(((k, b) for k, v in big.items() for b in v), key=lambda x: x[1].seq):
        out.append(
            f"- {peer}: {b.seconds:.1f}s (headers after {b.headers_after * 1000:.0f} ms, final "
            f"read waited {b.last_gap * 1000:.0f} ms), sha256 {'ok' if b.ok else 'WRONG'}, "
            f"upstream GETs of the blob {b.upstream_gets}, largest process {_mib(b.before)} MiB "
            f"before -> peak {_mib(b.peak_worker)} MiB"
            + (f" (gunicorn master {_mib(b.peak_master)} MiB)" if b.peak_master else "")
            + f", sum {_mib(b.peak_sum)} MiB, {b.samples} samples; CPU used by the serving "
            f"processes {b.cpu:.1f} s, of which {b.cpu_sys:.1f} s in the kernel"
        )
    out += ["", "Resident memory (MiB) and mirror log warnings so far, between phases:", ""]
    for phase, snap, warnings in snapshots:
        parts = "; ".join(f"{k} {', '.join(_mib(v) for v in vs)}" for k, vs in snap.items())
        out.append(f"- {phase}: {parts}; mirror log warnings {warnings}")
    hwm = [rss.hwm(pid) or 0 for pid in rss.children(p.mirror_pid)]
    out.append(f"- mirror workers' lifetime peak (VmHWM): {', '.join(_mib(v) for v in hwm)}")
    return out


_KNOWN = {
    "bare LF as line terminator": "expected: skopeo tries HTTPS first, and gunicorn logs the TLS "
    "ClientHello it receives on its plain-HTTP port like this (one per skopeo pull)",
    "does not implement RempositoryRemover": "expected: distribution's proxy mode at startup",
}


def log_section(p: Peers) -> list[str]:
    out = []
    for label, path in (("mirror", p.mirror.log), ("distribution", p.dist.log_path)):
        count, lines = log_problems(path)
        out.append(f"- {label} log: {count} warning/error lines" + (":" if lines else "."))
        for line in lines:
            note = next((v for k, v in _KNOWN.items() if k in line), "")
            out.append(f"    - `{line[:300]}`" + (f" ({note})" if note else ""))
    return out
