"""The Go module proxy's rows and Markdown text for bench/RESULTS.md."""

from __future__ import annotations

from .figures import TARGET_RSS_MIB
from .gomod import PAD, GoDownloads, GoPeers, ZipPull
from .peers import log_problems
from .report import Row

MIB = 1024 * 1024
TARGET_GO_COLD_RATIO = 3.0  # issue 9
TARGET_GO_RATIO = 1.3

# (phase, RSS of the Go mirror's workers, mirror log warnings so far)
GoCheckpoint = tuple[str, list[int], int]


def _mib(n: int) -> str:
    return f"{n / MIB:.0f}"


def checkpoint(g: GoPeers, phase: str, workers: list[int]) -> GoCheckpoint:
    return phase, workers, log_problems(g.mirror.log)[0]


def rows(d: GoDownloads, z: ZipPull, zip_mib: int) -> list[Row]:
    nginx = d.median("nginx")
    cold, warm = d.median("mirror cold"), d.median("mirror warm")
    floor = d.median("gunicorn alone")
    n, rounds = d.modules, len(d.seconds["nginx"])
    return [
        Row(
            f"6. go mod download, {n} modules, cold, s (median of {rounds})",
            f"{cold:.2f}",
            "-",
            f"nginx {nginx:.2f}",
            f"{cold / nginx:.2f} m/nginx",
            f"<= {TARGET_GO_COLD_RATIO} m/nginx",
            cold / nginx <= TARGET_GO_COLD_RATIO,
        ),
        Row(
            f"6b. go mod download, {n} modules, warm, s (median of {rounds})",
            f"{warm:.2f}",
            "-",
            f"nginx {nginx:.2f}",
            f"{warm / nginx:.2f} m/nginx",
            f"<= {TARGET_GO_RATIO} m/nginx",
            warm / nginx <= TARGET_GO_RATIO,
        ),
        Row(
            f"6c. same, from gunicorn alone serving the files, s (median of {rounds})",
            f"{floor:.2f} (gunicorn alone)",
            "-",
            f"nginx {nginx:.2f}",
            f"{floor / nginx:.2f} g/nginx; {warm / floor:.2f} m/g",
            "-",
            None,
        ),
        Row(
            f"7. Peak RSS per serving process, cold {zip_mib} MiB module zip, MiB",
            f"{_mib(z.peak_worker)} (worker)",
            "-",
            "-",
            "-",
            f"< {TARGET_RSS_MIB} MiB per worker, sha256 ok",
            z.peak_worker < TARGET_RSS_MIB * MIB and z.ok,
        ),
        Row("7b. Peak RSS sum, master + workers, MiB", _mib(z.peak_sum), "-", "-", "-", "-", None),
        Row(
            f"7c. Cold {zip_mib} MiB module zip GET, s (wait for the held-back tail)",
            f"{z.seconds:.1f} ({z.last_gap:.1f})",
            "-",
            f"nginx {z.nginx_seconds:.2f}",
            f"{z.seconds / z.nginx_seconds:.1f} m/nginx",
            "-",
            None,
        ),
    ]


def explanations(d: GoDownloads, zip_mib: int) -> list[str]:
    n, rounds = d.modules, len(d.seconds["nginx"])
    return [
        "",
        "Go module proxy (6, 7; after the OCI measures, in the same run): nginx "
        "(`tests/support/gomodules.StaticServer`: 1 worker, sendfile, access log on) serves a "
        "static GOPROXY tree written by `write_tree`; a second mirror instance (same production "
        "settings, its own data folder and SQLite) has one upstream "
        "`{name: static, kind: go, url: <nginx>}` and **no `gosumdb` upstream**, so it verifies "
        "no checksums: before committing it checks that `.info` names the version, the `.mod` "
        "size and each zip against the module zip rules (over the whole file), nothing more. "
        "The go command (go 1.19) runs with `GOSUMDB=off`, `GOFLAGS=-mod=mod`, "
        "`GOPROXY=<one URL>` (no `direct`) and a fresh GOPATH, GOMODCACHE and GOCACHE each "
        "time (`tests/support/gocmd.go_env`), so the comparison is about serving.",
        "",
        f"6. `go mod download` in a throwaway module whose go.mod requires {n} modules "
        f"`example.com/bench/rR/mNNN v1.0.0` (go.mod, one .go file and {PAD:,} random bytes of "
        f"padding: ~20 KB zips). Each of {rounds} rounds uses {n} modules never requested "
        "before, fetched four times with a fresh module cache: from nginx directly "
        "(`nginx`), from `gunicorn alone` (6c), through the mirror while it has none of them "
        "(`cold`: every .info, .mod and .zip is a fill from nginx) and through the mirror "
        "again (`warm`: all from its cache). In that order in odd rounds, reversed in even "
        "ones (cold still before warm); `sync` before each run. Median seconds of the "
        f"{rounds} rounds; ratio mirror/nginx. The go command fetches one .mod, .info and .zip "
        "per module and downloads GOMAXPROCS (here 2) modules at a time, so these figures "
        "mostly add up per-request latency.",
        "6c. `gunicorn alone`: the mirror's own gunicorn (config/gunicorn.py, the same "
        "environment: worker class, 2 processes, 64 threads, keep-alive) running "
        "`bench/static_wsgi.py` instead of Django: a WSGI application that only reads the "
        "requested file of the same tree, answering it as the mirror answers a warm hit (up to "
        "256 KiB from memory, larger through `wsgi.file_wrapper`: sendfile). What the server "
        "alone costs against nginx: the floor of 6b for any application served by it.",
        f"7. Memory: module `example.com/bench/big v1.0.0` with a {zip_mib} MiB padding file of "
        "random bytes (zip deflated, built once per run with `ZipFile.open('w')`). One cold "
        "GET of its `.zip` through the mirror with the hashing client, while VmRSS of the "
        "gunicorn master and each worker is sampled every 50 ms; the body's sha256 must equal "
        "the file's. The mirror holds back the last 64 KiB until the whole zip has passed its "
        "checks; 7c shows that wait in brackets. Reference: the same GET from nginx right "
        "after.",
    ]


def details(d: GoDownloads, z: ZipPull, g: GoPeers, snapshots: list[GoCheckpoint]) -> list[str]:
    out = ["", "go mod download (seconds per round; what nginx served during the run):", ""]
    for peer, values in d.seconds.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        out.append(f"- {peer}: {rounds} (nginx saw, last round: {d.nginx_saw[peer]})")
    out += ["", f"Cold module zip ({g.big.size / MIB:.0f} MiB, built in {g.big.seconds:.0f}s):", ""]
    out.append(
        f"- mirror: {z.seconds:.1f}s (headers after {z.headers_after * 1000:.0f} ms, final read "
        f"waited {z.last_gap * 1000:.0f} ms), sha256 {'ok' if z.ok else 'WRONG'}, upstream "
        f"GETs of the zip {z.upstream_gets}, largest process {_mib(z.before)} MiB before -> "
        f"peak {_mib(z.peak_worker)} MiB (gunicorn master {_mib(z.peak_master)} MiB), sum "
        f"{_mib(z.peak_sum)} MiB, {z.samples} samples; CPU used by the serving processes "
        f"{z.cpu:.1f} s, of which {z.cpu_sys:.1f} s in the kernel; workers' lifetime peak "
        f"(VmHWM) afterwards {', '.join(_mib(v) for v in z.hwm_after)} MiB"
    )
    out.append(
        f"- nginx: {z.nginx_seconds:.2f}s, sha256 {'ok' if z.nginx_ok else 'WRONG'}",
    )
    out += ["", "Go mirror: resident memory of its workers (MiB) and log warnings so far:", ""]
    for phase, workers, warnings in snapshots:
        out.append(
            f"- {phase}: workers {', '.join(_mib(v) for v in workers)}; "
            f"mirror log warnings {warnings}"
        )
    return out


def log_section(g: GoPeers) -> list[str]:
    count, lines = log_problems(g.mirror.log)
    out = [f"- Go mirror log: {count} warning/error lines" + (":" if lines else ".")]
    out += [f"    - `{line[:300]}`" for line in lines]
    return out
