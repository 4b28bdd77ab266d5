"""Upstreams served over https, as a private registry or module proxy under a company's own
authority is: the mirror verifies them against SSL_CERT_FILE (or certifi's bundle), read once
per process at start; an upstream whose certificate no trusted authority signed is never
served from, and nothing of it is cached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.mirror_server import MirrorServer
from tests.support.gomodules import Module, StaticServer, write_tree
from tests.support.tls import self_signed

MODULE = Module("corp.example.com/tls/lib", "v1.2.0")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StaticServer, Path]]:
    """A static GOPROXY tree over https, its certificate its own authority."""
    folder = tmp_path_factory.mktemp("tls-upstream")
    cert, key = self_signed(folder)
    write_tree(folder / "tree", [MODULE])
    with StaticServer(folder / "tree", tls=(cert, key)) as server:
        yield server, cert


def _mirror(data: Path, upstream: StaticServer, ca_file: str) -> MirrorServer:
    data.mkdir()
    config = data / "mirror.yml"
    config.write_text(f"upstreams:\n  - {{name: corp, kind: go, url: {upstream.url}}}\n")
    mirror = MirrorServer(data, config, MIRROR_GO_VERIFY="off", SSL_CERT_FILE=ca_file)
    mirror.setup()
    return mirror.start()


def test_an_upstream_under_an_authority_in_ssl_cert_file_is_served(
    upstream: tuple[StaticServer, Path], tmp_path: Path
) -> None:
    server, cert = upstream
    mirror = _mirror(tmp_path / "trusting", server, str(cert))
    try:
        for ext, body in (("info", MODULE.info_bytes()), ("zip", MODULE.zip_bytes())):
            answer = httpx.get(mirror.url + MODULE.url_path(ext))
            assert (answer.status_code, answer.content) == (200, body), answer.text
            again = httpx.get(mirror.url + MODULE.url_path(ext))
            assert (again.status_code, again.headers["X-Cache"]) == (200, "HIT")
    finally:
        mirror.stop()


def test_an_upstream_whose_certificate_is_not_trusted_is_never_served_from(
    upstream: tuple[StaticServer, Path], tmp_path: Path
) -> None:
    server, _ = upstream
    mirror = _mirror(tmp_path / "default-authorities", server, "")  # certifi's bundle
    try:
        for _ in range(2):  # and nothing of it was cached the first time
            for ext in ("info", "mod", "zip"):
                answer = httpx.get(mirror.url + MODULE.url_path(ext))
                assert answer.status_code == 503, (ext, answer.status_code, answer.text)
                assert answer.text.startswith("upstream unavailable")
        log = mirror.log.read_text()
        assert "Traceback" not in log
    finally:
        mirror.stop()
