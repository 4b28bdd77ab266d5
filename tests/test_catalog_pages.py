"""`_catalog` pages (registries/catalog.py) over the names clients use: Docker Hub's `library/`
dropped, other upstreams under their prefix, only repositories with a link, in code point
order, and paging by `last` through all of it without a gap or a repeat."""

from __future__ import annotations

import pytest
from django.test import Client

from mirror import upstreams
from mirror.models import Upstream
from registries import catalog
from registries.models import Link, Repository

HUB = [
    "aaa/x",
    "library/alpine",
    "library/zlib",
    "libraryx/q",  # not `library/`: shown as it is
    "library0",
    "mmm/y",
    "zzz",
    "Zed",  # upper case sorts first
]
GHCR = ["org/a", "org/b", "\u00e9t\u00e9/c"]


@pytest.fixture
def names(db: None) -> list[str]:
    """The repositories of a default Docker Hub upstream and of `ghcr.io`, each with a link,
    and some without one; the client names of the linked ones, in order."""
    hub = Upstream.objects.create(
        name="hub", kind="oci", url="http://hub.invalid", prefix="docker.io", is_default=True
    )
    ghcr = Upstream.objects.create(
        name="ghcr", kind="oci", url="http://ghcr.invalid", prefix="ghcr.io"
    )
    upstreams.forget()
    for upstream, repositories in ((hub, HUB), (ghcr, GHCR)):
        for name in repositories:
            repository = Repository.objects.create(upstream=upstream, name=name)
            Link.objects.create(repository=repository, digest="sha256:" + "a" * 64, kind="blob")
        Repository.objects.create(upstream=upstream, name="library/unlinked")
    shown = [n.removeprefix("library/") for n in HUB] + [f"ghcr.io/{n}" for n in GHCR]
    return sorted(shown)


def _everyone(_: object) -> bool:
    return True


def test_the_whole_catalog_is_every_linked_name_in_order(names: list[str]) -> None:
    assert catalog.catalog(None, None, _everyone).items == names
    assert "unlinked" not in names and "library/unlinked" not in names


@pytest.mark.parametrize("n", [1, 2, 3, 5, 100])
def test_pages_follow_each_other_without_a_gap_or_a_repeat(names: list[str], n: int) -> None:
    seen: list[str] = []
    page = catalog.catalog(n, None, _everyone)
    for _ in names:  # a page that did not move on fails, rather than looping for ever
        assert len(page.items) <= n
        seen += page.items
        if page.next_last is None:
            break
        assert page.next_last == page.items[-1]
        page = catalog.catalog(n, page.next_last, _everyone)
    assert seen == names and page.next_last is None


@pytest.mark.parametrize("last", ["", "a", "alpine", "b", "ghcr.io", "ghcr.io/org/a", "m", "~"])
def test_a_page_starts_after_any_last_name(names: list[str], last: str) -> None:
    after = [name for name in names if name > last]
    assert catalog.catalog(3, last, _everyone).items == after[:3]
    assert catalog.catalog(None, last, _everyone).items == after


def test_only_the_upstreams_a_client_may_see(names: list[str]) -> None:
    hub_only = catalog.catalog(None, None, lambda u: u.name == "hub").items
    assert hub_only == [name for name in names if not name.startswith("ghcr.io/")]


def test_many_upstreams_take_several_queries(names: list[str], monkeypatch) -> None:
    monkeypatch.setattr(catalog, "_UNION_MAX", 2)  # SQLite's own bound is 500 SELECTs
    assert catalog.catalog(None, None, _everyone).items == names
    assert catalog.catalog(4, "b", _everyone).items == [n for n in names if n > "b"][:4]


@pytest.mark.parametrize("last", ["%00", "a%00b", "a%01b", "UPPER", "a" * 256, "%C3%28"])
def test_a_last_that_no_repository_name_can_be_is_refused(names: list[str], last: str) -> None:
    answer = Client().get(f"/v2/_catalog?n=2&last={last}")
    assert answer.status_code == 400, answer.content[:300]
    assert answer.json()["errors"][0]["code"] == "NAME_INVALID"
    first = Client().get("/v2/_catalog?n=2&last=aaa/x").json()["repositories"]
    assert first == [name for name in names if name > "aaa/x"][:2]
