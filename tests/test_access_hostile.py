"""Hostile credentials: whatever a client puts in `Authorization` or in the token endpoint's
query, the answer is a 401 (or the anonymous answer) in the protocol's own format, never a 500
and never a pull of private content. In process (Django's test client): no upstream is ever
reached, because access is decided before any cache or upstream is consulted."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from django.test import Client

from mirror import access, tokens
from mirror.models import Upstream
from mirror.upstreams import forget

pytestmark = pytest.mark.django_db


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


HOSTILE = [
    "Basic",
    "Basic ",
    "Basic !!!not-base64!!!",
    "Basic " + "A" * 5000,  # longer than any header the mirror reads
    _basic(b"no-colon"),
    _basic(b":"),
    _basic(b"alice:"),
    _basic(b":entp_" + b"x" * 40),
    _basic(b"\xff\xfe:\xff"),  # not UTF-8
    _basic(b"alice:entp_" + b"x" * 40),  # a token nobody has
    _basic(b"alice\x00:secret"),
    _basic(b"alice:" + b"p" * 3000),
    "Bearer",
    "Bearer ",
    "Bearer not.a.token",
    "Bearer " + "e" * 3000,
    "Bearer eyJhbGciOiJub25lIn0.e30.",  # an unsigned JWT
    "Negotiate abc",
    "Digest username=alice",
    "\u00e9\u00e9",
]


@pytest.fixture
def private() -> Upstream:
    upstream = Upstream.objects.create(
        name="corp", kind="oci", url="https://corp.invalid", prefix="corp.test", private=True
    )
    Upstream.objects.create(
        name="gocorp",
        kind="go",
        url="https://go.corp.invalid",
        modules=["corp.example.com/*"],
        verify_sums=False,
        private=True,
    )
    User.objects.create_user("alice", password="alice-Pa55word-9")
    forget()
    access.forget()
    yield upstream
    forget()
    access.forget()


@pytest.mark.parametrize("header", HOSTILE)
def test_hostile_authorization_is_a_401_in_each_protocol(private: Upstream, header: str) -> None:
    client = Client(HTTP_AUTHORIZATION=header)
    oci = client.get("/v2/corp.test/team/app/manifests/1")
    assert oci.status_code == 401, oci.content
    assert oci.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert oci["WWW-Authenticate"].startswith("Bearer realm=")
    token = client.get("/token", {"service": "entrepot", "scope": "repository:x:pull"})
    assert token.status_code == 401 and token.json()["errors"][0]["code"] == "UNAUTHORIZED"
    go = client.get("/corp.example.com/secret/@v/list")
    assert go.status_code == 401, go.content
    assert go["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "query",
    [
        {"scope": "repository:" + "a" * 5000 + ":pull"},
        {"scope": "registry:catalog:*", "service": "\x00"},
        {"scope": ["repository:a:pull", "repository:b:push,pull"]},
        {"account": "'; DROP TABLE auth_user; --"},
    ],
)
def test_any_token_query_gets_an_anonymous_token_that_opens_nothing_private(
    private: Upstream, query: dict[str, object]
) -> None:
    answer = Client().get("/token", query)
    assert answer.status_code == 200
    bearer = answer.json()["token"]
    denied = Client(HTTP_AUTHORIZATION=f"Bearer {bearer}").get("/v2/corp.test/team/app/manifests/1")
    assert denied.status_code == 401  # anonymous: asked to log in, nothing learnt


def test_an_api_token_is_not_a_pull_token(private: Upstream) -> None:
    _, api_token = tokens.create("ci", ["admin"])
    answer = Client(HTTP_AUTHORIZATION=_basic(b"alice:" + api_token.encode())).get(
        "/v2/corp.test/team/app/manifests/1"
    )
    assert answer.status_code == 401
