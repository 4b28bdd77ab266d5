"""The Go module mirror end to end: the real go command, static GOPROXY upstreams the tests
generate (served by nginx, behind counting fault proxies), and a real checksum database
built from golang.org/x/mod."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.mirror_server import MirrorServer
from tests.support.faultproxy import FaultProxy
from tests.support.gocmd import GoError, go_env, run_go
from tests.support.gomodules import Module, StaticServer, write_tree
from tests.support.gosumdb import SumDB
from tests.support.net import get_together

SUMDB_NAME = "sum.entrepot.test"
PUBLIC_A = [
    Module("example.com/Upper/Mod", "v1.0.0"),
    Module("example.com/old", "v2.0.0+incompatible"),
    Module("example.com/lib", "v1.2.0"),
    Module("example.com/lib", "v1.3.0"),
    Module("example.com/once", "v1.0.0", pad=200_000),
    Module("example.com/tamper", "v1.0.0"),
    Module("example.com/offline", "v1.0.0"),
    Module("example.com/concurrent", "v1.0.0", pad=2_000_000),
    Module("example.com/fallthrough", "v1.0.0"),
]
PUBLIC_B = [Module("example.com/second", "v1.0.0")]
PRIVATE = [Module("corp.example.com/secret", "v1.0.0")]


@dataclass
class GoWorld:
    mirror: MirrorServer
    first: FaultProxy
    second: FaultProxy
    corp: FaultProxy
    flaky: FaultProxy
    sumdb: SumDB
    tree_a: Path
    tmp: Path

    def env(self, name: str, *, sums: bool = True) -> dict[str, str]:
        """A fresh go environment using the mirror, GOSUMDB=NAME+KEY (no URL) or off."""
        return go_env(self.tmp / name, self.mirror.url, self.sumdb.key if sums else None)

    def project(self, name: str, requires: list[Module]) -> Path:
        folder = self.tmp / name / "project"
        folder.mkdir(parents=True)
        lines = "\n".join(f"\t{m.path} {m.version}" for m in requires)
        (folder / "go.mod").write_text(
            f"module example.com/p\n\ngo 1.18\n\nrequire (\n{lines}\n)\n"
        )
        return folder


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoWorld]:
    tmp = tmp_path_factory.mktemp("go")
    trees = {name: tmp / name for name in ("a", "b", "corp", "sums")}
    write_tree(trees["a"], PUBLIC_A)
    write_tree(trees["b"], PUBLIC_B)
    write_tree(trees["corp"], PRIVATE)
    write_tree(trees["sums"], PUBLIC_A + PUBLIC_B)  # what the checksum database recorded
    servers = [StaticServer(trees[name]) for name in ("a", "b", "corp")]
    for server in servers:
        server.start()
    first, second, corp = (FaultProxy(s.url) for s in servers)
    flaky = FaultProxy(servers[1].url)
    flaky.status = 503  # always failing; marked fall_through, so the chain goes on
    for proxy in (first, second, corp, flaky):
        proxy.start()
    sumdb = SumDB(SUMDB_NAME, trees["sums"])
    sumdb.start()
    config = tmp / "mirror.yml"
    config.write_text(
        f"""
upstreams:
  - {{name: corp, kind: go, url: "{corp.url}", modules: ["corp.example.com/*"], verify_sums: false}}
  - {{name: flaky, kind: go, url: "{flaky.url}", fall_through: true, tag_ttl: 1}}
  - {{name: first, kind: go, url: "{first.url}", tag_ttl: 1}}
  - {{name: second, kind: go, url: "{second.url}"}}
  - {{name: sums, kind: gosumdb, sumdb: {SUMDB_NAME}, url: "{sumdb.url}", key: "{sumdb.key}"}}
"""
    )
    mirror = MirrorServer(tmp / "var", config)
    mirror.setup()
    mirror.start()
    yield GoWorld(mirror, first, second, corp, flaky, sumdb, trees["a"], tmp)
    mirror.stop()
    sumdb.stop()
    for proxy in (first, second, corp, flaky):
        proxy.stop()
    for server in servers:
        server.stop()


def test_go_mod_download_verified_through_the_mirrors_sumdb(go: GoWorld) -> None:
    project = go.project("download", PUBLIC_A[:3])
    env = go.env("download")
    out = run_go(["mod", "download", "-json"], project, env).stdout
    assert out.count('"Sum": "h1:') == 3
    # The go command verified each module with the checksum database, which it reached
    # through the mirror (GOSUMDB names no URL): its lookups are in its cache.
    lookups = Path(env["GOMODCACHE"]) / "cache/download/sumdb" / SUMDB_NAME / "lookup"
    assert (lookups / "example.com/!upper/!mod@v1.0.0").exists()
    assert (lookups / "example.com/old@v2.0.0+incompatible").exists()
    assert (Path(env["GOPATH"]) / "pkg/sumdb" / SUMDB_NAME / "latest").exists()


def test_list_versions_and_latest(go: GoWorld) -> None:
    project = go.project("versions", [])
    env = go.env("versions")
    out = run_go(["list", "-m", "-versions", "example.com/lib"], project, env).stdout
    assert out.strip() == "example.com/lib v1.2.0 v1.3.0"
    latest = run_go(["list", "-m", "example.com/lib@latest"], project, env).stdout
    assert latest.strip() == "example.com/lib v1.3.0"
    answer = httpx.get(f"{go.mirror.url}/example.com/lib/@latest")
    assert answer.json()["Version"] == "v1.3.0"


def test_missing_module_is_404_quickly(go: GoWorld) -> None:
    started = time.monotonic()
    for path in ("example.com/missing/@v/list", "example.com/missing/@v/v1.0.0.info"):
        response = httpx.get(f"{go.mirror.url}/{path}")
        assert response.status_code in (404, 410)
        assert response.headers["Content-Type"].startswith("text/plain")
    assert time.monotonic() - started < 3
    project = go.project("missing", [Module("example.com/missing", "v1.0.0")])
    with pytest.raises(GoError, match="404"):
        run_go(["mod", "download"], project, go.env("missing"))


def test_zip_fetched_once_however_often_downloaded(go: GoWorld) -> None:
    module = PUBLIC_A[4]
    for n in range(2):
        run_go(["mod", "download"], go.project(f"once{n}", [module]), go.env(f"once{n}"))
    for _ in range(3):
        assert httpx.get(f"{go.mirror.url}{module.url_path('zip')}").status_code == 200
    assert go.first.count("GET", "/example.com/once/@v/v1.0.0.zip") == 1


def test_concurrent_cold_zip_requests_fetch_once(go: GoWorld) -> None:
    module = PUBLIC_A[7]
    go.first.delay_per_chunk = 0.005
    try:
        bodies = get_together([f"{go.mirror.url}{module.url_path('zip')}"] * 8)
    finally:
        go.first.delay_per_chunk = 0
    assert all(body == module.zip_bytes() for body in bodies)
    assert go.first.count("GET", "/example.com/concurrent/@v/v1.0.0.zip") == 1


def test_cached_modules_and_lists_serve_with_upstream_down(go: GoWorld) -> None:
    module = PUBLIC_A[6]
    run_go(["mod", "download"], go.project("online", [module]), go.env("online"))
    httpx.get(f"{go.mirror.url}/example.com/offline/@v/list")
    time.sleep(1.1)  # past the first upstream's list TTL
    go.first.stop()
    try:
        run_go(["mod", "download"], go.project("offline", [module]), go.env("offline"))
        listing = httpx.get(f"{go.mirror.url}/example.com/offline/@v/list")
        assert listing.status_code == 200 and listing.text == "v1.0.0\n"
        assert listing.headers["X-Cache"] == "STALE"
        uncached = httpx.get(f"{go.mirror.url}/example.com/never/@v/list", timeout=20)
        assert uncached.status_code == 503
    finally:
        go.first.start()


def test_chain_falls_through_404_to_the_next_upstream(go: GoWorld) -> None:
    go.first.reset()
    module = PUBLIC_B[0]
    run_go(["mod", "download"], go.project("chain", [module]), go.env("chain"))
    assert go.first.count("GET", "/example.com/second/@v/v1.0.0.") >= 1  # asked, 404
    assert go.second.count("GET", "/example.com/second/@v/v1.0.0.zip") == 1


def test_fall_through_upstream_is_passed_on_any_error(go: GoWorld) -> None:
    go.flaky.reset()
    response = httpx.get(f"{go.mirror.url}/example.com/fallthrough/@v/v1.0.0.info")
    assert response.status_code == 200
    assert go.flaky.count("GET", "/example.com/fallthrough/@v/v1.0.0.info") == 1  # asked: 503


def test_private_modules_never_reach_public_upstreams(go: GoWorld) -> None:
    go.first.reset()
    go.second.reset()
    env = go.env("private")
    env["GONOSUMDB"] = "corp.example.com"  # as a client would set for private modules
    run_go(["mod", "download"], go.project("private", PRIVATE), env)
    assert go.corp.count("GET", "/corp.example.com/secret/@v/v1.0.0.zip") == 1
    public = go.first.requests + go.second.requests + go.flaky.requests
    assert not [path for _, path in public if "corp.example.com" in path]
    assert "corp.example.com" not in go.sumdb.log()
    lookup = httpx.get(f"{go.mirror.url}/sumdb/{SUMDB_NAME}/lookup/corp.example.com/secret@v1.0.0")
    assert lookup.status_code == 404
    assert "corp.example.com" not in go.sumdb.log()


def test_zip_changed_after_sumdb_recorded_it_is_refused(go: GoWorld) -> None:
    module = PUBLIC_A[5]
    # The checksum database records the original hashes.
    recorded = httpx.get(f"{go.mirror.url}/sumdb/{SUMDB_NAME}/lookup/example.com/tamper@v1.0.0")
    assert recorded.status_code == 200 and b"example.com/tamper v1.0.0 h1:" in recorded.content
    evil = Module(module.path, module.version, files={"module.go": b"package tamper // evil\n"})
    write_tree(go.tree_a, [evil])  # the upstream now serves other bytes
    project = go.project("tamper", [module])
    # A small file that fails verification is refused with a 502 and its reason: the mirror
    # holds back its tail (64 KiB) until it is verified.
    with pytest.raises(GoError, match="502 Bad Gateway"):
        run_go(["mod", "download"], project, go.env("tamper", sums=False))
    zip_url = f"{go.mirror.url}{module.url_path('zip')}"
    refused = httpx.get(zip_url)
    assert refused.status_code == 502 and "checksum database" in refused.text
    cached = list((go.mirror.data_dir / "storage/objects/go").rglob("*tamper*"))
    assert not [p for p in cached if p.suffix == ".zip"]


BAD = [
    ("/example.com/../x/@v/list", 400),
    ("/Example.com/x/@v/list", 400),
    ("/example.com/Upper/@v/list", 400),
    ("/example.com/x/@v/v1.0.info", 404),  # not canonical: a query this mirror won't resolve
    ("/example.com/x/@v/master.info", 404),
    ("/example.com/x/@v/v2.0.0.info", 404),
    ("/example.com/x/v2/@v/v2.0.0+incompatible.info", 404),
    ("/example.com/x/@v/v1.0.0;rm.info", 400),
    ("/example.com/x/@v/v1.0.0.exe", 404),
    ("/example.com/x%00/@v/list", 400),
    ("/example.com/x/@v/v1.0.0%00.zip", 400),
    ("/nodot/@v/list", 400),
    ("/example.com/x/@v/!!v1.0.0.info", 400),
    ("/sumdb/unknown.example/supported", 404),
    ("/sumdb/unknown.example/lookup/example.com/x@v1.0.0", 404),
    (f"/sumdb/{SUMDB_NAME}/lookup/../../etc@v1.0.0", 404),  # normalized away from /sumdb
    (f"/sumdb/{SUMDB_NAME}/tile/8/0/../../x", 404),
    (f"/sumdb/{SUMDB_NAME}/etc/passwd", 404),
]


@pytest.mark.parametrize(("path", "status"), BAD)
def test_malformed_paths_are_4xx(go: GoWorld, path: str, status: int) -> None:
    go.first.reset()
    with httpx.Client() as client:
        request = client.build_request("GET", go.mirror.url)
        request.url = request.url.copy_with(raw_path=path.encode())
        response = client.send(request)
    assert response.status_code == status, response.text
    assert go.first.requests == []


def test_sumdb_supported_for_configured_name(go: GoWorld) -> None:
    assert httpx.get(f"{go.mirror.url}/sumdb/{SUMDB_NAME}/supported").status_code == 200
