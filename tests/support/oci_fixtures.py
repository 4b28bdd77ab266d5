"""Session fixtures for the OCI tests, loaded as a plugin by each module that uses them
(`pytest_plugins = ["tests.support.oci_fixtures"]`), so that they start once for all: the stub
upstream (tests/support/oci_servers.py) and a mirror configured with it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import CORP_PASSWORD, CORP_USER, Upstreams
from tests.mirror_server import MirrorServer
from tests.support.oci_servers import METADATA_CAP, StubRegistry


@pytest.fixture(scope="session")
def oci_stub() -> Iterator[StubRegistry]:
    stub = StubRegistry().start()
    yield stub
    stub.stop()


@pytest.fixture(autouse=True)
def _stub_without_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "oci_stub" in request.fixturenames:
        request.getfixturevalue("oci_stub").status = None


@pytest.fixture(scope="session")
def oci_mirror(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams, oci_stub: StubRegistry
) -> Iterator[MirrorServer]:
    """A mirror whose default upstream is the hub proxy with a long tag TTL (so that counted
    requests stay countable), corp under harbor.test, and the stub under stub.test (TTL 0:
    every request revalidates) and stub2.test (its own client, for faults that block one)."""
    data = tmp_path_factory.mktemp("oci-mirror")
    config = data / "mirror.yml"
    config.write_text(
        f"""
upstreams:
  - {{name: hub, kind: oci, url: "{upstreams.hub.url}", prefix: docker.io, default: true,
      tag_ttl: 300}}
  - {{name: corp, kind: oci, url: "{upstreams.corp.url}", prefix: harbor.test,
      username_env: CORP_USER, password_env: CORP_PASSWORD}}
  - {{name: stub, kind: oci, url: "{oci_stub.url}", prefix: stub.test, tag_ttl: 0}}
  - {{name: stub2, kind: oci, url: "{oci_stub.url}", prefix: stub2.test, tag_ttl: 0}}
"""
    )
    server = MirrorServer(
        data / "var",
        config,
        CORP_USER=CORP_USER,
        CORP_PASSWORD=CORP_PASSWORD,
        MIRROR_MAX_METADATA_BYTES=str(METADATA_CAP),
    )
    server.setup()
    server.start()
    yield server
    server.stop()
