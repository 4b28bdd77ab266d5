"""Go modules in prewarm, freshness control and re-verification, end to end: the real server
(gunicorn) and a real Celery worker on a Redis database of this test process's own
(tests/support/prewarm_env.py), a static GOPROXY upstream (nginx) and a real checksum
database (golang.org/x/mod/sumdb), each behind a counting FaultProxy that the tests stop to
take the upstream away, and the real go command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.gocmd import go_env, run_go
from tests.support.gomodules import Module, StaticServer, write_tree
from tests.support.gosumdb import SumDB
from tests.support.prewarm_env import PrewarmEnv

SUMDB_NAME = "sum.prewarm.test"
WARM = Module("example.com/warm", "v1.0.0", pad=300_000)
WARM_NEXT = Module("example.com/warm", "v1.1.0")
UPPER = Module("example.com/Upper/Latest", "v1.2.0")
TAMPER = Module("example.com/tamper", "v1.0.0")
MOVING = [Module("example.com/moving", f"v1.{minor}.0") for minor in range(3)]
PURGED = Module("example.com/purged", "v1.0.0")
LATER = Module("example.com/later", "v1.0.0")
ON_START = [WARM, WARM_NEXT, UPPER, TAMPER, MOVING[0], PURGED]
EVERY = [*ON_START, *MOVING[1:], LATER]  # what the checksum database will vouch for


@dataclass
class World:
    env: PrewarmEnv
    tree: Path  # the upstream's GOPROXY tree
    proxy: FaultProxy  # in front of the module upstream
    sums: FaultProxy  # in front of the checksum database
    sumdb: SumDB
    tmp: Path

    @property
    def url(self) -> str:
        return self.env.server.url

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30)

    def stored(self, key: str) -> Path:
        return self.env.server.data_dir / "storage" / "objects" / key

    def shell(self, code: str) -> Any:
        """Run Python against the server's database (as its worker does); the JSON that
        its last line prints."""
        return json.loads(self.env.shell(code))

    def go_download(self, name: str, *refs: str) -> list[dict[str, Any]]:
        """`go mod download -json REFS` through the mirror, checksum database through the
        mirror too (GOSUMDB names no URL), in a fresh module cache."""
        project = self.tmp / name / "project"
        project.mkdir(parents=True)
        (project / "go.mod").write_text("module example.com/p\n\ngo 1.18\n")
        env = go_env(self.tmp / name, self.url, self.sumdb.key)
        out = run_go(["mod", "download", "-json", *refs], project, env).stdout
        decoder, results, at = json.JSONDecoder(), [], 0
        while at < len(out := out.strip()):  # a stream of JSON objects
            result, at = decoder.raw_decode(out, at)
            results.append(result)
            at += len(out[at:]) - len(out[at:].lstrip())
        return results


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("goprewarm")
    tree, sums_tree = tmp / "tree", tmp / "sums"
    write_tree(tree, ON_START)
    write_tree(sums_tree, EVERY)
    static = StaticServer(tree).start()
    sumdb = SumDB(SUMDB_NAME, sums_tree).start()
    proxy, sums = FaultProxy(static.url).start(), FaultProxy(sumdb.url).start()
    config = tmp / "mirror.yml"
    config.write_text(
        f"""
upstreams:
  - {{name: golang, kind: go, url: "{proxy.url}", tag_ttl: 3600}}
  - {{name: sums, kind: gosumdb, sumdb: {SUMDB_NAME}, url: "{sums.url}", key: "{sumdb.key}"}}
"""
    )
    env = PrewarmEnv(tmp / "var", config, MIRROR_PREWARM_BACKOFF="0.2", MIRROR_PREWARM_RETRIES="1")
    with env:
        yield World(env, tree, proxy, sums, sumdb, tmp)
    for service in (proxy, sums, sumdb, static):
        service.stop()


@pytest.fixture(autouse=True)
def _upstreams_running(world: World) -> Iterator[None]:
    yield
    world.proxy.start()
    world.sums.start()


def _succeeded(world: World, modules: list[str]) -> dict[str, Any]:
    job = world.env.wait_job(world.env.prewarm(modules=modules)["id"], timeout=40)
    assert job["status"] == "succeeded", job
    return job


def test_warmed_modules_download_and_verify_with_every_upstream_stopped(world: World) -> None:
    refs = ["example.com/warm@v1.0.0", "example.com/warm@latest", "example.com/Upper/Latest"]
    job = _succeeded(world, refs)
    by_ref = {item["reference"]: item for item in job["items"]}
    assert set(by_ref) == {*refs[:2], "example.com/Upper/Latest@latest"}  # normalized
    warmed = by_ref["example.com/warm@v1.0.0"]
    assert warmed["bytes_done"] == warmed["bytes_total"] > 300_000
    zips = world.proxy.count("GET", ".zip")
    assert zips == 3  # warm v1.0.0 and v1.1.0, Upper/Latest v1.2.0
    # A prewarm is not a download: nothing counted for the popular refresh.
    rows = world.env.api("GET", "/api/v1/modules/?module=example.com/warm").json()["results"]
    assert sorted((r["version"], r["download_count"]) for r in rows) == [
        ("v1.0.0", 0),
        ("v1.1.0", 0),
    ]
    # Warm again: everything is cached, nothing is fetched.
    again = _succeeded(world, refs)
    assert world.proxy.count("GET", ".zip") == zips
    assert all(item["bytes_done"] == item["bytes_total"] > 0 for item in again["items"])

    world.proxy.stop()
    world.sums.stop()
    results = world.go_download("offline", *refs[:2], "example.com/Upper/Latest@latest")
    assert {(r["Path"], r["Version"]) for r in results} == {
        ("example.com/warm", "v1.0.0"),
        ("example.com/warm", "v1.1.0"),
        ("example.com/Upper/Latest", "v1.2.0"),
    }
    assert all(not r.get("Error") and r["Sum"].startswith("h1:") for r in results)
    sums = {r["Path"] + "@" + r["Version"]: r["Sum"] for r in results}
    assert sums["example.com/warm@v1.0.0"] == WARM.h1()
    # The go command checked each against the checksum database, through the mirror.
    lookups = world.tmp / "offline/modcache/cache/download/sumdb" / SUMDB_NAME / "lookup"
    assert (lookups / "example.com/!upper/!latest@v1.2.0").exists()


def test_popular_counts_downloads_and_keeps_lists_fresh(world: World) -> None:
    assert world.get(WARM.url_path("zip")).status_code == 200
    assert world.get("/example.com/warm/@v/list").status_code == 200
    deadline = time.monotonic() + 10
    while True:  # pull counts are flushed every 0.2 s (MIRROR_STATS_FLUSH_SECONDS)
        rows = world.env.api("GET", "/api/v1/modules/?module=example.com/warm").json()
        counts = {r["version"]: r["download_count"] for r in rows["results"]}
        if counts.get("v1.0.0", 0) >= 1:
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.1)
    popular = world.shell(
        "import json, datetime as dt; from mirror import ecosystems;"
        "since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1);"
        "print(json.dumps([p.reference for p in ecosystems.get('module').popular(since, 10)]))"
    )
    assert "example.com/warm@v1.0.0" in popular
    assert "example.com/warm@latest" in popular  # its list is cached: refreshed on schedule
    assert not [ref for ref in popular if ref.startswith("example.com/tamper")]  # no downloads


def test_bad_references_are_refused_with_a_message(world: World) -> None:
    for ref, why in [
        ("example.com/warm@main", "not a canonical semantic version"),
        ("Example.com/warm@v1.0.0", "lower-case domain"),
        ("example.com/warm/v2@v1.0.0", "does not match"),
    ]:
        response = world.env.api("POST", "/api/v1/prewarm/", json={"modules": [ref]})
        assert response.status_code == 400, response.text
        assert why in response.text


def test_reverify_catches_a_module_changed_behind_the_mirrors_back(world: World) -> None:
    for ext in ("info", "mod", "zip"):
        assert world.get(TAMPER.url_path(ext)).status_code == 200
    key = "go/example.com/tamper/@v/v1.0.0.zip"
    findings = (
        "import json; from mirror import ecosystems;"
        "print(json.dumps([[f.key, f.reason] for f in ecosystems.get('module').reverify(1 << 30)]))"
    )
    assert world.shell(findings) == []  # everything intact
    other = Module(TAMPER.path, TAMPER.version, files={"tamper.go": b"package tamper\n// evil\n"})
    world.stored(key).write_bytes(other.zip_bytes())  # a valid module zip, but not this one

    [[found, reason]] = world.shell(findings)
    assert found == key and "checksum database says " + TAMPER.h1() in reason
    quarantined = world.shell(
        "import json; from mirror import reverify;"
        "print(json.dumps([row.key for row in reverify.run()]))"
    )
    assert quarantined == [key]
    assert not world.stored(key).exists()
    # The next download is fetched anew from the upstream and verified.
    answer = world.get(TAMPER.url_path("zip"))
    assert answer.status_code == 200 and answer.headers["X-Cache"] == "MISS"
    assert answer.content == TAMPER.zip_bytes()
    assert world.proxy.count("GET", "/example.com/tamper/@v/v1.0.0.zip") == 2


def test_reverify_quarantines_a_go_mod_changed_in_the_database(world: World) -> None:
    """`.info`/`.mod` live in the database (documents): one changed there is reported like an
    object (a QuarantinedObject row, its bytes kept) and fetched anew on the next request."""
    for ext in ("info", "zip"):  # the version is known (as a download makes it)
        assert world.get(TAMPER.url_path(ext)).status_code == 200
    good = world.get(TAMPER.url_path("mod"))
    assert good.status_code == 200
    changed = world.shell(
        "from mirror.models import CachedDocument;"
        "print(CachedDocument.objects.filter(namespace='go-mod',"
        " key='example.com/tamper@v1.0.0').update(body=b'module evil\\n'))"
    )
    assert changed == 1, world.shell(
        "import json; from mirror.models import CachedDocument;"
        "print(json.dumps(list(CachedDocument.objects.values_list('namespace', 'key'))))"
    )
    quarantined = world.shell(
        "import json; from mirror import reverify;"
        "print(json.dumps([[row.key, row.quarantine_key] for row in reverify.run()]))"
    )
    assert [key for key, _ in quarantined] == ["documents/go-mod/example.com/tamper@v1.0.0"]
    assert world.stored(quarantined[0][1]).read_bytes() == b"module evil\n"
    again = world.get(TAMPER.url_path("mod"))
    assert (again.status_code, again.content) == (200, good.content)
    assert again.headers["X-Cache"] == "MISS"


def test_refresh_now_by_job_and_by_api(world: World) -> None:
    assert world.get("/example.com/moving/@v/list").text == "v1.0.0\n"
    write_tree(world.tree, [MOVING[1]])  # a new version upstream; the list is cached (1 h)
    assert world.get("/example.com/moving/@v/list").text == "v1.0.0\n"

    # A refresh job (as the scheduled popular refresh makes) revalidates list and @latest.
    job_id = world.shell(
        "from mirror import prewarm;"
        "spec = prewarm.ItemSpec('module', 'example.com/moving@latest');"
        "print(prewarm.create_job([spec], source='schedule', refresh=True).pk)"
    )
    job = world.env.wait_job(job_id, timeout=40)
    assert job["status"] == "succeeded", job
    assert world.get("/example.com/moving/@v/list").text == "v1.0.0\nv1.1.0\n"
    assert world.get(MOVING[1].url_path("zip")).headers["X-Cache"] == "HIT"  # warmed

    write_tree(world.tree, [MOVING[2]])
    reader = world.env.server.manage("mirror_token", "create", "go-reader", "--scope", "read")
    denied = httpx.post(
        f"{world.url}/api/v1/go/refresh/",
        json={"module": "example.com/moving"},
        headers={"Authorization": f"Bearer {reader.strip().splitlines()[-1]}"},
    )
    assert denied.status_code == 403
    response = world.env.api("POST", "/api/v1/go/refresh/", json={"module": "example.com/moving"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "module": "example.com/moving",
        "list": {"versions": ["v1.0.0", "v1.1.0", "v1.2.0"], "cache": "MISS"},
        "latest": {"version": "v1.2.0", "cache": "MISS"},
    }
    listing = world.get("/example.com/moving/@v/list")
    assert listing.text == "v1.0.0\nv1.1.0\nv1.2.0\n" and listing.headers["X-Cache"] == "HIT"

    missing = world.env.api("POST", "/api/v1/go/refresh/", json={"module": "example.com/none"})
    assert missing.status_code == 200
    assert missing.json()["list"] == {"versions": None, "cache": None}
    for body in ({"module": "Example.com/x"}, {"module": ""}, {}, [], {"module": ["a"]}):
        bad = world.env.api("POST", "/api/v1/go/refresh/", json=body)
        assert bad.status_code == 400, (body, bad.text)
    bad = world.env.api("POST", "/api/v1/go/refresh/", json={"module": "example.com/a/../b"})
    assert bad.status_code == 400 and "invalid module path" in bad.json()["module"][0]


def test_purge_a_module_and_one_version(world: World) -> None:
    for path in (
        *(PURGED.url_path(ext) for ext in ("info", "mod", "zip")),
        "/example.com/purged/@v/list",
    ):
        assert world.get(path).status_code == 200
    folder = world.stored("go/example.com/purged/@v")
    assert [p.name for p in folder.iterdir()] == ["v1.0.0.zip"]  # .info and .mod: documents

    response = world.env.api("POST", "/api/v1/go/purge/", json={"module": "example.com/purged"})
    assert response.status_code == 200, response.text
    purged = response.json()
    assert (purged["versions"], purged["objects"]) == (1, 3)
    assert purged["documents"] >= 2  # the list and the checksum-database lookup
    assert list(folder.iterdir()) == []
    rows = world.env.api("GET", "/api/v1/modules/?module=example.com/purged").json()
    assert rows["count"] == 0

    answer = world.get(PURGED.url_path("zip"))
    assert answer.status_code == 200 and answer.headers["X-Cache"] == "MISS"
    assert world.proxy.count("GET", "/example.com/purged/@v/v1.0.0.zip") == 2
    for ext in ("info", "mod"):
        answer = world.get(PURGED.url_path(ext))
        assert answer.status_code == 200 and answer.headers["X-Cache"] == "MISS"
        assert world.proxy.count("GET", f"/example.com/purged/@v/v1.0.0.{ext}") == 2
    assert world.proxy.count("GET", "/example.com/purged/@v/list") == 1
    world.get("/example.com/purged/@v/list")
    assert world.proxy.count("GET", "/example.com/purged/@v/list") == 2  # fetched anew

    [row] = world.env.api("GET", "/api/v1/modules/?module=example.com/purged").json()["results"]
    assert world.env.api("DELETE", f"/api/v1/modules/{row['id']}/").status_code == 204
    assert not world.stored("go/example.com/purged/@v/v1.0.0.zip").exists()
    assert world.env.api("GET", f"/api/v1/modules/{row['id']}/").status_code == 404
    assert world.env.api("GET", "/api/v1/modules/x/").status_code == 404
    assert world.env.api("GET", "/api/v1/modules/?module=..").status_code == 400


def test_purge_cached_not_found_answers(world: World) -> None:
    assert world.get("/example.com/later/@v/list").status_code == 404
    write_tree(world.tree, [LATER])  # published upstream; the mirror's "not found" is cached
    assert world.get("/example.com/later/@v/list").status_code == 404
    assert world.proxy.count("GET", "/example.com/later/@v/list") == 1

    response = world.env.api(
        "POST", "/api/v1/go/purge-negative/", json={"module": "example.com/later"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"module": "example.com/later", "purged": 1}
    listing = world.get("/example.com/later/@v/list")
    assert listing.status_code == 200 and listing.text == "v1.0.0\n"

    assert world.get("/example.com/gone/@latest").status_code == 404
    every = world.env.api("POST", "/api/v1/go/purge-negative/", json={})
    assert every.status_code == 200 and every.json()["module"] is None
    assert every.json()["purged"] >= 1
    assert world.get("/example.com/gone/@latest").status_code == 404
    assert world.proxy.count("GET", "/example.com/gone/@latest") == 2  # asked again
