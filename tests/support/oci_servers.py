"""Small misbehaving OCI upstreams: a registry-shaped HTTP server that answers from a table the
test fills (any status, headers and body: HTML, non-JSON, wrong shapes, lying HEADs, a
referrers API), counts requests, and a mirror configured with it as an upstream.

Fixtures using them: tests/support/oci_fixtures.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Small answers (tags lists, referrers lists) are capped at this in `oci_mirror`.
METADATA_CAP = 64 * 1024
NOT_FOUND = b'{"errors":[{"code":"NOT_FOUND","message":"not here"}]}'


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_manifest(seed: str, **extra: Any) -> bytes:
    """A small valid OCI image manifest (its blobs need not exist)."""
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2}
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 3}
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {**config, "digest": digest(f"config {seed}".encode())},
        "layers": [{**layer, "digest": digest(f"layer {seed}".encode())}],
        **extra,
    }
    return json.dumps(document).encode()


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    head: Reply | None = None  # a different answer to HEAD (its body is never sent)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def _answer(self) -> None:
        stub = self.server.stub
        path = self.path.split("?", 1)[0]
        with stub.lock:
            stub.requests.append((self.command, self.path))
            reply = stub.replies.get(self.path) or stub.replies.get(path)
            if stub.status is not None:
                reply = Reply(stub.status, NOT_FOUND, dict(stub.fault_headers))
        if reply is None:
            reply = Reply(200, b"{}") if path in ("/v2", "/v2/") else Reply(404, NOT_FOUND)
        if self.command == "HEAD" and reply.head is not None:
            reply = reply.head
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(reply.body))}
        for key, value in {**headers, **reply.headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, stub: StubRegistry) -> None:
        self.stub = stub
        super().__init__(("127.0.0.1", 0), _Handler)


class StubRegistry:
    """Answers `replies[path]` (the path with its query first, then without), 404 otherwise;
    `status` answers every request with that status (plus `fault_headers`) while set."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {}
        self.requests: list[tuple[str, str]] = []
        self.status: int | None = None
        self.fault_headers: dict[str, str] = {}
        self.lock = threading.Lock()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StubRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def manifest(
        self, repo: str, tag: str, body: bytes, content_type: str = OCI_MANIFEST, **headers: str
    ) -> str:
        """Serve `body` as the manifest of `repo:tag` and by its digest; return the digest."""
        reply = Reply(
            body=body,
            headers={"Content-Type": content_type, "Docker-Content-Digest": digest(body)} | headers,
        )
        self.replies[f"/v2/{repo}/manifests/{tag}"] = reply
        self.replies[f"/v2/{repo}/manifests/{digest(body)}"] = reply
        return digest(body)

    def count(self, method: str, contains: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and contains in p)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
