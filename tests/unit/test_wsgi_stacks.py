"""Which middleware stack a path takes (config/wsgi.py): the protocols and the probes the short
one, the admin, the API, the front page and static files the whole one."""

from __future__ import annotations

import io
from wsgiref.util import setup_testing_defaults

import pytest
from django.conf import settings

from config.wsgi import application, is_protocol

PROTOCOL_PATHS = [
    "/v2/",
    "/v2",
    "/v2/library/alpine/manifests/latest",
    "/v2/_catalog",
    "/token",
    "/sumdb/sum.golang.org/supported",
    "/example.com/m/@v/list",
    "/example.com/m/@v/v1.0.0.zip",
    "/example.com/m/@latest",
    "/healthz",
    "/readyz",
    "/metrics",
]
SITE_PATHS = ["/", "/admin/", "/admin/login/", "/api/v1/", "/api/schema/", "/static/x.css"]
ADMIN_ONLY = ("Session", "Csrf", "Authentication", "Message", "WhiteNoise")


@pytest.mark.parametrize("path", PROTOCOL_PATHS)
def test_protocol_paths_take_the_short_stack(path: str) -> None:
    assert is_protocol(path)


@pytest.mark.parametrize("path", [*SITE_PATHS, "/api/v1/example.com/m/@v/list", "/v20"])
def test_other_paths_take_the_whole_stack(path: str) -> None:
    assert not is_protocol(path)


def test_the_short_stack_is_the_whole_one_less_what_only_the_site_uses() -> None:
    short, whole = settings.PROTOCOL_MIDDLEWARE, settings.MIDDLEWARE
    assert short == [m for m in whole if m in short], "same order, nothing of its own"
    assert [m for m in whole if m not in short and not any(n in m for n in ADMIN_ONLY)] == []


def _call(method: str, path: str) -> tuple[str, dict[str, str]]:
    environ: dict[str, object] = {"REQUEST_METHOD": method, "PATH_INFO": path}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(b"")
    got: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *exc: object) -> None:
        got["status"], got["headers"] = status, dict(headers)

    body = application(environ, start_response)
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return str(got["status"]), got["headers"]  # type: ignore[return-value]


def test_the_admin_keeps_csrf_protection() -> None:
    """A login form posted without its CSRF cookie and token is refused."""
    status, _ = _call("POST", "/admin/login/")
    assert status.startswith("403")


def test_a_probe_answers_through_the_short_stack() -> None:
    status, headers = _call("GET", "/healthz")
    assert status.startswith("200")
    assert "Vary" not in headers and "Set-Cookie" not in headers
    assert headers["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware still runs
