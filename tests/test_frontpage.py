"""The front page at "/": what is mirrored, client settings with this host's name, cache
figures; and that no other path or method changed (protocol paths keep their answers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client

from mirror.models import PrewarmJob, StoredObject, Upstream

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def configured() -> Iterator[None]:
    cache.clear()  # the page's figures are cached per process
    hub = Upstream.objects.create(
        name="hub", kind="oci", url="https://registry-1.docker.io", prefix="docker.io"
    )
    Upstream.objects.filter(pk=hub.pk).update(is_default=True)
    ghcr = Upstream.objects.create(name="ghcr", kind="oci", url="https://ghcr.io", prefix="ghcr.io")
    Upstream.objects.create(name="golang", kind="go", url="https://proxy.golang.org")
    Upstream.objects.create(
        name="sumgolang", kind="gosumdb", url="https://sum.golang.org", sumdb="sum.golang.org"
    )
    Upstream.objects.create(
        name="off", kind="oci", url="https://off.example", prefix="off.example", enabled=False
    )
    StoredObject.objects.create(key="blobs/sha256/aa", size=1000, upstream=hub)
    StoredObject.objects.create(key="blobs/sha256/bb", size=3000, upstream=hub)
    StoredObject.objects.create(key="blobs/sha256/cc", size=500, upstream=ghcr)
    PrewarmJob.objects.create(status=PrewarmJob.Status.RUNNING)
    PrewarmJob.objects.create(status=PrewarmJob.Status.SUCCEEDED)
    yield
    cache.clear()


def test_plain_http_host_is_filled_in() -> None:
    response = Client().get("/", HTTP_HOST="mirror.test:8123")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    page = response.content.decode()
    assert '"registry-mirrors": ["http://mirror.test:8123"]' in page
    assert '"insecure-registries": ["mirror.test:8123"]' in page
    # containerd: one hosts.toml per prefix, Docker Hub's origin is registry-1.docker.io.
    assert "certs.d/docker.io/hosts.toml" in page
    assert 'server = "https://registry-1.docker.io"' in page
    assert "certs.d/ghcr.io/hosts.toml" in page
    assert 'server = "https://ghcr.io"' in page
    assert '[host."http://mirror.test:8123"]' in page
    # podman: a [[registry.mirror]] per prefix, plain HTTP said so.
    assert page.count('location = "mirror.test:8123"') == 2
    assert "insecure = true" in page
    assert "docker pull mirror.test:8123/ghcr.io/org/image:tag" in page
    assert "GOPROXY=http://mirror.test:8123,direct" in page
    assert "/sumdb/sum.golang.org/" in page
    for link in ('href="/admin/"', 'href="/api/docs/"', 'href="/api/schema/"'):
        assert link in page
    # A disabled upstream is not offered.
    assert "off.example" not in page


def test_https_drops_the_insecure_settings() -> None:
    page = Client().get("/", HTTP_HOST="mirror.test", secure=True).content.decode()
    assert '"registry-mirrors": ["https://mirror.test"]' in page
    assert "insecure-registries" not in page
    assert "insecure = true" not in page
    assert "--tls-verify=false" not in page
    assert "GOPROXY=https://mirror.test,direct" in page


def test_cache_figures() -> None:
    page = Client().get("/").content.decode()
    assert '<td>hub</td><td class="num">2</td><td class="num">3.9\xa0KB</td>' in page
    assert '<td>ghcr</td><td class="num">1</td><td class="num">500\xa0bytes</td>' in page
    assert '<th class="num">3</th><th class="num">4.4\xa0KB</th>' in page
    assert '<strong id="jobs-running">1</strong>' in page


def test_everything_is_escaped() -> None:
    Upstream.objects.create(
        name="odd", kind="oci", url="https://odd.example/<script>x</script>", prefix="odd<b>"
    )
    page = Client().get("/").content.decode()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "odd&lt;b&gt;" in page


def test_head_has_no_body() -> None:
    response = Client().head("/")
    assert response.status_code == 200
    assert response.content == b""


def test_other_methods_and_paths_are_unchanged() -> None:
    client = Client()
    for response in (client.post("/"), client.get("/nothing-here"), client.get("/index.html")):
        assert response.status_code == 404
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert client.get("/v2/").status_code in (200, 401)
