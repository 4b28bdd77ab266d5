"""What a web worker imports before it serves the REST API or pings Redis: the protocol views
and the admin, not Django REST framework, the OpenAPI generator, cryptography (Go checksum
database signatures) or the Redis client. Those are ~35 MiB of a worker's memory (bench step 5:
the peak of a worker during a cold 1 GiB blob went from 120-146 MiB to 85-87 MiB).

In a child process: this one has imported everything the other tests use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAZY = ("rest_framework.views", "drf_spectacular.views", "cryptography", "redis")

# As a gunicorn worker after post_worker_init (config/gunicorn.py), then a few requests' URLs.
PROBE = """
import json, sys
import config.wsgi
from django.urls import get_resolver, resolve
get_resolver().url_patterns
for path in sys.argv[2:]:
    resolve(path)
print(json.dumps([m for m in sys.argv[1].split(",") if m in sys.modules]))
"""


def _loaded(*paths: str) -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(LAZY), *paths],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_protocol_requests_load_neither_the_api_nor_optional_clients() -> None:
    paths = ("/v2/", "/v2/library/alpine/manifests/latest", "/example.com/m/@v/list", "/healthz")
    assert _loaded(*paths) == []


def test_the_first_api_request_loads_the_api() -> None:
    assert {"rest_framework.views", "drf_spectacular.views"} <= set(_loaded("/api/v1/"))
