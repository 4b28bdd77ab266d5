"""The Go module proxy: `go mod download` through the mirror (cold, warm) and from nginx serving
the same static GOPROXY tree directly, and the mirror's memory on a cold ~400 MiB module zip."""

from __future__ import annotations

import hashlib
import random
import shutil
import statistics
import time
import zipfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tests.mirror_server import MirrorServer
from tests.support.gocmd import go_env, run_go
from tests.support.gomodules import Module, StaticServer, write_tree

from . import rss
from .client import fetch
from .measure import BigPull, sampled_pull, say, settle
from .peers import MIRROR_ENV

MIB = 1024 * 1024
PAD = 20_000  # random bytes per small module: ~20 KB zips
BIG = Module("example.com/bench/big", "v1.0.0")
# The bench modules are in no checksum database: verification is off on purpose.
GO_ENV = {**MIRROR_ENV, "MIRROR_GO_VERIFY": "off"}
PEERS = ("nginx", "gunicorn alone", "mirror cold", "mirror warm")


@dataclass
class BigZip:
    """The large module zip as written into the tree."""

    module: Module
    size: int
    sha256: str
    seconds: float  # to build it


@dataclass
class GoPeers:
    """The static GOPROXY tree, nginx serving it, a mirror with nginx as its Go upstream, and
    the mirror's gunicorn serving the tree with no mirror in it (bench/static_wsgi.py)."""

    root: Path
    tree: Path
    nginx: StaticServer
    mirror: MirrorServer
    floor: MirrorServer
    rounds: list[list[Module]]  # 100 modules never requested before, per round
    big: BigZip

    @property
    def mirror_pid(self) -> int:
        assert self.mirror.proc is not None
        return self.mirror.proc.pid


def _round_modules(r: int, n: int) -> list[Module]:
    return [Module(f"example.com/bench/r{r}/m{i:03d}", "v1.0.0", pad=PAD) for i in range(n)]


def _write_big_zip(tree: Path, module: Module, mib: int) -> BigZip:
    """Write `module` (go.mod, module.go) plus `mib` MiB of random padding, zip streamed to disk.

    `Module.zip_bytes()` builds zips in memory; this one goes through `ZipFile.open("w")`.
    """
    started = time.monotonic()
    write_tree(tree, [module])  # .info, .mod, list, @latest (and a small zip, replaced here)
    path = tree / module.url_path("zip").lstrip("/")
    tmp = path.with_name(path.name + ".tmp")
    rng = random.Random(f"{module.path}@{module.version}")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(module.zip_files().items()):
            zf.writestr(module.prefix + name, data)
        with zf.open(module.prefix + "padding.bin", "w") as out:
            for _ in range(mib):
                out.write(rng.randbytes(MIB))
    tmp.replace(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(MIB):
            digest.update(data)
    return BigZip(module, path.stat().st_size, digest.hexdigest(), time.monotonic() - started)


def _write_config(path: Path, upstream_url: str) -> Path:
    path.write_text(f"upstreams:\n  - {{name: static, kind: go, url: {upstream_url}}}\n")
    return path


def start(root: Path, stack: ExitStack, modules: int, rounds: int, zip_mib: int) -> GoPeers:
    """Write the tree, start nginx on it and a fresh mirror; `stack` stops both."""
    tree = root / "goproxy-tree"
    per_round = [_round_modules(r + 1, modules) for r in range(rounds)]
    write_tree(tree, [m for mods in per_round for m in mods])
    big = _write_big_zip(tree, BIG, zip_mib)
    say(
        f"  wrote {rounds} x {modules} modules and a {big.size / MIB:.0f} MiB zip "
        f"({big.seconds:.1f}s)"
    )
    nginx = StaticServer(tree)
    stack.callback(nginx.stop)
    nginx.start()
    data = root / "go-mirror"
    data.mkdir()
    mirror = MirrorServer(data, _write_config(data / "mirror.yml", nginx.url), **GO_ENV)
    stack.callback(mirror.stop)
    mirror.setup()
    mirror.start()
    floor = _start_floor(root / "go-floor", tree, nginx.url, stack)
    say(f"  nginx {nginx.url}, mirror {mirror.url}, gunicorn alone {floor.url}")
    return GoPeers(root, tree, nginx, mirror, floor, per_round, big)


def _start_floor(data: Path, tree: Path, upstream_url: str, stack: ExitStack) -> MirrorServer:
    """gunicorn as the mirror runs it (config/gunicorn.py, the same environment), serving
    `tree` through bench/static_wsgi.py instead of Django: what the server itself costs."""
    data.mkdir()
    env = {**GO_ENV, "BENCH_STATIC_ROOT": str(tree)}
    floor = MirrorServer(
        data, _write_config(data / "mirror.yml", upstream_url), app="bench.static_wsgi", **env
    )
    stack.callback(floor.stop)
    floor.setup()  # config/gunicorn.py runs Django's checks, the start a sweep: a database
    return floor.start()


def _requests(lines: list[str]) -> str:
    """`zip 100, info 100, mod 100` for nginx access-log lines."""
    kinds: Counter[str] = Counter()
    for line in lines:
        path = line.split('"')[1].split()[1] if line.count('"') >= 2 else ""
        kinds[path.rsplit(".", 1)[-1] if "/@v/" in path else path.rsplit("/", 1)[-1]] += 1
    return ", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "none"


def _go_download(folder: Path, proxy: str, modules: list[Module]) -> float:
    """`go mod download` of `modules` in a throwaway module with a fresh module cache; seconds.

    Everything the go command wrote is removed afterwards.
    """
    project = folder / "consumer"
    project.mkdir(parents=True)
    requires = "\n".join(f"\t{m.path} {m.version}" for m in modules)
    (project / "go.mod").write_text(
        f"module example.com/consumer\n\ngo 1.18\n\nrequire (\n{requires}\n)\n"
    )
    env = go_env(folder, proxy, None)
    settle()
    started = time.monotonic()
    run_go(["mod", "download"], project, env, timeout=600)
    seconds = time.monotonic() - started
    got = list((Path(env["GOMODCACHE"]) / "cache" / "download").rglob("*.zip"))
    if len(got) != len(modules):
        raise RuntimeError(f"go mod download left {len(got)} zips, not {len(modules)}")
    run_go(["clean", "-modcache"], project, env)  # the module cache is read-only
    shutil.rmtree(folder)
    return seconds


@dataclass
class GoDownloads:
    """`go mod download` seconds per peer and round; what reached nginx (last round)."""

    modules: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    nginx_saw: dict[str, str] = field(default_factory=dict)

    def median(self, peer: str) -> float:
        return statistics.median(self.seconds[peer])


def downloads(g: GoPeers) -> GoDownloads:
    """Measure 6: per round, 100 fresh modules from nginx, from gunicorn alone, then through
    the mirror twice (cold, then warm); in even rounds (the 2nd, 4th...) the order is
    reversed, the mirror's cold run still before its warm one."""
    out = GoDownloads(modules=len(g.rounds[0]))
    urls = {
        "nginx": g.nginx.url,
        "gunicorn alone": g.floor.url,
        "mirror cold": g.mirror.url,
        "mirror warm": g.mirror.url,
    }
    run_go(["version"], g.root, go_env(g.root / "go-warmup", g.nginx.url, None))
    for r, modules in enumerate(g.rounds):
        order = list(PEERS) if r % 2 == 0 else [*PEERS[2:], PEERS[1], PEERS[0]]
        for peer in order:
            seen = len(g.nginx.access_log())
            folder = g.root / f"go-{r + 1}-{peer.replace(' ', '-')}"
            seconds = _go_download(folder, urls[peer], modules)
            out.seconds.setdefault(peer, []).append(seconds)
            out.nginx_saw[peer] = _requests(g.nginx.access_log()[seen:])
            say(f"  round {r + 1}: {peer:<14} {seconds:6.2f}s (nginx saw: {out.nginx_saw[peer]})")
    shutil.rmtree(g.root / "go-warmup", ignore_errors=True)
    return out


@dataclass
class ZipPull(BigPull):
    """The cold large zip through the mirror, and the same GET from nginx."""

    size: int = 0
    nginx_seconds: float = 0.0
    nginx_ok: bool = False
    hwm_after: list[int] = field(default_factory=list)


def big_zip(g: GoPeers) -> ZipPull:
    """Measure 7: GET the large module zip, cold, through the mirror while sampling the RSS of
    its gunicorn master and workers; then the same GET from nginx."""
    path = g.big.module.url_path("zip")
    digest = f"sha256:{g.big.sha256}"
    seen = len(g.nginx.access_log())
    b, d = sampled_pull(
        g.mirror.url + path,
        digest,
        lambda: rss.gunicorn_pids(g.mirror_pid),
        lambda: sum(path in line for line in g.nginx.access_log()[seen:]),
        g.big.size,
    )
    settle()
    direct = fetch(g.nginx.url + path, timeout=900)
    z = ZipPull(
        **vars(b),
        size=d.size,
        nginx_seconds=direct.seconds,
        nginx_ok=direct.matches(digest),
        hwm_after=[rss.hwm(pid) or 0 for pid in rss.children(g.mirror_pid)],
    )
    say(
        f"  mirror: {z.size / MIB:.0f} MiB in {z.seconds:.1f}s (last read waited "
        f"{z.last_gap * 1000:.0f} ms), sha256 {'ok' if z.ok else 'WRONG'}, peak RSS "
        f"{z.peak_worker / MIB:.0f} MiB per worker (before {z.before / MIB:.0f}), sum "
        f"{z.peak_sum / MIB:.0f} MiB, {z.samples} samples, {z.cpu:.1f} CPU s "
        f"({z.cpu_sys:.1f} in the kernel); nginx {z.nginx_seconds:.1f}s"
    )
    return z


def memory_snapshot(g: GoPeers) -> list[int]:
    """Current RSS (bytes) of the Go mirror's workers, sorted."""
    return sorted(rss.rss(pid) or 0 for pid in rss.children(g.mirror_pid))
