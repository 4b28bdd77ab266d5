"""Issue 10, point 2: `/metrics` parses with the Prometheus text parser and its counters move
as clients pull (OCI and Go, cold then warm); JSON logs carry the request id and never a
token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Upstreams, write_config
from tests.mirror_server import MirrorServer
from tests.support.gomodules import Module, StaticServer, write_tree

TOKEN = "scrape-token-for-tests"
MODULE = Module("example.com/metered", "v1.0.0", pad=400_000)  # a zip filled, not small
# A layer (gzip of random bytes) over MIRROR_SMALL_OBJECT_BYTES: a streaming fill, then sendfile.
BLOB = 1 << 20
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json"
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Observed:
    mirror: MirrorServer
    upstreams: Upstreams

    def scrape(self) -> Samples:
        response = httpx.get(
            f"{self.mirror.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def grown(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("metrics")
    write_tree(tmp / "go", [MODULE])
    go = StaticServer(tmp / "go").start()
    config = write_config(tmp / "mirror.yml", upstreams)
    config.write_text(
        config.read_text()
        + f'  - {{name: gomods, kind: go, url: "{go.url}", verify_sums: false}}\n'
    )
    mirror = MirrorServer(
        tmp / "var",
        config,
        MIRROR_GO_VERIFY="off",
        MIRROR_METRICS_TOKEN=TOKEN,
        MIRROR_METRICS_DATABASE_SECONDS="0",
        MIRROR_ACCESS_LOG="1",
        LOG_FORMAT="json",
    )
    mirror.setup()
    mirror.start()
    try:
        yield Observed(mirror, upstreams)
    finally:
        mirror.stop()
        go.stop()


def test_oci_pulls_move_the_counters(observed: Observed) -> None:
    mirror = observed.mirror
    layout = observed.upstreams.seed("library/metered:1", layer_sizes=[BLOB])
    digest = layout.layer_digests["linux/amd64"][0]
    size = len(layout.blob_bytes(digest))
    blob = f"/v2/metered/blobs/{digest}"
    before = observed.scrape()

    manifest = httpx.get(f"{mirror.url}/v2/metered/manifests/1", headers={"Accept": MANIFEST_TYPES})
    assert manifest.headers["X-Cache"] == "MISS"
    cold = httpx.get(f"{mirror.url}{blob}", timeout=30)
    assert cold.headers["X-Cache"] == "MISS" and len(cold.content) == size
    oci = {"ecosystem": "oci", "upstream": "hub"}
    # Counted before waiting for the commit: its HEADs are requests too (misses until it ends).
    misses = grown(
        before, observed.scrape(), "entrepot_requests_total", **oci, cache="miss", status="200"
    )
    mirror.wait_committed(blob)  # HEADs: counted as requests, with no body bytes
    warm = httpx.get(f"{mirror.url}{blob}")
    assert warm.headers["X-Cache"] == "HIT" and len(warm.content) == size
    after = observed.scrape()

    def grew(name: str, **labels: str) -> float:
        return grown(before, after, name, **labels)

    assert misses == 2
    assert grew("entrepot_requests_total", **oci, cache="hit", status="200") >= 2  # HEAD, GET
    assert grew("entrepot_served_bytes_total", **oci, cache="hit") == size  # sendfile'd
    assert grew("entrepot_served_bytes_total", **oci, cache="miss") == size + len(manifest.content)
    assert grew("entrepot_upstream_fetched_bytes_total", upstream="hub") >= size
    assert grew("entrepot_upstream_request_seconds_count", upstream="hub", method="GET") >= 2
    assert value(after, "entrepot_cache_objects", upstream="hub") >= 1
    assert value(after, "entrepot_cache_bytes", upstream="hub") >= size
    assert value(after, "entrepot_fills_in_progress") == 0
    # A name the upstream does not have: an upstream error of its kind, a 404 to the client.
    missing = httpx.get(f"{mirror.url}/v2/nosuchimage/manifests/1")
    assert missing.status_code == 404
    last = observed.scrape()
    assert value(last, "entrepot_upstream_errors_total", upstream="hub", kind="not_found") > (
        value(after, "entrepot_upstream_errors_total", upstream="hub", kind="not_found")
    )
    assert value(last, "entrepot_requests_total", **oci, cache="none", status="404") >= 1


def test_go_pulls_move_the_counters(observed: Observed) -> None:
    mirror = observed.mirror
    before = observed.scrape()
    info = httpx.get(f"{mirror.url}{MODULE.url_path('info')}")
    assert info.status_code == 200 and info.headers["X-Cache"] == "MISS"
    zip_path = f"{mirror.url}{MODULE.url_path('zip')}"
    cold = httpx.get(zip_path, timeout=30)
    assert cold.content == MODULE.zip_bytes() and cold.headers["X-Cache"] == "MISS"
    go = {"ecosystem": "go", "upstream": "gomods"}
    misses = grown(
        before, observed.scrape(), "entrepot_requests_total", **go, cache="miss", status="200"
    )
    mirror.wait_committed(MODULE.url_path("zip"))
    warm = httpx.get(zip_path)
    assert warm.headers["X-Cache"] == "HIT"
    after = observed.scrape()

    def grew(name: str, **labels: str) -> float:
        return grown(before, after, name, **labels)

    assert misses == 2
    assert grew("entrepot_served_bytes_total", **go, cache="hit") == len(warm.content)
    assert grew("entrepot_upstream_fetched_bytes_total", upstream="gomods") >= len(cold.content)
    assert grew("entrepot_upstream_request_seconds_count", upstream="gomods", method="GET") >= 2
    # Module zips are indexed without their upstream (goproxy/service.py): all upstreams.
    assert total(after, "entrepot_cache_bytes") - total(before, "entrepot_cache_bytes") >= len(
        cold.content
    )


def test_metrics_token_and_prewarm_gauges(observed: Observed) -> None:
    url = f"{observed.mirror.url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    samples = observed.scrape()
    for status in ("queued", "running", "succeeded", "partial", "failed", "cancelled"):
        assert ("entrepot_prewarm_jobs", frozenset({("status", status)})) in samples


def _log_records(path: Path) -> list[dict[str, object]]:
    """The JSON lines of a server log (`manage.py check` prints one line of plain text)."""
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_json_logs_carry_the_request_id_and_no_token(observed: Observed) -> None:
    mirror = observed.mirror
    secret, in_query = "Bearer-s3cr3t-never-logged", "q-s3cr3t-never-logged"
    response = httpx.get(
        f"{mirror.url}/no/such/page?token={in_query}",
        headers={"X-Request-ID": "trace-me.42", "Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "trace-me.42"
    unsafe = httpx.get(f"{mirror.url}/healthz", headers={"X-Request-ID": "no spaces/" * 10})
    generated = unsafe.headers["X-Request-ID"]
    assert generated and " " not in generated and len(generated) <= 64

    records = _log_records(mirror.log)
    mine = [r for r in records if r.get("request_id") == "trace-me.42"]
    # The access line and Django's "Not Found" warning, both with the id.
    assert {r["logger"] for r in mine} >= {"entrepot.access", "django.request"}
    access = next(r for r in mine if r["logger"] == "entrepot.access")
    assert access["path"] == "/no/such/page" and access["status"] == 404
    assert any(r.get("request_id") == generated for r in records)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    text = mirror.log.read_text()
    assert secret not in text and in_query not in text
