"""containerd through the mirror, set up as the README says for a plain-HTTP mirror: a
`hosts.toml` with `[host."http://HOST:PORT"]` in a hosts folder given to `ctr --hosts-dir`.

A real containerd daemon runs with its own root, state and socket (no CRI plugin, the native
snapshotter); with no network, the pull only succeeds if the mirror answers, and containerd's
`?ns=docker.io` on every request is what routes it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.fail("containerd is missing: run the tests with `make test`", pytrace=False)
    root = tmp_path_factory.mktemp("containerd")
    # A unix socket path must stay short (108 bytes): the state folder lives under /tmp.
    state = Path(tempfile.mkdtemp(prefix="ctrd-"))
    socket = state / "sock"
    config = root / "config.toml"
    config.write_text(
        f"""version = 2
root = "{root / "root"}"
state = "{state / "state"}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
"""
    )
    log = open(root / "containerd.log", "wb")  # noqa: SIM115 - owned by the child
    daemon = subprocess.Popen(
        ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while not socket.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            raise AssertionError((root / "containerd.log").read_text()[-3000:])
        time.sleep(0.1)
    yield str(socket)
    daemon.terminate()
    daemon.wait(30)
    log.close()
    shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize(
    "server",
    # The README's two forms: a fallback `server` (Docker Hub there; a closed local port
    # here, so that nothing leaves this machine even when the mirror fails), and the mirror
    # alone.
    ["https://127.0.0.1:9", "http://{mirror}"],
)
def test_ctr_pulls_through_a_plain_http_mirror(
    containerd: str, tmp_path: Path, mirror: MirrorServer, upstreams: Upstreams, server: str
) -> None:
    name = f"library/ctrpull{len(server)}:1"
    layout = upstreams.seed(name, layer_sizes=[150_000, 40_000])
    hosts = tmp_path / "certs.d" / "docker.io"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f"""server = "{server.format(mirror=mirror.host)}"

[host."http://{mirror.host}"]
  capabilities = ["pull", "resolve"]
"""
    )
    result = subprocess.run(
        [
            "ctr",
            "--address",
            containerd,
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--hosts-dir",
            str(tmp_path / "certs.d"),
            f"docker.io/{name}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for digest in layout.layer_digests["linux/amd64"]:
        assert upstreams.hub.count("GET", f"/blobs/{digest}") == 1
    listed = subprocess.run(
        ["ctr", "--address", containerd, "images", "ls", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"docker.io/{name}" in listed
