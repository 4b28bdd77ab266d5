"""The upstream file, routing, and the admin's handling of credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from mirror.config_file import ConfigError, load
from mirror.models import Upstream
from mirror.upstreams import forget
from registries.errors import RegistryError
from registries.routing import route

pytestmark = pytest.mark.django_db

CONFIG = """
upstreams:
  - name: hub
    kind: oci
    url: https://registry-1.docker.io
    prefix: docker.io
    default: true
  - name: ghcr
    kind: oci
    url: https://ghcr.io
    prefix: ghcr.io
    username_env: GHCR_USER
    password_env: GHCR_TOKEN
"""


@pytest.fixture
def configured(tmp_path: Path) -> None:
    path = tmp_path / "mirror.yml"
    path.write_text(CONFIG)
    load(path)
    forget()


def test_default_is_docker_hub_without_a_file() -> None:
    load(None)
    hub = Upstream.objects.get()
    assert (hub.url, hub.prefix, hub.is_default) == (
        "https://registry-1.docker.io",
        "docker.io",
        True,
    )


def test_reloading_updates_rows(tmp_path: Path, configured: None) -> None:
    path = tmp_path / "again.yml"
    path.write_text(CONFIG.replace("https://ghcr.io", "https://ghcr.example"))
    load(path)
    assert Upstream.objects.get(name="ghcr").url == "https://ghcr.example"
    assert Upstream.objects.count() == 2


@pytest.mark.parametrize(
    "text",
    [
        "upstreams: {}",
        "upstreams:\n  - name: x\n    kind: oci\n    url: ftp://x",
        "upstreams:\n  - name: x\n    kind: oci\n    url: http://x\n    password: inline",
        "upstreams:\n  - name: x\n    kind: nope\n    url: http://x",
        "upstreams:\n  - {name: x, kind: oci, url: 'http://a'}\n  - {name: x, kind: oci, url: 'http://b'}",
    ],
)
def test_bad_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load(path)
    assert not Upstream.objects.exists()


@pytest.mark.parametrize(
    ("name", "ns", "upstream", "repository"),
    [
        ("alpine", None, "hub", "library/alpine"),
        ("library/alpine", None, "hub", "library/alpine"),
        ("docker.io/alpine", None, "hub", "library/alpine"),
        ("ghcr.io/acme/tool", None, "ghcr", "acme/tool"),
        ("acme/tool", "ghcr.io", "ghcr", "acme/tool"),
        ("alpine", "docker.io", "hub", "library/alpine"),
        ("quay.io/org/image", None, "hub", "quay.io/org/image"),
    ],
)
def test_routing(configured: None, name: str, ns: str | None, upstream: str, repository: str):
    target = route(name, ns)
    assert (target.upstream.name, target.repository) == (upstream, repository)


def test_unknown_ns_is_refused(configured: None) -> None:
    with pytest.raises(RegistryError) as info:
        route("alpine", "evil.example")
    assert info.value.code == "NAME_UNKNOWN"


def test_admin_never_shows_credentials(configured: None) -> None:
    User.objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    ghcr = Upstream.objects.get(name="ghcr")
    url = f"/admin/mirror/upstream/{ghcr.pk}/change/"
    form = client.get(url).content.decode()
    assert 'name="password"' in form
    data = {
        "name": "ghcr",
        "kind": "oci",
        "url": "https://ghcr.io",
        "prefix": "ghcr.io",
        "enabled": "on",
        "tag_ttl": "300",
        "stale_max_age": "604800",
        "username_env": "",
        "password_env": "",
        "username": "robot",
        "password": "hunter2-secret",
        "position": "1",
    }
    assert client.post(url, data).status_code == 302
    assert Upstream.objects.get(name="ghcr").password == "hunter2-secret"
    assert "hunter2-secret" not in client.get(url).content.decode()
    # Saving again with the field left empty keeps the stored secret.
    data["password"] = ""
    assert client.post(url, data).status_code == 302
    assert Upstream.objects.get(name="ghcr").password == "hunter2-secret"


def test_cache_admin_pages_render(configured: None) -> None:
    User.objects.create_superuser("admin", "a@example.com", "pw")
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    for page in (
        "registries/repository",
        "registries/tag",
        "registries/manifest",
        "mirror/storedobject",
    ):
        response = client.get(f"/admin/{page}/?q=alpine")
        assert response.status_code == 200, page
