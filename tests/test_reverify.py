"""Re-verification (mirror/reverify.py): cached blobs changed at rest are found, kept aside
and taken out of the cache, so that the next pull fetches them anew.

End to end: a real mirror (gunicorn) fills blobs from a real registry behind a counting
proxy; a blob is corrupted on disk; the re-verification runs in the mirror's environment
(`manage.py shell`, as the `mirror.reverify` task does in a worker). In-process: the
sampling budget, the order, leases, vanished objects and other ecosystems' findings, on the
local folder and on S3 (a real S3 API server, moto, on loopback).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from moto.server import ThreadedMotoServer

from mirror import ecosystems, leases, reverify, tasks
from mirror.digests import digest_of, storage_key
from mirror.ecosystems import Finding
from mirror.models import QuarantinedObject, StoredObject
from mirror.storage import Storage, check_key, get_storage
from mirror.storage import forget as forget_storage
from tests.conftest import Upstreams
from tests.mirror_server import ROOT, MirrorServer
from tests.support.net import free_port
from tests.support.s3 import bucket_env

# Run in the mirror's environment: the run's quarantined rows, then every blob's verified_at.
RUN = """
import json
from mirror import reverify
from mirror.models import QuarantinedObject, StoredObject
rows = reverify.run(1 << 40)
print(json.dumps({
    "run": [r.key for r in rows],
    "quarantined": {
        q.key: [q.reason, q.quarantine_key, q.size] for q in QuarantinedObject.objects.all()
    },
    "verified": {
        o.key: o.verified_at is not None
        for o in StoredObject.objects.filter(key__startswith="blobs/")
    },
}))
"""


def _reverify(server: MirrorServer) -> tuple[dict, str]:
    """(what the run reports, its log: JSON lines, LOG_FORMAT's default)."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", RUN],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_a_blob_corrupted_on_disk_is_quarantined_and_fetched_anew(
    upstreams: Upstreams, mirror: MirrorServer
) -> None:
    layout = upstreams.seed("library/rotting:1", layer_sizes=[300_000, 200_000])
    bad, good = layout.layer_digests["linux/amd64"]
    for digest in (bad, good):
        got = httpx.get(f"{mirror.url}/v2/rotting/blobs/{digest}", timeout=30)
        assert got.status_code == 200 and got.content == layout.blob_bytes(digest)
        mirror.wait_committed(f"/v2/rotting/blobs/{digest}")
    objects = mirror.data_dir / "storage" / "objects"
    bad_key, good_key = storage_key(bad), storage_key(good)
    stored = (objects / bad_key).read_bytes()
    rotten = bytes([stored[1000] ^ 0x01])
    (objects / bad_key).write_bytes(stored[:1000] + rotten + stored[1001:])  # same size

    report, log = _reverify(mirror)

    mine = (bad_key, good_key)  # the session's mirror holds other tests' blobs too
    assert [key for key in report["run"] if key in mine] == [bad_key]
    reason, kept, size = report["quarantined"][bad_key]
    assert reason.startswith("digest: stored bytes hash to sha256:") and size == len(stored)
    assert (objects / kept).read_bytes()[1000:1001] == rotten  # the bad bytes, kept aside
    assert not (objects / bad_key).exists()
    assert bad_key not in report["verified"]  # out of the index too
    assert report["verified"][good_key] is True and (objects / good_key).exists()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(
        (r["level"], r["logger"]) == ("ERROR", "mirror.reverify")
        and r["message"].startswith(f"quarantined {bad_key}: digest")
        for r in records
    ), records

    upstreams.hub.reset()
    again = httpx.get(f"{mirror.url}/v2/rotting/blobs/{bad}", timeout=30)
    assert again.headers["X-Cache"] == "MISS" and again.content == layout.blob_bytes(bad)
    intact = httpx.get(f"{mirror.url}/v2/rotting/blobs/{good}", timeout=30)
    assert intact.headers["X-Cache"] == "HIT" and intact.content == layout.blob_bytes(good)
    assert upstreams.hub.count("GET", f"/blobs/{bad}") == 1
    assert upstreams.hub.count("GET", f"/blobs/{good}") == 0

    mirror.wait_committed(f"/v2/rotting/blobs/{bad}")
    report, _ = _reverify(mirror)  # the blob fetched anew is intact
    assert [key for key in report["run"] if key in mine] == []
    assert report["verified"][bad_key] is True and bad_key in report["quarantined"]


# --- In-process: the core's sample, leases and findings, on both storage backends.

BUCKET = "entrepot-reverify"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket_env(endpoint, BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, settings, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield request.getfixturevalue("local")
        return
    settings.AWS_STORAGE_BUCKET_NAME = BUCKET
    settings.AWS_S3_ENDPOINT_URL = request.getfixturevalue("s3_endpoint")
    settings.AWS_S3_REGION_NAME = "us-east-1"
    settings.AWS_ACCESS_KEY_ID = "test"
    settings.AWS_SECRET_ACCESS_KEY = "test-secret"
    settings.MIRROR_S3_PREFIX = tmp_path.name  # a folder of its own per test
    forget_storage()
    yield get_storage()
    forget_storage()


@pytest.fixture
def local(settings, tmp_path: Path) -> Iterator[Storage]:
    settings.AWS_STORAGE_BUCKET_NAME = ""
    settings.MIRROR_STORAGE_DIR = tmp_path / "storage"
    forget_storage()
    yield get_storage()
    forget_storage()


@pytest.fixture
def findings(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Finding]]:
    """Only a test-only ecosystem is registered; its findings are what the test puts here."""
    found: dict[str, list[Finding]] = {"module": []}

    class Reporting:
        kind = "module"

        def reverify(self, budget_bytes: int) -> list[Finding]:
            return found["module"]

    monkeypatch.setattr(ecosystems, "_registry", {"module": Reporting()})
    return found


def _put(storage: Storage, key: str, data: bytes) -> None:
    writer = storage.writer(key)
    writer.write(data)
    writer.commit()


def _blob(storage: Storage, data: bytes, verified: dt.datetime | None = None) -> str:
    """A blob as a fill leaves it: stored under its digest, and indexed."""
    key = storage_key(digest_of(data))
    _put(storage, key, data)
    StoredObject.objects.create(key=key, size=len(data), verified_at=verified)
    return key


def _verified(key: str) -> dt.datetime | None:
    return StoredObject.objects.get(key=key).verified_at


@pytest.mark.django_db(transaction=True)
def test_corrupt_blob_leaves_the_cache_intact_one_stays(
    storage: Storage, findings: dict[str, list[Finding]], caplog: pytest.LogCaptureFixture
) -> None:
    good = _blob(storage, b"good bytes" * 1000)
    bad = _blob(storage, b"fine at first" * 1000)
    _put(storage, bad, b"fine at FIRST" * 1000)  # changed at rest, same size
    with caplog.at_level(logging.ERROR, logger="mirror.reverify"):
        rows = reverify.run()
    assert [(r.key, r.size) for r in rows] == [(bad, 13000)]
    assert rows[0].reason.startswith("digest:")
    assert storage.stat(bad) is None and not StoredObject.objects.filter(key=bad).exists()
    with storage.open(rows[0].quarantine_key) as kept:
        assert kept.read() == b"fine at FIRST" * 1000
    assert _verified(good) is not None and storage.stat(good) == 10000
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(":")[0] for r in errors] == [f"quarantined {bad}"]


@pytest.mark.django_db(transaction=True)
def test_a_truncated_blob_fails_on_its_size(
    storage: Storage, findings: dict[str, list[Finding]]
) -> None:
    key = _blob(storage, b"x" * 5000)
    _put(storage, key, b"x" * 4000)
    (row,) = reverify.run()
    assert row.reason == "size: 4000 bytes stored, 5000 expected"


@pytest.mark.django_db(transaction=True)
def test_other_ecosystems_findings_are_quarantined(
    storage: Storage, findings: dict[str, list[Finding]]
) -> None:
    key = "go/example.com/m/@v/v1.0.0.zip"
    _put(storage, key, b"zip changed behind our back")
    findings["module"] = [Finding(key, "zip hash h1:abc does not match the checksum database")]
    (row,) = reverify.run()
    assert (row.key, row.reason) == (key, findings["module"][0].reason)
    assert storage.stat(key) is None
    assert QuarantinedObject.objects.get().quarantine_key == row.quarantine_key


@pytest.mark.django_db(transaction=True)
def test_the_budget_takes_the_least_recently_verified_first(
    local: Storage, settings, findings: dict[str, list[Finding]]
) -> None:
    long_ago = timezone.now() - dt.timedelta(days=30)
    old = _blob(local, b"a" * 100, verified=long_ago)
    never1 = _blob(local, b"b" * 100)
    never2 = _blob(local, b"c" * 100)
    reverify.run(250)  # two of 100 bytes fit, a third would not
    assert _verified(never1) and _verified(never2) and _verified(old) == long_ago
    reverify.run(1)  # smaller than any blob: still one per run, so every blob gets its turn
    assert _verified(old) != long_ago
    settings.MIRROR_REVERIFY_BYTES = 0  # off
    before = {o.key: o.verified_at for o in StoredObject.objects.all()}
    assert reverify.run() == []
    assert before == {o.key: o.verified_at for o in StoredObject.objects.all()}


@pytest.mark.django_db(transaction=True)
def test_a_key_being_filled_is_left_for_the_next_run(
    local: Storage, findings: dict[str, list[Finding]]
) -> None:
    key = _blob(local, b"z" * 100)
    _put(local, key, b"Z" * 100)
    lease = leases.claim(key)  # a fill (of another process) holds the key
    assert lease is not None
    assert reverify.run() == []
    assert local.stat(key) == 100 and not QuarantinedObject.objects.exists()
    assert leases.current(key) == lease  # its lease untouched
    leases.release(lease)
    assert [r.key for r in reverify.run()] == [key]


@pytest.mark.django_db(transaction=True)
def test_an_indexed_blob_gone_from_storage_is_dropped_from_the_index(
    local: Storage, findings: dict[str, list[Finding]]
) -> None:
    key = _blob(local, b"q" * 10)
    local.delete(key)
    assert reverify.run() == []
    assert not StoredObject.objects.exists() and not QuarantinedObject.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_task_runs_a_reverification(local: Storage, findings: dict[str, list[Finding]]) -> None:
    key = _blob(local, b"t" * 100)
    _put(local, key, b"T" * 100)
    assert tasks.reverify_cache() == 1  # the body of the `mirror.reverify` task
    assert QuarantinedObject.objects.get().key == key


def test_quarantine_keys_are_valid_storage_keys() -> None:
    when = dt.datetime(2026, 12, 1, 5, 6, 7, 890, tzinfo=dt.UTC)
    blob = storage_key(digest_of(b"x"))
    assert reverify.quarantine_key(blob, when) == f"quarantine/20261201T050607.000890Z/{blob}"
    long_key = "go/" + "a" * 500 + ".zip"
    kept = reverify.quarantine_key(long_key, when)
    assert check_key(kept) and len(kept) < 200
