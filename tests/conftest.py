"""End-to-end fixtures: a real upstream registry (docker-registry) seeded with images by
skopeo, fault proxies in front of it, and the mirror itself served by gunicorn.

Upstreams of the mirror under test:
- `hub` (prefix docker.io, the default): the open registry, through a FaultProxy.
- `ghcr` (prefix ghcr.io): the same registry behind a proxy that demands Docker Hub-style
  Bearer tokens (the proxy is the token server).
- `corp` (prefix harbor.test): a second registry that needs Basic auth (htpasswd).
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mirror_server import MirrorServer
from tests.support.cluster import fresh_database
from tests.support.faultproxy import FaultProxy
from tests.support.images import Layout, build_layout, push
from tests.support.registry import Registry

CORP_USER, CORP_PASSWORD = "corpuser", "s3cret-corp-pw"
_seeds = itertools.count(1000)


def _require(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        pytest.fail(f"missing commands {missing}: run the tests with `make test`", pytrace=False)


@dataclass
class Upstreams:
    registry: Registry
    corp_registry: Registry
    hub: FaultProxy
    ghcr: FaultProxy
    corp: FaultProxy
    workdir: Path

    def seed(
        self,
        name: str,
        *,
        platforms: list[tuple[str, str]] | None = None,
        layer_sizes: list[int] | None = None,
        v2s2: bool = False,
        corp: bool = False,
    ) -> Layout:
        """Build a fresh image (distinct layers each call) and push it as `name` (NAME:TAG)."""
        seed = next(_seeds)
        layout = build_layout(
            self.workdir / f"layout-{seed}",
            platforms=platforms,
            layer_sizes=layer_sizes,
            seed=seed,
        )
        registry = self.corp_registry if corp else self.registry
        push(
            layout,
            f"{registry.host}/{name}",
            v2s2=v2s2,
            creds=f"{CORP_USER}:{CORP_PASSWORD}" if corp else None,
        )
        return layout


@pytest.fixture(scope="session")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    _require("docker-registry", "skopeo", "htpasswd")
    workdir = tmp_path_factory.mktemp("upstreams")
    with (
        Registry(workdir=workdir / "registry") as registry,
        Registry(workdir=workdir / "corp", htpasswd=(CORP_USER, CORP_PASSWORD)) as corp_registry,
    ):
        hub = FaultProxy(registry.url)
        ghcr = FaultProxy(registry.url, bearer=True)
        corp = FaultProxy(corp_registry.url)
        for proxy in (hub, ghcr, corp):
            proxy.start()
        yield Upstreams(registry, corp_registry, hub, ghcr, corp, workdir)
        for proxy in (hub, ghcr, corp):
            proxy.stop()


def write_config(path: Path, up: Upstreams) -> Path:
    path.write_text(
        f"""
upstreams:
  - name: hub
    kind: oci
    url: {up.hub.url}
    prefix: docker.io
    default: true
    tag_ttl: 1
  - name: ghcr
    kind: oci
    url: {up.ghcr.url}
    prefix: ghcr.io
  - name: corp
    kind: oci
    url: {up.corp.url}
    prefix: harbor.test
    username_env: CORP_USER
    password_env: CORP_PASSWORD
"""
    )
    return path


@pytest.fixture(scope="session")
def mirror(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams
) -> Iterator[MirrorServer]:
    data = tmp_path_factory.mktemp("mirror")
    config = write_config(data / "mirror.yml", upstreams)
    server = MirrorServer(data / "var", config, CORP_USER=CORP_USER, CORP_PASSWORD=CORP_PASSWORD)
    server.setup()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the test's servers, dropped after it."""
    with fresh_database() as url:
        yield url


# The test database is SQLite in a file, not in memory: Django's default test database for
# SQLite is a shared-cache in-memory one, where two threads writing at once get "database table
# is locked" at once instead of waiting; the fill and fetch-once tests write from several
# threads (fillers, followers), as the server does. Session-wide, because the test database is
# created once, by whichever test asks first.
@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        path = tmp_path_factory.mktemp("db") / "unit.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


@pytest.fixture(autouse=True)
def _healthy_upstreams(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with fault-free, running upstream proxies."""
    yield
    if "upstreams" not in request.fixturenames:
        return
    up: Upstreams = request.getfixturevalue("upstreams")
    for proxy in (up.hub, up.ghcr, up.corp):
        proxy.clear_faults()
        if not proxy.running:
            proxy.start()


@pytest.fixture(autouse=True)
def _no_answers_carried_between_tests() -> Iterator[None]:
    """The in-process caches of warm answers and pins never carry one test's rows into the
    next (the test database reuses ids and keys)."""
    yield
    from mirror import documents
    from registries import pins, tags

    tags.forget()
    pins.forget()
    documents.forget_served()
