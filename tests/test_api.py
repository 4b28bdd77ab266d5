"""The core's REST API end to end: the real server (gunicorn), a real Celery worker on a Redis
database of this test process's own, tokens made by `manage.py mirror_token`.

Upstreams: `hub` (docker.io, the real registry through a fault proxy; not the default, so
that a name under no prefix is refused), `corp` (harbor.test, a second registry whose proxy
the budget test makes answer 429), and `golang`, a Go upstream on a port where nothing
listens. Retries are quick and few, so a job whose references cannot be served ends soon.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CORP_PASSWORD, CORP_USER, Upstreams
from tests.mirror_server import MirrorServer
from tests.support.net import free_port
from tests.support.worker import CeleryWorker, redis_url

ADMIN_PASSWORD = "api-test-admin-pw"


def write_config(path: Path, up: Upstreams) -> Path:
    path.write_text(
        f"""
upstreams:
  - name: hub
    kind: oci
    url: {up.hub.url}
    prefix: docker.io
  - name: corp
    kind: oci
    url: {up.corp.url}
    prefix: harbor.test
    username_env: CORP_USER
    password_env: CORP_PASSWORD
  - name: golang
    kind: go
    url: http://127.0.0.1:{free_port()}
"""
    )
    return path


class Api:
    """The server, its worker, and a token per scope."""

    def __init__(self, server: MirrorServer, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens

    def new_token(self, name: str, scope: str) -> str:
        out = self.server.manage("mirror_token", "create", name, "--scope", scope)
        return out.strip().splitlines()[-1]

    def call(
        self, method: str, path: str, scope: str | None = "admin", **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", {})
        if scope is not None:
            headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        return httpx.request(method, f"{self.server.url}{path}", headers=headers, timeout=30, **kw)

    def wait_job(self, job_id: int, done: Callable[[dict[str, Any]], bool], timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            job = self.call("GET", f"/api/v1/prewarm/{job_id}/", "read").json()
            if done(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("api")
    server = MirrorServer(
        data / "var",
        write_config(data / "mirror.yml", upstreams),
        REDIS_URL=redis_url(),
        CORP_USER=CORP_USER,
        CORP_PASSWORD=CORP_PASSWORD,
        MIRROR_GO_VERIFY="off",
        MIRROR_PREWARM_RETRIES="1",
        MIRROR_PREWARM_BACKOFF="0.2",
        MIRROR_UPSTREAM_CONNECT_TIMEOUT="1",
        DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
    )
    server.setup()
    scopes = ("read", "prewarm", "admin")
    with ThreadPoolExecutor(4) as pool:  # each manage.py takes seconds: at once
        # whitenoise serves what collectstatic gathered (the Swagger UI's scripts and styles).
        static = pool.submit(server.manage, "collectstatic", "--noinput", "--verbosity", "0")
        admin = pool.submit(
            server.manage, "createsuperuser", "--noinput", "--username", "op", "--email", "op@x.org"
        )
        made = {
            s: pool.submit(server.manage, "mirror_token", "create", f"test-{s}", "--scope", s)
            for s in scopes
        }
        static.result(), admin.result()
        tokens = {s: out.result().strip().splitlines()[-1] for s, out in made.items()}
    server.start()
    worker = CeleryWorker(server.env, data / "worker.log").start()
    try:
        yield Api(server, tokens)
    finally:
        worker.stop()
        server.stop()


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


# --- Authentication and scopes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ent_not-a-token", "Bearer", "Bearer a b", "Basic b3A6cHc=", "Bearer ent_\xe9"],
)
def test_no_or_bad_token_is_401_with_a_challenge(api: Api, authorization: str | None) -> None:
    headers = {"Authorization": authorization.encode("latin-1")} if authorization else {}
    for method, path in [("GET", "/api/v1/prewarm/"), ("POST", "/api/v1/prewarm/")]:
        r = api.call(method, path, None, headers=dict(headers), json={"images": ["x"]})
        body = assert_error(r, 401)
        assert r.headers["WWW-Authenticate"].startswith("Bearer ")
        assert set(body) == {"detail", "code"}
    assert api.call("GET", "/api/v1/prewarm/", "read").status_code == 200


def test_every_operation_refuses_a_token_outside_its_scope(api: Api) -> None:
    """Each operation the schema says needs `prewarm` or `admin` (the core's and the protocol
    apps': prewarm, purge, pin, refresh...) answers 403 to a token with less, before it looks
    at the object or the body."""
    schema = api.call("GET", "/api/schema/?format=json", None).json()
    needs = re.compile(r"Scope: `(\w+)`")
    checked = []
    for path, operations in schema["paths"].items():
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method, operation in operations.items():
            scope = needs.search(operation.get("description", ""))
            assert scope, f"{method} {path} does not say its scope"
            lower = {"prewarm": ["read"], "admin": ["read", "prewarm"]}.get(scope[1], [])
            for token in lower:
                r = api.call(method.upper(), url, token, json={})
                assert_error(r, 403)
                checked.append((method, path, token))
    assert ("post", "/api/v1/prewarm/", "read") in checked
    assert ("delete", "/api/v1/always-warm/{id}/", "prewarm") in checked


def test_tokens_are_stored_hashed_and_never_listed(api: Api) -> None:
    token = api.new_token("hash-check", "read")
    used = api.call("GET", "/api/v1/stats/", None, headers={"Authorization": f"Bearer {token}"})
    assert used.status_code == 200
    database = api.server.data_dir / "entrepot.sqlite3"
    with sqlite3.connect(database) as db:
        digest, prefix = db.execute(
            "SELECT digest, prefix FROM mirror_apitoken WHERE name = 'hash-check'"
        ).fetchone()
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert token.startswith(prefix) and len(prefix) < 12
    secret = token[len(prefix) :].encode()
    for path in database.parent.glob("entrepot.sqlite3*"):  # the database and its WAL
        assert secret not in path.read_bytes(), path
    listing = api.server.manage("mirror_token", "list")
    assert "hash-check" in listing and token not in listing and secret.decode() not in listing


def test_a_staff_session_browses_the_api(api: Api) -> None:
    with httpx.Client(base_url=api.server.url) as browser:
        browser.get("/admin/login/")
        login = browser.post(
            "/admin/login/?next=/admin/",
            data={
                "username": "op",
                "password": ADMIN_PASSWORD,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{api.server.url}/admin/login/"},
        )
        assert login.status_code == 302, login.text
        page = browser.get("/api/v1/prewarm/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "Prewarm" in page.text
        # Without the CSRF token a session cannot change anything.
        assert_error(browser.post("/api/v1/prewarm/", json={"images": ["x"]}), 403)


# --- Prewarm jobs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "non_field_errors", "at least one"),
        ({"images": [], "modules": []}, "non_field_errors", "at least one"),
        ({"images": ["quay.io/acme/tool:v1"]}, "images", "quay.io/acme/tool:v1"),
        ({"images": ["docker.io/Upper/Case:1"]}, "images", "invalid repository name"),
        ({"modules": ["not a module path@v1.0.0"]}, "modules", "not a module path"),
        ({"images": ["docker.io/a:1"], "platforms": "garbage"}, "platforms", "all"),
        ({"images": ["docker.io/a:1"], "platforms": ["linux"]}, "platforms", "linux"),
        ({"images": ["docker.io/a:1"], "platforms": []}, "platforms", "at least one"),
        ({"images": ["docker.io/a:1"], "platforms": [7]}, "platforms", "os/arch"),
        ({"images": "docker.io/a:1"}, "images", "list"),
        ({"images": [None]}, "images", "null"),
        ({"images": ["docker.io/a:" + "1" * 1100]}, "images", "1024"),
        ({"images": [f"docker.io/a:{n}" for n in range(501)]}, "images", "500"),
        (["docker.io/a:1"], "non_field_errors", "dictionary"),
    ],
)
def test_bad_prewarm_bodies_are_400_and_store_nothing(
    api: Api, body: Any, field: str, message: str
) -> None:
    before = sum(api.call("GET", "/api/v1/stats/", "read").json()["prewarm_jobs"].values())
    errors = assert_error(api.call("POST", "/api/v1/prewarm/", "prewarm", json=body), 400)
    assert message in str(errors[field]), errors
    assert sum(api.call("GET", "/api/v1/stats/", "read").json()["prewarm_jobs"].values()) == before


def test_a_body_that_is_not_json_is_400(api: Api) -> None:
    r = api.call(
        "POST",
        "/api/v1/prewarm/",
        "prewarm",
        content=b'{"images": [',
        headers={"Content-Type": "application/json"},
    )
    assert assert_error(r, 400)["code"] == "parse_error"


def test_a_job_nothing_can_serve_fails_with_its_item_errors(api: Api) -> None:
    r = api.call(
        "POST",
        "/api/v1/prewarm/",
        "prewarm",
        json={
            "images": ["docker.io/library/absent-from-upstream:1"],
            "modules": ["example.com/unserved@v1.0.0"],
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["Location"] == f"{api.server.url}/api/v1/prewarm/{job['id']}/"
    assert job["source"] == "api" and job["requested_by"] == "token:test-prewarm"
    assert job["platforms"] == "all"
    assert [(i["kind"], i["reference"], i["platforms"]) for i in job["items"]] == [
        ("image", "docker.io/absent-from-upstream:1", []),
        ("module", "example.com/unserved@v1.0.0", []),
    ]
    assert job["progress"]["items"] == 2

    job = api.wait_job(job["id"], lambda j: j["finished"] is not None)
    assert job["status"] == "failed"
    assert job["progress"]["failed"] == 2
    for item in job["items"]:
        assert item["status"] == "failed" and item["error"] and item["attempts"] >= 1, item
        assert item["finished"] is not None

    listed = api.call("GET", "/api/v1/prewarm/?status=failed", "read").json()
    assert job["id"] in [j["id"] for j in listed["results"]]
    assert all(j["status"] == "failed" for j in listed["results"])
    assert "items" not in listed["results"][0]
    # Cancelling a job that has ended changes nothing (200, the job as it is).
    cancelled = api.call("POST", f"/api/v1/prewarm/{job['id']}/cancel/", "prewarm")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "failed"


def test_a_rate_limited_upstream_defers_items_shows_its_budget_and_the_job_cancels(
    api: Api, upstreams: Upstreams
) -> None:
    upstreams.corp.status, upstreams.corp.retry_after = 429, 600
    r = api.call(
        "POST",
        "/api/v1/prewarm/",
        "prewarm",
        json={"images": ["harbor.test/team/app:1"], "platforms": ["linux/arm64/v8", "linux/amd64"]},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["platforms"] == ["linux/arm64/v8", "linux/amd64"]
    assert job["items"][0]["platforms"] == ["linux/arm64/v8", "linux/amd64"]

    job = api.wait_job(
        job["id"], lambda j: j["items"][0]["attempts"] >= 1 and j["items"][0]["not_before"]
    )
    assert job["status"] == "running" and job["items"][0]["status"] == "queued", job
    corp = api.call("GET", "/api/v1/upstreams/corp/", "read").json()
    assert corp["budget"]["remaining"] is None  # a 429 alone says nothing of the window
    assert corp["budget"]["blocked_until"] is not None
    assert corp["budget"]["defer_seconds"] > 60
    assert corp["url"] == upstreams.corp.url

    running = api.call("GET", "/api/v1/prewarm/?status=running", "read").json()["results"]
    assert job["id"] in [j["id"] for j in running]

    r = api.call("POST", f"/api/v1/prewarm/{job['id']}/cancel/", "prewarm")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["items"][0]["status"] == "cancelled"
    again = api.call("POST", f"/api/v1/prewarm/{job['id']}/cancel/", "prewarm")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_job_list_is_newest_first_and_paginated_and_filters_are_checked(api: Api) -> None:
    ids = []
    for n in range(3):
        r = api.call("POST", "/api/v1/prewarm/", "prewarm", json={"images": [f"docker.io/p:{n}"]})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    page = api.call("GET", "/api/v1/prewarm/?limit=2", "read").json()
    assert [j["id"] for j in page["results"]] == ids[:0:-1]
    assert page["count"] >= 3 and page["next"]
    assert_error(api.call("GET", "/api/v1/prewarm/?status=bogus", "read"), 400)
    body = assert_error(api.call("GET", "/api/v1/prewarm/999999999/", "read"), 404)
    assert body["code"] == "not_found"
    assert_error(api.call("POST", "/api/v1/prewarm/999999999/cancel/", "prewarm"), 404)
    assert_error(api.call("GET", "/api/v1/no-such-endpoint/", "read"), 404)


# --- Cache figures, upstreams, quarantine, always-warm -----------------------------------------


def test_stats(api: Api) -> None:
    stats = api.call("GET", "/api/v1/stats/", "read").json()
    assert set(stats) == {
        "objects",
        "bytes",
        "reads",
        "hit_ratio",
        "upstreams",
        "prewarm_jobs",
        "quarantined",
    }
    assert set(stats["prewarm_jobs"]) == {
        "queued",
        "running",
        "succeeded",
        "partial",
        "failed",
        "cancelled",
    }
    assert stats["quarantined"] == 0
    assert stats["objects"] == sum(u["objects"] for u in stats["upstreams"])


def test_upstreams_never_show_credentials(api: Api) -> None:
    body = api.call("GET", "/api/v1/upstreams/", "read")
    assert body.status_code == 200
    names = [u["name"] for u in body.json()["results"]]
    assert {"hub", "corp", "golang"} <= set(names)
    for secret in (CORP_USER, CORP_PASSWORD, "CORP_USER", "CORP_PASSWORD", "password"):
        assert secret not in body.text
    assert_error(api.call("GET", "/api/v1/upstreams/nope/", "read"), 404)
    assert api.call("GET", "/api/v1/quarantine/", "read").json()["count"] == 0


def test_always_warm_list(api: Api) -> None:
    add = api.call(
        "POST",
        "/api/v1/always-warm/",
        json={"kind": "image", "reference": "docker.io/alpine:3.19", "platforms": ["linux/amd64"]},
    )
    assert add.status_code == 201, add.text
    row = add.json()
    assert row["reference"] == "docker.io/alpine:3.19" and row["platforms"] == ["linux/amd64"]
    again = api.call(
        "POST", "/api/v1/always-warm/", json={"kind": "image", "reference": "docker.io/alpine:3.19"}
    )
    assert "already" in str(assert_error(again, 400)["reference"])
    for body, field in [
        ({"kind": "image", "reference": "quay.io/x:1"}, "reference"),
        ({"kind": "module", "reference": "no version"}, "reference"),
        ({"kind": "chart", "reference": "x"}, "kind"),
    ]:
        assert field in assert_error(api.call("POST", "/api/v1/always-warm/", json=body), 400)
    url = f"/api/v1/always-warm/{row['id']}/"
    changed = api.call("PATCH", url, json={"enabled": False})
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    listed = api.call("GET", "/api/v1/always-warm/", "read").json()["results"]
    assert row["id"] in [r["id"] for r in listed]
    assert api.call("DELETE", url).status_code == 204
    assert_error(api.call("GET", url, "read"), 404)


# --- The OpenAPI schema and its UI -------------------------------------------------------------


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = found.get("src") if tag == "script" else found.get("href") if tag == "link" else None
        if url:
            self.urls.append(url)


def test_the_api_docs_load_their_scripts_and_styles_from_this_host(api: Api) -> None:
    page = httpx.get(f"{api.server.url}/api/docs/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = _Assets()
    assets.feed(page.text)
    assert any(u.endswith(".js") for u in assets.urls), assets.urls
    assert any(u.endswith(".css") for u in assets.urls), assets.urls
    for url in assets.urls:
        assert url.startswith("/static/"), f"{url} is not served by this host"
        asset = httpx.get(f"{api.server.url}{url}")
        assert asset.status_code == 200, url
    schema = httpx.get(f"{api.server.url}/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200 and "/api/v1/prewarm/" in schema.json()["paths"]
