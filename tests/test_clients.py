"""Real clients through the mirror: podman with a registries.conf mirror (as a Docker Hub
user configures it) and skopeo with the prefix form; private upstreams with Bearer-token and
Basic auth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CORP_PASSWORD, Upstreams
from tests.mirror_server import MirrorServer


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if result.returncode:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def skopeo_copy(mirror: MirrorServer, ref: str, dest: Path) -> None:
    run(
        "skopeo",
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        f"docker://{mirror.host}/{ref}",
        f"oci:{dest}:latest",
    )


@pytest.fixture
def podman(tmp_path: Path, mirror: MirrorServer) -> Iterator[Callable[..., str]]:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run the tests with `make test`", pytrace=False)
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f"""
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "{mirror.host}"
insecure = true
"""
    )
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
    runroot = tempfile.mkdtemp(prefix="pr-")  # podman wants a runroot under 50 characters
    base = [
        "podman",
        "--storage-driver",
        "vfs",
        "--root",
        str(tmp_path / "root"),
        "--runroot",
        runroot,
        "--events-backend",
        "none",
        "--cgroup-manager",
        "cgroupfs",
    ]

    def podman_run(*args: str) -> str:
        return run(*base, *args, env=env)

    yield podman_run
    shutil.rmtree(runroot, ignore_errors=True)


def test_podman_pulls_docker_hub_names_through_mirror(
    podman, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("library/alpine:3.19", layer_sizes=[200_000, 50_000])
    podman("pull", "-q", "docker.io/library/alpine:3.19")
    inspect = json.loads(podman("image", "inspect", "docker.io/library/alpine:3.19"))
    assert inspect[0]["Architecture"] == "amd64"
    layers = layout.layer_digests["linux/amd64"]
    assert all(upstreams.hub.count("GET", f"/blobs/{d}") == 1 for d in layers)


def test_podman_pulls_other_platform_from_index(
    podman, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    upstreams.seed("library/multiarch:1", platforms=[("linux", "amd64"), ("linux", "arm64")])
    podman("pull", "-q", "--arch", "arm64", "docker.io/library/multiarch:1")
    inspect = json.loads(podman("image", "inspect", "docker.io/library/multiarch:1"))
    assert inspect[0]["Architecture"] == "arm64"


def test_warm_pull_makes_no_upstream_blob_requests(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    upstreams.seed("library/warm:1", layer_sizes=[100_000, 100_000])
    skopeo_copy(mirror, "warm:1", tmp_path / "cold")
    upstreams.hub.reset()
    skopeo_copy(mirror, "warm:1", tmp_path / "warm")
    assert upstreams.hub.count("GET", "/blobs/") == 0
    assert upstreams.hub.count("HEAD", "/blobs/") == 0


def test_cached_tag_pulls_with_upstream_stopped(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    upstreams.seed("library/offline:1")
    skopeo_copy(mirror, "offline:1", tmp_path / "first")
    upstreams.hub.stop()
    skopeo_copy(mirror, "offline:1", tmp_path / "second")
    with pytest.raises(AssertionError, match="503 Service Unavailable"):
        skopeo_copy(mirror, "neveroffline:1", tmp_path / "third")


def test_skopeo_through_prefix_with_bearer_token_upstream(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("acme/tool:1", layer_sizes=[100_000])
    upstreams.ghcr.reset()
    skopeo_copy(mirror, "ghcr.io/acme/tool:1", tmp_path / "tool")
    index = json.loads((tmp_path / "tool/index.json").read_text())
    assert index["manifests"][0]["digest"] == layout.digest
    assert upstreams.ghcr.count("GET", "/token") >= 1
    # Tokens are cached per scope (in each server process: the test server runs two), so
    # further pulls of the repository do not fetch one per request.
    upstreams.seed("acme/tool:2")
    for n, tag in enumerate(["2", "1", "2"]):
        skopeo_copy(mirror, f"ghcr.io/acme/tool:{tag}", tmp_path / f"again{n}")
    assert upstreams.ghcr.count("GET", "/token") <= 2
    assert upstreams.ghcr.count("GET", "/v2/acme/tool/") >= 4


def test_skopeo_basic_auth_upstream_and_secret_stays_secret(
    tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("private/app:1", corp=True)
    skopeo_copy(mirror, "harbor.test/private/app:1", tmp_path / "app")
    index = json.loads((tmp_path / "app/index.json").read_text())
    assert index["manifests"][0]["digest"] == layout.digest
    assert CORP_PASSWORD not in mirror.log.read_text()
