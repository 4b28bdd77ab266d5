"""Unit checks of the OCI app's pure parts: manifest validation, Accept keys, page sizes, the
referrers tag schema, and how core errors become OCI answers (no server, no upstream)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mirror import stats
from mirror.errors import Overloaded, StorageFull, UpstreamInvalid, UpstreamUnavailable
from registries import catalog, formats, freshness, manifests, pins, tags
from registries.models import Manifest, Repository, Tag
from registries.referrers import referrers_tag
from registries.routing import Route
from registries.views import _domain_error
from tests.support.oci_servers import OCI_INDEX, OCI_MANIFEST, digest, oci_manifest


def test_a_valid_manifest_names_what_it_references() -> None:
    body = oci_manifest("refs")
    parsed = formats.parse_manifest(body, OCI_MANIFEST)
    document = json.loads(body)
    assert parsed.media_type == OCI_MANIFEST
    assert parsed.references == (
        (document["config"]["digest"], formats.BLOB),
        (document["layers"][0]["digest"], formats.BLOB),
    )


def test_an_index_references_its_children_as_manifests() -> None:
    child = {"mediaType": OCI_MANIFEST, "digest": digest(b"child"), "size": 5}
    body = json.dumps({"schemaVersion": 2, "manifests": [child]}).encode()
    parsed = formats.parse_manifest(body, "application/json")  # shape says index
    assert parsed.media_type == OCI_INDEX
    assert parsed.references == ((child["digest"], formats.MANIFEST),)
    assert parsed.descriptors == (child,)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (oci_manifest("x"), "text/html"),
        (b"not json", OCI_MANIFEST),
        (b"2", OCI_MANIFEST),
        (oci_manifest("x", schemaVersion=True), OCI_MANIFEST),  # bool is not the int 2
        (oci_manifest("x", artifactType=["a"]), OCI_MANIFEST),
        (oci_manifest("x", subject="sha256:abc"), OCI_MANIFEST),
        (oci_manifest("x", layers=[{"mediaType": "x", "digest": digest(b""), "size": -1}]), ""),
    ],
)
def test_invalid_manifests_are_refused(body: bytes, content_type: str) -> None:
    with pytest.raises(UpstreamInvalid):
        formats.parse_manifest(body, content_type)


def test_accept_key_names_the_negotiated_types() -> None:
    every = list(formats.MANIFEST_TYPES)
    assert formats.accept_key([]) == formats.accept_key(["*/*"]) == "*"
    assert formats.accept_key(every) == formats.accept_key(list(reversed(every)))
    assert formats.accept_key([OCI_MANIFEST]) != formats.accept_key(every)
    assert formats.accept_key([OCI_MANIFEST, "*/*"]) != formats.accept_key([OCI_MANIFEST])
    assert formats.accept_key([OCI_MANIFEST, "application/json"]) == OCI_MANIFEST


@pytest.mark.parametrize("value", ["²", "0", "-1", "10001", "1e3", "", " 5"])
def test_page_sizes_outside_ascii_1_to_10000_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        catalog.page_size(value)


def test_referrers_tag_schema() -> None:
    hexpart = "a" * 64
    assert referrers_tag(f"sha256:{hexpart}") == f"sha256-{hexpart}"
    assert referrers_tag(f"sha512:{'b' * 128}") == f"sha512-{'b' * 64}"


def test_core_errors_become_oci_answers() -> None:
    full = _domain_error(StorageFull("no room"), "blob")
    assert (full.status, full.code) == (507, "UNAVAILABLE")
    busy = _domain_error(Overloaded("busy", retry_after=2.5), "blob").response()
    assert busy.status_code == 503 and busy["Retry-After"] == "3"
    limited = _domain_error(UpstreamUnavailable("429", retry_after=7), "tags").response()
    assert limited.status_code == 429 and limited["Retry-After"] == "7"
    invalid = _domain_error(UpstreamInvalid("html"), "manifest")
    assert (invalid.status, invalid.code) == (502, "MANIFEST_INVALID")
    assert _domain_error(UpstreamInvalid("huge"), "tags").status == 502


def test_an_error_answer_to_head_has_no_body() -> None:
    response = Client().head("/v2/Upper/manifests/latest")
    assert response.status_code == 400
    assert response.content == b"" and int(response["Content-Length"]) > 0


ACCEPT = [OCI_INDEX, OCI_MANIFEST]


def _warm_tag() -> tuple[Route, Manifest]:
    """A tag "1" of `warm`, cached and fresh, with its manifest stored and linked."""
    from mirror import upstreams
    from mirror.models import Upstream
    from registries import links
    from registries.routing import route

    Upstream.objects.create(name="hub", kind="oci", url="http://hub.invalid", is_default=True)
    upstreams.forget()
    target = route("warm")
    body = oci_manifest("warm")
    manifest = Manifest.objects.create(
        digest=digest(body), media_type=OCI_MANIFEST, size=len(body), body=body
    )
    Tag.objects.create(
        repository=links.link_manifest(target, manifest),
        name="1",
        accept_key=formats.accept_key(ACCEPT),
        digest=manifest.digest,
        media_type=OCI_MANIFEST,
        size=len(body),
        fetched_at=timezone.now(),
    )
    pins.pinned(target.upstream.id, target.repository, "1")  # read once a period (test_pins)
    return target, manifest


@pytest.mark.django_db
def test_warm_manifest_requests_cost_two_queries_by_tag_and_one_by_digest() -> None:
    target, manifest = _warm_tag()
    with CaptureQueriesContext(connection) as by_tag:
        answer = tags.by_tag(target, "1", ACCEPT, head=False)
    assert (answer.body, answer.cache) == (bytes(manifest.body), "HIT")
    with CaptureQueriesContext(connection) as by_digest:
        assert manifests.by_digest(target, manifest.digest, head=False).body == manifest.body
    assert (len(by_tag), len(by_digest)) == (2, 1)
    stats.flush()  # the counts these requests buffered, while the test database exists


@pytest.mark.django_db
def test_a_warm_tag_is_then_answered_from_memory_until_a_change_here(settings) -> None:
    settings.MIRROR_UPSTREAM_CACHE_SECONDS = 60
    target, manifest = _warm_tag()
    tags.by_tag(target, "1", ACCEPT, head=False)  # learns the answer
    with CaptureQueriesContext(connection) as warm:
        answer = tags.by_tag(target, "1", ACCEPT, head=False)
        head = tags.by_tag(target, "1", ACCEPT, head=True)
    assert len(warm) == 0
    assert (answer.body, answer.cache, head.digest, head.body) == (
        bytes(manifest.body),
        "HIT",
        manifest.digest,
        None,
    )
    repository = Repository.objects.get(name=target.repository)
    freshness.refresh_repository(repository)  # an operator's change in this process
    # Expired now: revalidated with the upstream (hub.invalid, down: served stale).
    with CaptureQueriesContext(connection) as after:
        assert tags.by_tag(target, "1", ACCEPT, head=False).cache == "STALE"
    assert len(after) > 0
    stats.flush()


@pytest.mark.django_db
def test_a_tag_is_never_answered_from_memory_past_its_ttl(settings) -> None:
    settings.MIRROR_UPSTREAM_CACHE_SECONDS = 60
    target, _ = _warm_tag()
    Tag.objects.update(fetched_at=timezone.now() - dt.timedelta(seconds=299.9))  # TTL 300
    tags.by_tag(target, "1", ACCEPT, head=False)
    time.sleep(0.2)  # past the tag's TTL now
    # Revalidated with hub.invalid (down, so STALE or an error): not answered from memory.
    with CaptureQueriesContext(connection) as later, contextlib.suppress(UpstreamUnavailable):
        tags.by_tag(target, "1", ACCEPT, head=False)
    assert len(later) > 0
    stats.flush()
