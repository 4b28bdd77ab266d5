"""A bounded cache, end to end: a mirror over its budget evicts the least recently pulled
content first (`manage.py evict`, and the Celery task), keeps pinned items and blobs that kept
manifests share, really frees the storage, records each eviction, and serves an evicted image
or module again by fetching it anew.

Images A, B, C and D share a base layer and each has a layer and a config of its own; they
are pulled in that order, A is pinned, and the hub upstream's budget holds the base and two
images: B then C go (least recently pulled first, A being pinned), A and D stay, the base
layer with them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer
from tests.support.faultproxy import FaultProxy
from tests.support.gocmd import go_env, run_go
from tests.support.gomodules import Module, StaticServer, write_tree
from tests.support.oci_push import OCI_MANIFEST, push_blob, push_manifest
from tests.support.worker import CeleryWorker, redis_url
from tests.test_clients import run

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
BASE_SIZE, OWN_SIZE = 64 * 1024, 96 * 1024
NAMES = ("evict-a", "evict-b", "evict-c", "evict-d")


@dataclass
class Image:
    name: str  # under library/ upstream; as clients name it on the default upstream
    manifest: str
    own: list[str]  # its own blobs: layer and config
    sizes: dict[str, int]

    @property
    def own_bytes(self) -> int:
        return sum(self.sizes[d] for d in self.own)


def _push_images(registry_url: str) -> tuple[str, list[Image]]:
    """Push four images sharing one base layer; (base layer digest, images)."""
    base = push_blob(registry_url, "library/evict-a", os.urandom(BASE_SIZE), LAYER)
    images = []
    for name in NAMES:
        repository = f"library/{name}"
        own = push_blob(registry_url, repository, os.urandom(OWN_SIZE), LAYER)
        config = push_blob(registry_url, repository, json.dumps({"n": name}).encode(), CONFIG)
        if repository != "library/evict-a":
            _mount(registry_url, repository, base)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [base, own],
        }
        pushed = push_manifest(registry_url, repository, "1", manifest)
        sizes = {d["digest"]: d["size"] for d in (base, own, config)}
        images.append(Image(name, pushed["digest"], [own["digest"], config["digest"]], sizes))
    return base["digest"], images


def _mount(registry_url: str, repository: str, blob: dict[str, object]) -> None:
    """Make a blob of another repository available in this one (a cross-repository mount)."""
    response = httpx.post(
        f"{registry_url}/v2/{repository}/blobs/uploads/",
        params={"mount": str(blob["digest"]), "from": "library/evict-a"},
    )
    assert response.status_code == 201, response.text


def _stored(mirror: MirrorServer, digest: str) -> bool:
    hexpart = digest.split(":", 1)[1]
    return (mirror.data_dir / "storage/objects/blobs/sha256" / hexpart[:2] / hexpart).exists()


def _pull(mirror: MirrorServer, name: str, dest: Path) -> dict[str, str]:
    """skopeo copy through the mirror into a `dir:` folder; the digests of what it wrote."""
    run(
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        f"docker://{mirror.host}/{name}:1",
        f"dir:{dest}",
    )
    return {
        "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(): path.name
        for path in dest.iterdir()
        if path.name != "version"
    }


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams
) -> Iterator[tuple[MirrorServer, FaultProxy, str, list[Image]]]:
    base, images = _push_images(upstreams.registry.url)
    budget = images[0].sizes[base] + 2 * images[0].own_bytes + images[0].own_bytes // 2
    proxy = FaultProxy(upstreams.registry.url).start()
    data = tmp_path_factory.mktemp("eviction")
    config = data / "mirror.yml"
    config.write_text(
        f"""
upstreams:
  - {{name: hub, kind: oci, url: "{proxy.url}", prefix: docker.io, default: true,
      tag_ttl: 300, max_bytes: {budget}}}
"""
    )
    mirror = MirrorServer(data / "var", config, MIRROR_EVICT_GRACE_SECONDS="0")
    mirror.setup()
    mirror.start()
    yield mirror, proxy, base, images
    mirror.stop()
    proxy.stop()


def _api(mirror: MirrorServer) -> httpx.Client:
    token = mirror.manage("mirror_token", "create", "eviction-tests", "--scope", "admin")
    headers = {"Authorization": f"Bearer {token.strip().splitlines()[-1]}"}
    return httpx.Client(base_url=f"{mirror.url}/api/v1", headers=headers, timeout=30)


def test_least_recently_pulled_images_go_first_pinned_and_shared_stay(
    world: tuple[MirrorServer, FaultProxy, str, list[Image]], tmp_path: Path
) -> None:
    mirror, proxy, base, images = world
    a, b, c, d = images
    for image in images:  # pulled in this order, each after the last one's pull was counted
        pulled = _pull(mirror, image.name, tmp_path / image.name)
        assert set(image.own) | {base, image.manifest} <= set(pulled)
        time.sleep(0.5)
    api = _api(mirror)
    entry = api.get("/tags/", params={"search": a.name}).json()["results"][0]
    assert api.post(f"/tags/{entry['id']}/pin/", json={"digest": a.manifest}).status_code == 200

    out = mirror.manage("evict")

    assert out.splitlines()[:2] == [
        f"evicted image {b.name}:1 (upstream_budget): 2 objects, {_human(b.own_bytes)}",
        f"evicted image {c.name}:1 (upstream_budget): 2 objects, {_human(c.own_bytes)}",
    ], out
    evictions = api.get("/evictions/", params={"reason": "upstream_budget"}).json()["results"]
    assert [(e["reference"], e["object_count"], e["bytes"], e["upstream"]) for e in evictions] == [
        (f"{c.name}:1", 2, c.own_bytes, "hub"),  # newest first
        (f"{b.name}:1", 2, b.own_bytes, "hub"),
    ]
    assert evictions[1]["last_access"] < evictions[0]["last_access"]
    for image in (b, c):  # their own bytes are gone from storage
        assert not any(_stored(mirror, digest) for digest in image.own)
    for image in (a, d):  # the pinned one and the most recent one stay whole
        assert all(_stored(mirror, digest) for digest in image.own)
    assert _stored(mirror, base)  # shared with kept manifests
    assert "0 evicted" in mirror.manage("evict")  # within the budget now

    # An evicted image is fetched anew, and whole; a kept one is not fetched again.
    before = proxy.count("GET", f"/blobs/{b.own[0]}")
    again = _pull(mirror, b.name, tmp_path / "again")
    assert set(b.own) | {base, b.manifest} <= set(again)
    assert proxy.count("GET", f"/blobs/{b.own[0]}") == before + 1
    assert proxy.count("GET", f"/blobs/{base}") == 1
    kept = proxy.count("GET", f"/blobs/{d.own[0]}")
    _pull(mirror, d.name, tmp_path / "kept")
    assert proxy.count("GET", f"/blobs/{d.own[0]}") == kept


def _human(size: int) -> str:
    """Django's filesizeformat, as `manage.py evict` prints sizes."""
    from django.template.defaultfilters import filesizeformat

    return str(filesizeformat(size))


# -- Go ---------------------------------------------------------------------------------------

MODULES = [Module(f"example.com/evict{n}", "v1.0.0", pad=50_000) for n in range(3)]


def test_least_recently_downloaded_module_versions_go_first(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Over the total budget (MIRROR_CACHE_MAX_BYTES), run by the Celery task: the oldest
    downloaded version goes, the always-warm one stays, and the go command downloads the
    evicted one again through the mirror."""
    tmp = tmp_path_factory.mktemp("go-eviction")
    write_tree(tmp / "tree", MODULES)
    server = StaticServer(tmp / "tree").start()
    proxy = FaultProxy(server.url).start()
    config = tmp / "mirror.yml"
    zip_size = max(len(m.zip_bytes()) for m in MODULES)
    config.write_text(
        f"""
upstreams:
  - {{name: gofirst, kind: go, url: "{proxy.url}", verify_sums: false}}
always_warm:
  - module: {MODULES[0].path}@{MODULES[0].version}
"""
    )
    env = {
        "MIRROR_EVICT_GRACE_SECONDS": "0",
        "MIRROR_CACHE_MAX_BYTES": str(2 * zip_size),
        "REDIS_URL": redis_url(),
    }
    mirror = MirrorServer(tmp / "var", config, **env)
    mirror.setup()
    mirror.start()
    try:
        for module in MODULES:  # downloaded in this order
            answer = httpx.get(f"{mirror.url}{module.url_path('zip')}", timeout=30)
            assert answer.content == module.zip_bytes()
            time.sleep(0.5)
        with CeleryWorker(mirror.env, tmp / "worker.log"):
            mirror.manage("shell", "-c", "from mirror.tasks import evict; evict.delay()")
            evictions = _wait_for_evictions(mirror)
        assert [(e["reference"], e["reason"], e["object_count"]) for e in evictions] == [
            (f"{MODULES[1].path}@v1.0.0", "total_budget", 1)
        ]
        zips = [mirror.data_dir / "storage/objects/go" / m.path / "@v/v1.0.0.zip" for m in MODULES]
        assert [z.exists() for z in zips] == [True, False, True]

        project = tmp / "project"
        project.mkdir()
        (project / "go.mod").write_text(
            f"module example.com/p\n\ngo 1.18\n\nrequire {MODULES[1].path} v1.0.0\n"
        )
        run_go(["mod", "download"], project, go_env(tmp / "gocmd", mirror.url, None))
        assert proxy.count("GET", f"/{MODULES[1].path}/@v/v1.0.0.zip") == 2
        assert zips[1].exists()
    finally:
        mirror.stop()
        proxy.stop()
        server.stop()


def _wait_for_evictions(mirror: MirrorServer, timeout: float = 30) -> list[dict[str, object]]:
    api = _api(mirror)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api.get("/evictions/").json()["results"]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the Celery task evicted nothing")
