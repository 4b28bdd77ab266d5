"""Eviction's units and order (mirror/eviction.py, registries/eviction.py) on database rows,
without servers: which units an image repository has, least recently pulled first, and what
evicting one removes and keeps."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from django.utils import timezone

from mirror import ecosystems, eviction
from mirror.digests import storage_key
from mirror.models import Eviction, StoredObject, Upstream
from mirror.sizes import parse_size
from registries.formats import OCI_INDEX, OCI_MANIFEST
from registries.models import Link, Manifest, Repository, Tag, TagPin

NOW = timezone.now()


def _digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("1073741824", 1 << 30), ("50GiB", 50 << 30), ("500 MB", 500_000_000), (7, 7)],
)
def test_sizes_as_operators_write_them(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "5 parsecs", "GB"])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


class Repo:
    """Rows of one cached repository, written as the pull path writes them."""

    def __init__(self, name: str) -> None:
        upstream, _ = Upstream.objects.get_or_create(
            name="hub",
            defaults={
                "kind": "oci",
                "url": "https://hub.test",
                "prefix": "docker.io",
                "is_default": True,
            },
        )
        self.row = Repository.objects.create(upstream=upstream, name=f"library/{name}")

    def blob(self, name: str, size: int, pulled: int) -> str:
        digest = _digest(name)
        StoredObject.objects.get_or_create(
            key=storage_key(digest),
            defaults={
                "size": size,
                "upstream": self.row.upstream,
                "last_access": NOW - dt.timedelta(hours=pulled),
            },
        )
        old = NOW - dt.timedelta(days=30)  # cached long ago
        StoredObject.objects.filter(key=storage_key(digest)).update(created=old)
        Link.objects.get_or_create(repository=self.row, digest=digest, kind="blob")
        return digest

    def manifest(self, layers: list[str], children: list[str] = ()) -> str:
        if children:
            body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
            for child in children:
                size = Manifest.objects.get(digest=child).size
                descriptor = {"mediaType": OCI_MANIFEST, "digest": child, "size": size}
                body["manifests"].append(descriptor)
        else:
            config, *rest = layers
            body = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json"},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar"} for _ in rest],
            }
            body["config"].update(digest=config, size=1)
            for descriptor, layer in zip(body["layers"], rest, strict=True):
                descriptor.update(digest=layer, size=1)
        data = json.dumps(body).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        media_type = body["mediaType"]
        Manifest.objects.get_or_create(
            digest=digest, defaults={"media_type": media_type, "size": len(data), "body": data}
        )
        Link.objects.get_or_create(repository=self.row, digest=digest, kind="manifest")
        return digest

    def tag(self, name: str, digest: str, pulled: int) -> None:
        Tag.objects.create(
            repository=self.row,
            name=name,
            accept_key="*",
            digest=digest,
            media_type=OCI_MANIFEST,
            size=1,
            fetched_at=NOW - dt.timedelta(days=30),
            last_pull=NOW - dt.timedelta(hours=pulled),
        )


@pytest.fixture
def image(settings) -> ecosystems.Ecosystem:
    settings.MIRROR_UPSTREAM_CACHE_SECONDS = 0
    return ecosystems.get("image")


@pytest.mark.django_db
def test_units_least_recently_pulled_first_pins_left_out(image: ecosystems.Ecosystem) -> None:
    repo = Repo("app")
    base = repo.blob("base", 100, pulled=1)
    amd = repo.manifest([repo.blob("cfg-amd", 1, 9), base, repo.blob("amd", 10, 9)])
    arm = repo.manifest([repo.blob("cfg-arm", 1, 9), base, repo.blob("arm", 20, 9)])
    repo.tag("multi", repo.manifest([], children=[amd, arm]), pulled=5)
    old = repo.manifest([repo.blob("cfg-old", 1, 9), base, repo.blob("old", 30, 9)])
    repo.tag("old", old, pulled=8)
    pinned = repo.manifest([repo.blob("cfg-pin", 1, 9), repo.blob("pin", 40, 9)])
    repo.tag("pinned", pinned, pulled=50)
    TagPin.objects.create(repository=repo.row, name="pinned", digest=pinned)
    by_digest = repo.manifest([repo.blob("cfg-dig", 1, 9), repo.blob("dig", 50, 9)])
    Manifest.objects.filter(digest=by_digest).update(last_pull=NOW - dt.timedelta(hours=7))
    lone = repo.blob("lone", 60, pulled=6)

    units = list(image.eviction_units(None, keep=[]))

    assert [u.reference for u in units] == [
        "app:old",
        f"app@{by_digest}",
        f"app@{lone} (blob)",
        "app:multi",
    ]
    assert units[0].keys == {storage_key(_digest(n)) for n in ("cfg-old", "base", "old")}
    kept = list(image.eviction_units(None, keep=["app:old", f"app@{by_digest}"]))
    assert [u.reference for u in kept] == [f"app@{lone} (blob)", "app:multi"]


@pytest.mark.django_db
def test_evicting_a_tag_keeps_what_kept_manifests_share(image: ecosystems.Ecosystem) -> None:
    repo, other = Repo("app"), Repo("other")
    base = repo.blob("base", 100, pulled=9)
    old = repo.manifest([repo.blob("cfg-old", 1, 9), base, repo.blob("old", 30, 9)])
    repo.tag("old", old, pulled=8)
    new = repo.manifest([repo.blob("cfg-new", 1, 9), base, repo.blob("new", 30, 9)])
    repo.tag("new", new, pulled=1)
    shared = other.blob("old", 30, pulled=9)  # the same layer, in another repository too
    other.tag("1", other.manifest([other.blob("cfg-other", 1, 9), shared]), pulled=1)
    first = next(image.eviction_units(None, keep=[]))
    assert first.reference == "app:old"

    freed = eviction.evict_unit(image, first, Eviction.Reason.TOTAL_BUDGET, NOW)

    assert freed is not None
    assert [obj.key for obj in freed.objects] == [storage_key(_digest("cfg-old"))]
    assert not Manifest.objects.filter(digest=old).exists()
    assert not Tag.objects.filter(name="old").exists()
    assert StoredObject.objects.filter(key=storage_key(base)).exists()  # the new tag's
    assert StoredObject.objects.filter(key=storage_key(_digest("old"))).exists()  # other's
    row = Eviction.objects.get()
    assert (row.reference, row.object_count, row.bytes) == ("app:old", 1, 1)


@pytest.mark.django_db
def test_an_object_pulled_within_the_grace_period_keeps_its_unit(
    image: ecosystems.Ecosystem,
) -> None:
    repo = Repo("app")
    old = repo.manifest([repo.blob("cfg", 1, 9), repo.blob("layer", 10, pulled=0)])
    repo.tag("old", old, pulled=8)
    unit = next(image.eviction_units(None, keep=[]))

    cutoff = NOW - dt.timedelta(minutes=30)
    assert eviction.evict_unit(image, unit, Eviction.Reason.TOTAL_BUDGET, cutoff) is None

    assert Tag.objects.filter(name="old").exists()  # rolled back, whole
    assert Manifest.objects.filter(digest=old).exists()
    assert StoredObject.objects.count() == 2
    assert not Eviction.objects.exists()
