"""Schemathesis against the live API: every operation registered on /api/v1/ (the core's and
the protocol apps'), fed generated input, valid and invalid, answers no 5xx and nothing its
OpenAPI schema (/api/schema/) does not describe: status codes, bodies, content types, headers.

Once with an admin token (every operation runs: the coverage phase's edge cases, valid and
invalid, then random ones), once with a read token (the operations that need more answer
their documented 403). Bounded: a fixed seed, a few examples per operation.
The upstreams are on ports where nothing listens and no worker runs, so jobs the fuzzer
starts stay queued and nothing is fetched; the broker is `make run`'s embedded one.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.mirror_server import MirrorServer
from tests.support.net import free_port

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
SEED = "20261201"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MirrorServer, dict]]:
    data = tmp_path_factory.mktemp("api-schema")
    config = data / "mirror.yml"
    config.write_text(
        f"""
upstreams:
  - name: hub
    kind: oci
    url: http://127.0.0.1:{free_port()}
    prefix: docker.io
    default: true
  - name: golang
    kind: go
    url: http://127.0.0.1:{free_port()}
always_warm:
  - image: docker.io/library/alpine:3.19
"""
    )
    server = MirrorServer(data / "var", config, MIRROR_GO_VERIFY="off")
    server.setup()
    with ThreadPoolExecutor(2) as pool:
        made = {
            scope: pool.submit(server.manage, "mirror_token", "create", scope, "--scope", scope)
            for scope in ("admin", "read")
        }
        tokens = {scope: out.result().strip().splitlines()[-1] for scope, out in made.items()}
    server.start()
    yield server, tokens
    server.stop()


def run_schemathesis(server: MirrorServer, token: str, phases: str, examples: int) -> None:
    args = [
        str(SCHEMATHESIS),
        "run",
        f"{server.url}/api/schema/",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {token}",
        "--phases",
        phases,
        "--max-examples",
        str(examples),
        "--seed",
        SEED,
        # One worker: Hypothesis describing its strategies from two threads at once trips
        # over CPython 3.11's parser ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    # In a folder of its own: schemathesis keeps the failures it found in ./.schemathesis and
    # replays them on its next run there; each run must stand alone.
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=240, check=False, cwd=folder
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found problems:\n{output[-20000:]}"
    assert "No issues found" in output or "passed" in output, output[-5000:]


def test_the_api_conforms_to_its_schema_with_an_admin_token(server) -> None:
    mirror, tokens = server
    run_schemathesis(mirror, tokens["admin"], "examples,coverage,fuzzing", examples=20)


def test_operations_outside_a_read_tokens_scope_answer_their_documented_403(server) -> None:
    mirror, tokens = server
    run_schemathesis(mirror, tokens["read"], "fuzzing", examples=3)
