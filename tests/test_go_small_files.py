"""A version's `.info` and `.mod` are immutable documents, in-process against a static GOPROXY
upstream (nginx, whose access log counts what reached it): no query when warm within
MIRROR_UPSTREAM_CACHE_SECONDS, one after, fetched once, checked before they are kept, and the
files earlier releases stored are still served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from goproxy import keys, service
from mirror import documents, fill, stats
from mirror.models import CachedDocument, Upstream
from mirror.storage import forget as forget_storage
from mirror.storage import get_storage
from mirror.storage.local import LocalStorage
from mirror.upstreams import forget
from tests.support.gomodules import Module, StaticServer, write_tree

pytestmark = pytest.mark.django_db(transaction=True)
WARM = Module("example.com/small/warm", "v1.0.0")
LEGACY = Module("example.com/small/legacy", "v1.0.0")
STALE = Module("example.com/small/stale", "v1.0.0")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    tree = tmp_path_factory.mktemp("small") / "tree"
    write_tree(tree, [WARM, LEGACY, STALE])
    server = StaticServer(tree).start()
    yield server
    server.stop()


@pytest.fixture
def storage(
    upstream: StaticServer, tmp_path: Path, settings: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalStorage]:
    settings.MIRROR_GO_VERIFY = "off"  # type: ignore[attr-defined]
    settings.MIRROR_UPSTREAM_CACHE_SECONDS = 60  # type: ignore[attr-defined]
    Upstream.objects.create(name="static", kind="go", url=upstream.url)
    forget()
    local = LocalStorage(tmp_path / "storage")
    monkeypatch.setattr(service, "get_storage", lambda: local)
    yield local
    forget()


def _asked(upstream: StaticServer, path: str) -> int:
    return sum(f" {path} " in line for line in upstream.access_log())


def _warm_queries(path: str, body: bytes) -> list[str]:
    """The queries of a warm GET of `path` (which must answer `body`, a HIT)."""
    with CaptureQueriesContext(connection) as queries:
        again = Client().get(path)
    assert (again.status_code, again["X-Cache"], again.content) == (200, "HIT", body)
    return [q["sql"] for q in queries.captured_queries]


def test_info_and_mod_are_documents_served_without_a_query_when_warm(
    upstream: StaticServer, storage: LocalStorage, settings: object
) -> None:
    client = Client()
    for ext, body in (("info", WARM.info_bytes()), ("mod", WARM.mod_bytes())):
        path = WARM.url_path(ext)
        first = client.get(path)
        assert (first.status_code, first["X-Cache"], first.content) == (200, "MISS", body)
        assert _warm_queries(path, body) == []  # the body this process served: no query
        documents.purge("unrelated")  # a purge here forgets what the process served at once
        assert len(_warm_queries(path, body)) == 1  # one query, then served again
        assert _warm_queries(path, body) == []
        settings.MIRROR_UPSTREAM_CACHE_SECONDS = 0  # type: ignore[attr-defined]
        documents.purge("unrelated")
        for _ in range(2):  # nothing kept: the document is read each time
            read = [q for q in _warm_queries(path, body) if "mirror_cacheddocument" in q]
            assert len(read) == 1, read
        settings.MIRROR_UPSTREAM_CACHE_SECONDS = 60  # type: ignore[attr-defined]
        again = client.get(path)
        assert again["Cache-Control"].endswith("immutable")
        part = client.get(path, HTTP_RANGE="bytes=1-3")
        assert part.status_code == 206 and part.content == body[1:4]
        assert part["Content-Range"] == f"bytes 1-3/{len(body)}"
        assert _asked(upstream, path) == 1
    assert not list(Path(storage.root).rglob("*.info"))  # nothing in storage


def test_files_stored_by_an_earlier_release_are_served_without_the_upstream(
    upstream: StaticServer, storage: LocalStorage
) -> None:
    for ext, body in (("info", LEGACY.info_bytes()), ("mod", b"module example.com/small/legacy\n")):
        writer = storage.writer(keys.file_key("", LEGACY.path, LEGACY.version, ext))
        writer.write(body)
        writer.commit()
        answer = Client().get(LEGACY.url_path(ext))
        assert answer.status_code == 200 and answer.content == body
        assert _asked(upstream, LEGACY.url_path(ext)) == 0
    kept = CachedDocument.objects.filter(namespace__in=service.SMALL_FILES.values())
    assert kept.filter(key=keys.small_file_key("", LEGACY.path, LEGACY.version)).count() == 2


def test_a_stored_file_that_fails_its_checks_is_fetched_anew(
    upstream: StaticServer, storage: LocalStorage
) -> None:
    writer = storage.writer(keys.file_key("", STALE.path, STALE.version, "info"))
    writer.write(b'{"Version": "v9.9.9"}')
    writer.commit()
    answer = Client().get(STALE.url_path("info"))
    assert answer.status_code == 200 and answer.content == STALE.info_bytes()
    assert _asked(upstream, STALE.url_path("info")) == 1


def test_a_wrong_answer_is_refused_and_not_kept(
    upstream: StaticServer, storage: LocalStorage
) -> None:
    other = Module(WARM.path, "v1.0.1")  # not in the tree: the upstream says 404
    assert Client().get(other.url_path("info")).status_code == 404
    assert not CachedDocument.objects.filter(namespace="go-info", key__contains="v1.0.1").exists()


def test_private_and_public_documents_never_share_a_key() -> None:
    public = keys.small_file_key("", WARM.path, WARM.version)
    private = keys.small_file_key("_private/corp/", WARM.path, WARM.version)
    assert public != private and private.startswith("_private/corp/")


def test_a_small_stored_zip_is_answered_whole_and_by_range(
    upstream: StaticServer, storage: LocalStorage, settings: object, tmp_path: Path
) -> None:
    settings.MIRROR_STORAGE_DIR = tmp_path / "zips"  # type: ignore[attr-defined]
    settings.MIRROR_MIN_FREE_BYTES = 0  # type: ignore[attr-defined]
    forget_storage()
    try:
        path, body = WARM.url_path("zip"), WARM.zip_bytes()
        client = Client()
        assert client.get(path).status_code == 200  # filled (a MISS)
        again = client.get(path)
        assert (again.status_code, again["X-Cache"], again.content) == (200, "HIT", body)
        assert again["Content-Length"] == str(len(body))
        part = client.get(path, HTTP_RANGE="bytes=-10")
        assert part.status_code == 206 and part.content == body[-10:]
        assert client.get(path, HTTP_RANGE=f"bytes={len(body)}-").status_code == 416
        head = client.head(path)
        assert head.status_code == 200 and head["Content-Length"] == str(len(body))
        key = keys.file_key("", WARM.path, WARM.version, "zip")
        assert fill._bodies.get(key) == body  # kept in memory
        # Gone from storage (evicted, purged): never answered from memory, fetched anew.
        get_storage().delete(key)
        gone = client.get(path)
        assert (gone.status_code, gone["X-Cache"], gone.content) == (200, "MISS", body)
        assert _asked(upstream, path) == 2
    finally:
        stats.flush()  # the zip's download count, while its table is there
        forget_storage()
