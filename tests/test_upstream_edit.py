"""Editing an upstream (as the admin does) while a fill streams from it: the fill goes on.

The edited row gets a new `updated` time, which makes every worker build a new HTTP client for
that upstream on its next request; the old one must stay open for the fills still reading
through it (issue 7, point 7)."""

from __future__ import annotations

import hashlib
import threading

import httpx

from tests.conftest import Upstreams
from tests.mirror_server import MirrorServer


def test_editing_an_upstream_does_not_break_its_fill(
    mirror: MirrorServer, upstreams: Upstreams
) -> None:
    layout = upstreams.seed("library/edited:1", layer_sizes=[2 * 1024 * 1024])
    digest = layout.layer_digests["linux/amd64"][0]
    upstreams.hub.delay_per_chunk = 0.15  # 32 chunks of 64 KiB: about 5 s
    received: list[bytes] = []
    started = threading.Event()

    def pull() -> None:
        with httpx.stream("GET", f"{mirror.url}/v2/edited/blobs/{digest}", timeout=60) as r:
            for chunk in r.iter_raw():
                started.set()
                received.append(chunk)

    puller = threading.Thread(target=pull)
    puller.start()
    assert started.wait(20)
    mirror.manage(
        "shell",
        "-c",
        "from mirror.models import Upstream; u = Upstream.objects.get(name='hub'); "
        "u.tag_ttl += 1; u.save()",
    )
    # Requests to the same upstream in every worker: each builds its new client now.
    for n in range(30):
        unknown = "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()
        httpx.head(f"{mirror.url}/v2/edited/blobs/{unknown}", timeout=30)
    puller.join(60)
    body = b"".join(received)
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" == digest
