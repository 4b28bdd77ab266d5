"""Access control end to end: a public and a private OCI upstream (two docker-registry
upstreams) and a private Go upstream, behind a mirror served over https (the go command sends
credentials only over https); users, groups and pull tokens made with the real commands;
podman, the go command and plain HTTP clients."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory

from mirror import access
from mirror.models import PullToken
from tests.conftest import CORP_PASSWORD, CORP_USER, Upstreams
from tests.mirror_server import MirrorServer
from tests.support.gocmd import go_env, run_go
from tests.support.gomodules import Module, StaticServer, write_tree
from tests.support.images import Layout
from tests.support.tls import self_signed
from tests.support.worker import redis_url

PASSWORDS = {"alice": "alice-Pa55word-9", "bob": "bob-Pa55word-7"}
SECRET = Module("corp.example.com/secret", "v1.0.0")
PRIVATE_NAME = "private.test/team/secret"  # the private upstream's team/secret, as clients name it
# alice is in `builders`, the group allowed to pull the private upstreams; bob is in none;
# carol is allowed by name on the private OCI upstream.
USERS = f"""
from django.contrib.auth.models import Group, User
alice = User.objects.create_user("alice", password={PASSWORDS["alice"]!r})
alice.groups.add(Group.objects.get(name="builders"))
User.objects.create_user("bob", password={PASSWORDS["bob"]!r})
"""
# Headers that differ between any two answers.
VARYING = {"date", "x-request-id"}


class TlsMirror(MirrorServer):
    """The mirror served over https by gunicorn's gthread worker (the default worker serves
    plain HTTP only)."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@dataclass
class World:
    mirror: TlsMirror
    cert: Path
    tokens: dict[str, str]  # user -> pull token
    public: Layout
    private: Layout
    tmp: Path
    issued: list[str] = field(default_factory=list)  # Bearer tokens the mirror gave out

    def bearer(self, user: str | None, secret: str | None = None) -> str:
        """A token from the mirror's token endpoint, for `user` with their pull token (or
        `secret`), or anonymous."""
        auth = (user, secret or self.tokens[user]) if user else None
        scope = f"repository:{PRIVATE_NAME}:pull"
        answer = httpx.get(
            f"{self.mirror.url}/token", params={"service": "entrepot", "scope": scope}, auth=auth
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["token"] == body["access_token"] and body["expires_in"] == 300
        self.issued.append(body["token"])
        return body["token"]

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.mirror.url}{path}", headers=headers)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("access")
    cert, key = self_signed(tmp)
    write_tree(tmp / "corp", [SECRET])
    with pytest.MonkeyPatch.context() as patch, StaticServer(tmp / "corp") as corp:
        patch.setenv("SSL_CERT_FILE", str(cert))  # httpx (and MirrorServer.start) trust it
        config = tmp / "mirror.yml"
        config.write_text(
            f"""
upstreams:
  - {{name: hub, kind: oci, url: "{upstreams.hub.url}", prefix: docker.io, default: true}}
  - name: vault
    kind: oci
    url: "{upstreams.corp.url}"
    prefix: private.test
    username_env: CORP_USER
    password_env: CORP_PASSWORD
    private: true
    allowed_groups: [builders]
    allowed_users: [carol]
  - name: corp
    kind: go
    url: "{corp.url}"
    modules: ["corp.example.com/*"]
    verify_sums: false
    private: true
    allowed_groups: [builders]
"""
        )
        mirror = TlsMirror(
            tmp / "var",
            config,
            CORP_USER=CORP_USER,
            CORP_PASSWORD=CORP_PASSWORD,
            GUNICORN_WORKER_CLASS="gthread",
            GUNICORN_CMD_ARGS=f"--certfile {cert} --keyfile {key}",
            GUNICORN_ACCESS_LOG="-",  # into server.log, which a test greps for secrets
        )
        mirror.setup()
        mirror.manage("shell", "-c", USERS)
        tokens = {
            user: mirror.manage("mirror_token", "pull-create", user, "laptop").split()[-1]
            for user in ("alice", "bob", "carol")  # carol: made by the config file's load
        }
        public = upstreams.seed("library/open:1")
        private = upstreams.seed("team/secret:1", corp=True)
        mirror.start()
        yield World(mirror, cert, tokens, public, private, tmp)
        mirror.stop()


@pytest.fixture
def podman(tmp_path: Path, world: World) -> Iterator[tuple[Path, object]]:
    """podman with throwaway storage and its own auth file (REGISTRY_AUTH_FILE), talking to
    the mirror by its address; returns (auth file, run(*args) -> CompletedProcess)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run the tests with `make test`", pytrace=False)
    (tmp_path / "registries.conf").write_text("")
    authfile = tmp_path / "auth.json"
    authfile.write_text("{}")  # podman pull wants it to exist
    env = {
        **os.environ,
        "CONTAINERS_REGISTRIES_CONF": str(tmp_path / "registries.conf"),
        "REGISTRY_AUTH_FILE": str(authfile),
    }
    runroot = tempfile.mkdtemp(prefix="pa-")  # podman wants a runroot under 50 characters
    base = ["podman", "--storage-driver", "vfs", "--root", str(tmp_path / "root")]
    base += ["--runroot", runroot, "--events-backend", "none", "--cgroup-manager", "cgroupfs"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    yield authfile, run
    shutil.rmtree(runroot, ignore_errors=True)


def _same_answer(denied: httpx.Response, missing: httpx.Response) -> None:
    """Byte for byte the same status, body and headers (but the date and request id)."""
    assert denied.status_code == missing.status_code
    assert denied.content == missing.content
    strip = lambda r: {k: v for k, v in r.headers.items() if k.lower() not in VARYING}  # noqa: E731
    assert strip(denied) == strip(missing)


def test_anonymous_podman_pulls_a_public_image(world: World, podman) -> None:
    _, run = podman
    host = world.mirror.host
    pulled = run("pull", "-q", "--tls-verify=false", f"{host}/open:1")
    assert pulled.returncode == 0, pulled.stderr
    image_id = run("image", "inspect", "--format", "{{.Id}}", f"{host}/open:1").stdout.strip()
    assert f"sha256:{image_id}" == world.public.config_digests["linux/amd64"]


def test_private_image_is_challenged_then_pulled_after_podman_login(world: World, podman) -> None:
    authfile, run = podman
    host, image = world.mirror.host, f"{world.mirror.host}/{PRIVATE_NAME}:1"
    answer = world.get(f"/v2/{PRIVATE_NAME}/manifests/1")
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert answer.headers["WWW-Authenticate"] == (
        f'Bearer realm="{world.mirror.url}/token",service="entrepot",'
        f'scope="repository:{PRIVATE_NAME}:pull"'
    )
    refused = run("pull", "-q", "--tls-verify=false", image)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower()

    wrong = run("login", "--tls-verify=false", "-u", "alice", "-p", "entp_not-a-token", host)
    assert wrong.returncode != 0 and host not in authfile.read_text()
    login = run("login", "--tls-verify=false", "-u", "alice", "-p", world.tokens["alice"], host)
    assert login.returncode == 0, login.stderr
    pulled = run("pull", "-q", "--tls-verify=false", image)
    assert pulled.returncode == 0, pulled.stderr
    image_id = run("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    assert f"sha256:{image_id}" == world.private.config_digests["linux/amd64"]


def test_user_outside_the_groups_gets_the_missing_name_answer(world: World) -> None:
    alice, bob = world.bearer("alice"), world.bearer("bob")
    layer = world.private.layer_digests["linux/amd64"][0]
    absent = "sha256:" + "0" * 64
    for secret_path, missing_path in [
        (f"/v2/{PRIVATE_NAME}/manifests/1", "/v2/private.test/team/nothing/manifests/1"),
        (f"/v2/{PRIVATE_NAME}/blobs/{layer}", f"/v2/private.test/team/nothing/blobs/{absent}"),
        (f"/v2/{PRIVATE_NAME}/tags/list", "/v2/private.test/team/nothing/tags/list"),
    ]:
        assert world.get(secret_path, alice).status_code == 200
        missing = world.get(missing_path, alice)  # a name the upstream does not have
        assert missing.status_code == 404
        _same_answer(world.get(secret_path, bob), missing)
    # The same with the pull token sent as Basic credentials, and with his password's token.
    basic = httpx.get(
        f"{world.mirror.url}/v2/{PRIVATE_NAME}/manifests/1", auth=("bob", world.tokens["bob"])
    )
    _same_answer(basic, world.get("/v2/private.test/team/nothing/manifests/1", alice))
    by_password = world.bearer("bob", PASSWORDS["bob"])
    assert world.get(f"/v2/{PRIVATE_NAME}/manifests/1", by_password).status_code == 404


def test_catalog_lists_private_repositories_only_to_allowed_clients(world: World) -> None:
    alice = world.bearer("alice")
    assert world.get(f"/v2/{PRIVATE_NAME}/manifests/1", alice).status_code == 200
    seen = {
        who: world.get("/v2/_catalog", token).json()["repositories"]
        for who, token in [("anonymous", None), ("bob", world.bearer("bob")), ("alice", alice)]
    }
    assert PRIVATE_NAME in seen["alice"]
    assert PRIVATE_NAME in world.get("/v2/_catalog", world.bearer("carol")).json()["repositories"]
    assert PRIVATE_NAME not in seen["anonymous"] and PRIVATE_NAME not in seen["bob"]


def test_token_endpoint_and_credentials_on_v2(world: World) -> None:
    url = world.mirror.url
    # /v2/ challenges anonymous clients (a private upstream exists), so that clients log in.
    base = world.get("/v2/")
    assert base.status_code == 401
    assert base.headers["WWW-Authenticate"] == f'Bearer realm="{url}/token",service="entrepot"'
    assert world.get("/v2/", world.bearer(None)).status_code == 200  # anonymous token
    assert world.get("/v2/", world.bearer("alice", PASSWORDS["alice"])).status_code == 200
    # Anonymous clients pull public content with no token at all.
    assert world.get("/v2/open/manifests/1").status_code == 200
    for bad in [
        ("alice", "entp_wrong"),
        ("alice", PASSWORDS["bob"]),
        ("bob", world.tokens["alice"]),
    ]:
        refused = httpx.get(f"{url}/token", auth=bad)
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    for header in ["Bearer forged.token", "Basic bm90LWJhc2U2NA==", "Digest x"]:
        answer = httpx.get(f"{url}/v2/open/manifests/1", headers={"Authorization": header})
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith(f'Bearer realm="{url}/token"')
    # A password is not a pull token: outside the token endpoint it is refused.
    assert httpx.get(f"{url}/v2/", auth=("alice", PASSWORDS["alice"])).status_code == 401
    assert httpx.get(f"{url}/v2/", auth=("alice", world.tokens["alice"])).status_code == 200


@pytest.mark.django_db
def test_admin_shows_a_new_pull_token_once_and_revokes_it(
    admin_client: Client, admin_user: User
) -> None:
    form = {"user": admin_user.pk, "name": "ci", "expires_0": "", "expires_1": ""}
    page = admin_client.post("/admin/mirror/pulltoken/add/", form).content.decode()
    token = re.search(r'id="new-token"[^>]*>(entp_[^<]+)<', page)[1]
    row = PullToken.objects.get()
    assert row.digest == hashlib.sha256(token.encode()).hexdigest() and token.startswith(row.prefix)
    for url in ("/admin/mirror/pulltoken/", f"/admin/mirror/pulltoken/{row.pk}/change/"):
        shown = admin_client.get(url).content.decode()
        assert row.prefix in shown and token not in shown
    basic = base64.b64encode(f"{admin_user.username}:{token}".encode()).decode()
    request = RequestFactory().get("/v2/", HTTP_AUTHORIZATION=f"Basic {basic}")
    assert access.identify(request).user_id == admin_user.pk
    action = {"action": "revoke", "_selected_action": [row.pk]}
    admin_client.post("/admin/mirror/pulltoken/", action)
    assert PullToken.objects.get().revoked
    with pytest.raises(access.InvalidCredentials):
        access.identify(request)
    upstream_form = admin_client.get("/admin/mirror/upstream/add/").content.decode()
    assert 'class="fieldset-heading">Access</h2>' in upstream_form
    assert 'name="allowed_groups"' in upstream_form and 'class="selectfilter"' in upstream_form


def _go(world: World, name: str, proxy: str) -> subprocess.CompletedProcess[str]:
    env = {**go_env(world.tmp / name, proxy, None), "SSL_CERT_FILE": str(world.cert)}
    folder = world.tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    return run_go(
        ["mod", "download", "-json", SECRET.path + "@" + SECRET.version], folder, env, check=False
    )


def test_go_command_with_and_without_credentials(world: World) -> None:
    host = world.mirror.host
    anonymous = _go(world, "go-anonymous", world.mirror.url)
    assert anonymous.returncode != 0 and "401 Unauthorized" in anonymous.stdout + anonymous.stderr
    in_url = _go(world, "go-userinfo", f"https://alice:{world.tokens['alice']}@{host}")
    assert in_url.returncode == 0, in_url.stderr
    assert '"Zip"' in in_url.stdout
    (world.tmp / "go-netrc" / "home").mkdir(parents=True)
    (world.tmp / "go-netrc" / "home" / ".netrc").write_text(
        f"machine 127.0.0.1 login alice password {world.tokens['alice']}\n"
    )
    assert _go(world, "go-netrc", world.mirror.url).returncode == 0
    outsider = _go(world, "go-bob", f"https://bob:{world.tokens['bob']}@{host}")
    assert outsider.returncode != 0 and "404 Not Found" in outsider.stdout + outsider.stderr


def test_go_answers_to_outsiders_are_those_of_missing_modules(world: World) -> None:
    url = world.mirror.url
    alice, bob = ("alice", world.tokens["alice"]), ("bob", world.tokens["bob"])
    for secret_path, missing_path in [
        ("/corp.example.com/secret/@v/v1.0.0.info", "/corp.example.com/nothing/@v/v1.0.0.info"),
        ("/corp.example.com/secret/@v/list", "/corp.example.com/nothing/@v/list"),
    ]:
        assert httpx.get(url + secret_path, auth=alice).status_code == 200
        missing = httpx.get(url + missing_path, auth=alice)
        assert missing.status_code == 404
        _same_answer(httpx.get(url + secret_path, auth=bob), missing)
    anonymous = httpx.get(url + "/corp.example.com/secret/@v/list")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="entrepot"'
    assert anonymous.headers["Content-Type"].startswith("text/plain")


def test_tokens_are_stored_hashed_and_never_logged(world: World) -> None:
    """Last in the module: it reads what the tests above left in the database and the log."""
    database = world.mirror.data_dir / "entrepot.sqlite3"
    with sqlite3.connect(database) as db:
        digests = {row[0] for row in db.execute("SELECT digest FROM mirror_pulltoken")}
    assert digests == {hashlib.sha256(t.encode()).hexdigest() for t in world.tokens.values()}
    stored = b"".join(p.read_bytes() for p in database.parent.glob("entrepot.sqlite3*"))
    log = world.mirror.log.read_text()
    assert "GET /v2/" in log and "GET /token" in log  # the access log is in it
    secrets = [*world.tokens.values(), *PASSWORDS.values(), *world.issued]
    assert len(world.issued) > 3
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret not in log


def test_rate_limit_answers_429_in_each_protocols_format(world: World) -> None:
    """Last in the module: restarts its mirror with a limit, counted in Redis (as instances of
    one deployment share it)."""
    mirror = world.mirror
    mirror.stop()
    mirror.env.update(MIRROR_RATE_LIMIT="3/60", REDIS_URL=redis_url())
    mirror.start()
    # A window may end between two requests: within ten, the client is over its limit.
    answers = [httpx.get(f"{mirror.url}/v2/_catalog") for _ in range(10)]
    statuses = [a.status_code for a in answers]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses
    limited = answers[statuses.index(429)]
    assert limited.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    go = httpx.get(f"{mirror.url}/example.com/m/@v/list")
    assert go.status_code == 429 and go.headers["Content-Type"].startswith("text/plain")
    assert 1 <= int(go.headers["Retry-After"]) <= 60
    # A user is counted apart from the anonymous clients of her address.
    alice = ("alice", world.tokens["alice"])
    assert httpx.get(f"{mirror.url}/v2/_catalog", auth=alice).status_code == 200
