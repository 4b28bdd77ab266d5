"""Issue 7 for the Go mirror: cache scoping of private modules, upstream answers that are not
trusted (shapes, caps, total deadlines), checksum-database tiles cached only once verified,
fetch-once for lists, @latest, .info and lookups, and no 500 for any request.

The upstreams are small scripted servers (tests/support/go_servers.py) in front of static
module trees, and the real checksum database (tests/support/gosumdb.py) behind a proxy that
can tamper with its tiles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.mirror_server import MirrorServer
from tests.support.go_servers import GoUpstream, SumdbTamper
from tests.support.gocmd import go_env, run_go
from tests.support.gomodules import Module, write_tree
from tests.support.gosumdb import SumDB
from tests.support.net import get_together

SUMDB = "sum.trust.test"
METADATA_TIMEOUT = 2.0
MAX_METADATA = 64 << 10
SECRET = Module("corp.example.com/secret", "v1.0.0")
SHARED_PUBLIC = Module("example.com/shared", "v1.0.0")
SHARED_PRIVATE = Module(
    "example.com/shared", "v1.0.0", files={"module.go": b"package shared // private\n"}
)
SHAPES = [Module(f"example.com/shape{i}", "v1.0.0") for i in range(10)]
PUBLIC = [
    SECRET,  # also published publicly: a private owner must still keep it from this upstream
    SHARED_PUBLIC,
    *SHAPES,
    Module("example.com/stale", "v1.0.0"),
    Module("example.com/trickle", "v1.0.0"),
    Module("example.com/many", "v1.0.0"),
    Module("example.com/tiles", "v1.0.0"),
    Module("example.com/tiles2", "v1.0.0"),
    Module("example.com/proof", "v1.0.0"),
]


@dataclass
class World:
    mirror: MirrorServer
    public: GoUpstream
    corp: GoUpstream
    shared_corp: GoUpstream
    tamper: SumdbTamper
    sumdb: SumDB
    tmp: Path

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(f"{self.mirror.url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]

    def load(self, upstreams: str) -> None:
        """Apply more upstreams (load_mirror_config, as an operator would)."""
        path = self.tmp / "more.yml"
        path.write_text(f"upstreams:\n{upstreams}")
        self.mirror.manage("load_mirror_config", str(path))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("gotrust")
    write_tree(tmp / "public", PUBLIC)
    write_tree(tmp / "corp", [SECRET])
    write_tree(tmp / "shared", [SHARED_PRIVATE])
    public, corp, shared_corp = (GoUpstream(tmp / n).start() for n in ("public", "corp", "shared"))
    sumdb = SumDB(SUMDB, tmp / "public").start()
    tamper = SumdbTamper(sumdb.url).start()
    config = tmp / "mirror.yml"
    config.write_text(
        f"""upstreams:
  - {{name: corp, kind: go, url: "{corp.url}", modules: ["corp.example.com/*"], enabled: false}}
  - {{name: public, kind: go, url: "{public.url}", tag_ttl: 1}}
  - {{name: sums, kind: gosumdb, sumdb: {SUMDB}, url: "{tamper.url}", key: "{sumdb.key}"}}
"""
    )
    mirror = MirrorServer(
        tmp / "var",
        config,
        MIRROR_UPSTREAM_METADATA_TIMEOUT=str(METADATA_TIMEOUT),
        MIRROR_MAX_METADATA_BYTES=str(MAX_METADATA),
    )
    mirror.setup()
    mirror.start()
    yield World(mirror, public, corp, shared_corp, tamper, sumdb, tmp)
    mirror.stop()
    for server in (tamper, sumdb, public, corp, shared_corp):
        server.stop()


# --- scoping (point 1) ---------------------------------------------------------------------


def test_disabled_private_upstream_still_owns_its_modules(world: World) -> None:
    paths = [
        *(SECRET.url_path(ext) for ext in ("info", "mod", "zip")),
        "/corp.example.com/secret/@v/list",
        "/corp.example.com/secret/@latest",
        f"/sumdb/{SUMDB}/lookup/corp.example.com/secret@v1.0.0",
    ]
    for path in paths:
        assert world.get(path).status_code in (404, 410), path
    assert world.public.count("corp.example.com") == 0
    assert world.tamper.count("corp.example.com") == 0  # the checksum database
    assert world.corp.count("corp.example.com") == 0  # disabled: not asked either


def test_private_module_never_shares_a_cache_entry_with_a_public_one(world: World) -> None:
    zip_path = SHARED_PUBLIC.url_path("zip")
    first = world.get(zip_path)
    assert first.status_code == 200 and first.content == SHARED_PUBLIC.zip_bytes()
    # An operator adds a private upstream owning this path: the public copy is not its copy.
    world.load(
        f'  - {{name: shared-corp, kind: go, url: "{world.shared_corp.url}", '
        'modules: ["example.com/shared"], verify_sums: false}\n'
    )
    private = world.get(zip_path)
    assert private.status_code == 200, private.text
    assert private.content == SHARED_PRIVATE.zip_bytes()
    assert world.shared_corp.count("/example.com/shared/@v/v1.0.0.zip") == 1
    world.mirror.wait_committed(zip_path)
    stored = world.mirror.data_dir / "storage/objects/go/_private/shared-corp/example.com/shared"
    assert (stored / "@v/v1.0.0.zip").read_bytes() == SHARED_PRIVATE.zip_bytes()


# --- upstream answers are not trusted (point 3) ----------------------------------------------

BAD_SHAPES = [
    ("@latest", b'{"Version": 5}'),
    ("@latest", b'["v1.0.0"]'),
    ("@latest", b"<html>v1.0.0</html>"),
    ("@latest", b'{"Version": "v1.0.0", "Time": 5}'),
    ("@latest", b'{"Version": "master"}'),
    ("@v/v1.0.0.info", b'{"Version": 5}'),
    ("@v/v1.0.0.info", b'["v1.0.0"]'),
    ("@v/v1.0.0.info", b"\xff\xfe not json"),
    ("@v/list", b"v1.0.0\n\xff\xfe\n"),
    ("@v/list", b"v1.0.0\n" * (MAX_METADATA // 7 + 1)),  # over the cap
]


@pytest.mark.parametrize(("case", "suffix", "body"), [(i, *c) for i, c in enumerate(BAD_SHAPES)])
def test_wrong_answer_shapes_are_502(world: World, case: int, suffix: str, body: bytes) -> None:
    path = f"/{SHAPES[case].path}/{suffix}"  # a module of its own: nothing cached yet
    world.public.script(path, body)
    try:
        response = world.get(path)
        assert response.status_code == 502, response.text
        assert response.headers["Content-Type"].startswith("text/plain")
        assert world.get(path).status_code == 502  # nothing was cached
    finally:
        del world.public.scripted[path]
    assert world.get(path).status_code == 200


def test_wrong_shaped_list_serves_the_cached_one_stale(world: World) -> None:
    path = "/example.com/stale/@v/list"
    assert world.get(path).text == "v1.0.0\n"
    time.sleep(1.1)  # past the upstream's tag_ttl
    world.public.script(path, b"v1.1.0\n\xff\n")
    try:
        response = world.get(path)
    finally:
        del world.public.scripted[path]
    assert response.status_code == 200 and response.text == "v1.0.0\n"
    assert response.headers["X-Cache"] == "STALE"


def test_trickling_upstream_gets_the_metadata_deadline_then_stale(world: World) -> None:
    module = "example.com/trickle"
    env = go_env(world.tmp / "trickle", world.mirror.url, None)
    project = world.tmp / "trickle" / "project"
    project.mkdir(parents=True)
    (project / "go.mod").write_text("module example.com/p\n\ngo 1.18\n")
    assert world.get(f"/{module}/@v/list").text == "v1.0.0\n"
    time.sleep(1.1)  # past the upstream's tag_ttl
    # One byte a second: every read is well within any per-read timeout.
    world.public.script(f"/{module}/@v/list", b"v1.0.0\nv1.1.0\n", trickle=1.0)
    world.public.script(f"/{module}/@latest", SHARED_PUBLIC.info_bytes(), trickle=1.0)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(3) as pool:
            listed = pool.submit(run_go, ["list", "-m", "-versions", module], project, env)
            stale = pool.submit(world.get, f"/{module}/@v/list")
            uncached = pool.submit(world.get, f"/{module}/@latest")  # nothing to serve
            assert listed.result().stdout.strip() == f"{module} v1.0.0"  # the cached list
            assert stale.result().headers["X-Cache"] == "STALE"
            assert uncached.result().status_code == 503
    finally:
        world.public.scripted.clear()
    assert time.monotonic() - started < METADATA_TIMEOUT + 3


# --- checksum-database tiles (point 3) -------------------------------------------------------


def _new_record(world: World, module: str) -> str:
    """Record `module` in the database (a direct lookup); the tree's new partial level-0
    tile path, which nobody has asked the mirror for yet."""
    assert httpx.get(f"{world.sumdb.url}/lookup/{module}@v1.0.0").status_code == 200
    size = int(httpx.get(f"{world.sumdb.url}/latest").text.split("\n")[1])
    assert size < 256  # one partial tile
    return f"tile/8/0/000.p/{size}"


def test_bad_tiles_are_502_and_never_cached(world: World) -> None:
    tile = _new_record(world, "example.com/tiles")
    url = f"/sumdb/{SUMDB}/{tile}"
    good = httpx.get(f"{world.sumdb.url}/{tile}").content
    for tamper in (
        lambda path, body: body[:-1],  # truncated
        lambda path, body: body[:-1] + bytes([body[-1] ^ 1]),  # right size, wrong hash
        lambda path, body: body + body[:32],  # too long
    ):
        world.tamper.tamper = tamper
        try:
            assert world.get(url).status_code == 502
        finally:
            world.tamper.tamper = None
    world.tamper.reset()
    fixed = world.get(url)
    assert fixed.status_code == 200 and fixed.content == good
    assert fixed.headers["X-Cache"] == "MISS"  # fetched again: the bad ones were not kept
    again = world.get(url)
    assert again.headers["X-Cache"] == "HIT" and again.content == good
    assert world.tamper.count(f"/{tile}") == 1


def test_lookup_with_a_bad_tile_is_502_and_nothing_is_cached(world: World) -> None:
    tile = _new_record(world, "example.com/tiles2")
    _new_record(world, "example.com/proof")
    lookup = f"/sumdb/{SUMDB}/lookup/example.com/tiles2@v1.0.0"

    world.tamper.tamper = lambda path, body: bytes(b ^ 1 for b in body)  # every hash wrong
    try:
        assert world.get(lookup).status_code == 502
        assert world.get(f"/sumdb/{SUMDB}/{tile}").status_code == 502  # not cached either
    finally:
        world.tamper.tamper = None
    answer = world.get(lookup)
    assert answer.status_code == 200 and b"example.com/tiles2 v1.0.0 h1:" in answer.content
    # The tiles the proof read were verified and kept: asking for one costs no request now.
    note = answer.content.split(b"\n\n", 1)[1]
    size = int(note.split(b"\n")[1])
    world.tamper.reset()
    kept = world.get(f"/sumdb/{SUMDB}/tile/8/0/000.p/{size}")
    assert kept.status_code == 200 and kept.headers["X-Cache"] == "HIT"
    assert world.tamper.requests == []


# --- fetch once (point 6) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "counted"),
    [
        ("/example.com/many/@v/list", "/example.com/many/@v/list"),
        ("/example.com/many/@latest", "/example.com/many/@latest"),
        ("/example.com/many/@v/v1.0.0.info", "/example.com/many/@v/v1.0.0.info"),
    ],
)
def test_concurrent_misses_fetch_once(world: World, path: str, counted: str) -> None:
    module = PUBLIC[5]
    body = {"list": b"v1.0.0\n", "latest": module.info_bytes(), "info": module.info_bytes()}
    kind = "list" if path.endswith("list") else "latest" if "@latest" in path else "info"
    world.public.script(counted, body[kind], delay=0.5)  # the answers overlap
    try:
        answers = get_together([f"{world.mirror.url}{path}"] * 20)
    finally:
        del world.public.scripted[counted]
    assert all(answer == body[kind] for answer in answers)
    assert world.public.count(counted) == 1


def test_concurrent_sumdb_lookups_fetch_once(world: World) -> None:
    world.tamper.reset()
    world.tamper.delay = 0.5
    try:
        url = f"{world.mirror.url}/sumdb/{SUMDB}/lookup/example.com/many@v1.0.0"
        answers = get_together([url] * 20)
    finally:
        world.tamper.delay = 0
    assert all(b"example.com/many v1.0.0 h1:" in answer for answer in answers)
    assert world.tamper.count("/lookup/example.com/many@v1.0.0") == 1


# --- hostile clients (point 4) ---------------------------------------------------------------

FUZZ = [
    "/example.com/-x/@v/v1.0.0.info",  # a path element starting with "-"
    "/example.com/" + "a" * 480 + "/@v/v1.0.0.zip",  # past the storage key limit
    "/example.com/" + "!a" * 240 + "/@v/list",
    "/example.com/" + "!a" * 240 + "/@v/v1.0.0-" + "!a" * 60 + ".mod",
    "/example.com/" + "a/" * 300 + "x/@v/list",
    "/example.com/x/@v/v1.0.0-" + "a" * 3000 + ".info",
    "/example.com/x/@v/" + "9" * 3000 + ".info",
    "/example.com/x/@v/list?a=%00&b=%ff",
    "/example.com/x%00/@latest",
    "/example.com/x!/@v/list",
    "/example.com/!/@v/list",
    "/example.com/x/@v/!v1.0.0.info",
    "/example.com/%ff%fe/@v/list",
    "/example.com/%C3%A9/@v/list",
    "/example.com/x/@v/v1.0.0.info.zip",
    "/example.com/x/@v/",
    "/@v/list",
    f"/sumdb/{SUMDB}/lookup/example.com/x@" + "v" * 1000,
    f"/sumdb/{SUMDB}/lookup/" + "a" * 3000 + "@v1.0.0",
    f"/sumdb/{SUMDB}/tile/8/0/" + "x999/" * 30 + "000",
    f"/sumdb/{SUMDB}/tile/8/9/000",
    f"/sumdb/{SUMDB}/tile/8/0/000.p/0",
    f"/sumdb/{SUMDB}/tile/8/0/000.p/256",
    f"/sumdb/{SUMDB}/tile/8/0/x000/001",
    f"/sumdb/{SUMDB}/tile/8/data/999",
    f"/sumdb/{SUMDB}/latest?%00",
    "/sumdb/" + "a" * 300 + "/latest",
]


# What a request may get: never a 500. (502/503: what the upstreams made of it.)
ANSWERS = {200, 400, 404, 410, 502, 503}


@pytest.mark.parametrize("path", FUZZ)
def test_no_request_input_gives_a_500(world: World, path: str) -> None:
    with httpx.Client(timeout=30) as client:
        for method in ("GET", "HEAD"):
            request = client.build_request(method, world.mirror.url)
            request.url = request.url.copy_with(raw_path=path.encode())
            response = client.send(request)
            assert response.status_code in ANSWERS, (method, response.status_code, response.text)
            if method == "HEAD":
                assert response.content == b""


def test_error_answers_to_head_have_no_body(world: World) -> None:
    for path in ("/example.com/missing/@v/list", "/Example.com/x/@v/list"):
        get = world.get(path)
        head = httpx.head(f"{world.mirror.url}{path}")
        assert get.status_code == head.status_code >= 400 and get.content
        # No body; the length stated is that of the GET's message (RFC 9110 9.3.2).
        assert head.content == b"" and int(head.headers["Content-Length"]) > 0
    post = httpx.post(f"{world.mirror.url}/example.com/x/@v/list")
    assert post.status_code == 405 and "GET" in post.headers["Allow"]
