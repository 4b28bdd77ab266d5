"""One storage suite, run against every backend: the local folder and S3 (a real S3 API
server, moto, on loopback)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from mirror.errors import StorageFull
from mirror.storage.base import ObjectNotFound, Storage, check_key
from mirror.storage.local import LocalStorage
from mirror.storage.s3 import PART_SIZE, S3Storage
from tests.support.net import free_port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _s3(endpoint: str, bucket: str, prefix: str = "suite") -> S3Storage:
    options = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "access_key": "test",
        "secret_key": "test",
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    return S3Storage(prefix=prefix, bucket_name=bucket, **options)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    return _s3(endpoint, f"suite-{os.urandom(4).hex()}")


KEY = "blobs/sha256/ab/" + "ab" * 32


def _write(storage: Storage, key: str, chunks: list[bytes]) -> None:
    writer = storage.writer(key)
    for chunk in chunks:
        writer.write(chunk)
    writer.commit()


def _read(storage: Storage, key: str, start: int = 0, length: int | None = None) -> bytes:
    stream = storage.open(key, start, length)
    try:
        data = stream.read() if length is None else stream.read(length)
    finally:
        stream.close()
    return data


def test_missing_object(storage: Storage) -> None:
    assert storage.stat(KEY) is None
    with pytest.raises(ObjectNotFound):
        storage.open(KEY)
    storage.delete(KEY)  # not an error


def test_commit_publishes_whole_object(storage: Storage) -> None:
    _write(storage, KEY, [b"hello ", b"world"])
    assert storage.stat(KEY) == 11
    assert _read(storage, KEY) == b"hello world"


def test_uncommitted_object_is_invisible(storage: Storage) -> None:
    writer = storage.writer(KEY)
    writer.write(b"partial")
    assert storage.stat(KEY) is None
    writer.abort()
    writer.abort()  # twice is fine
    assert storage.stat(KEY) is None


def test_multipart_sized_object_round_trips(storage: Storage) -> None:
    """Bigger than one S3 part: exercises the multipart path and ranged reads across parts."""
    data = os.urandom(PART_SIZE + PART_SIZE // 2 + 17)
    _write(storage, KEY, [data[i : i + 1_000_000] for i in range(0, len(data), 1_000_000)])
    assert storage.stat(KEY) == len(data)
    assert hashlib.sha256(_read(storage, KEY)).digest() == hashlib.sha256(data).digest()
    start = PART_SIZE - 5
    assert _read(storage, KEY, start, 10) == data[start : start + 10]


def test_aborted_large_write_leaves_nothing(storage: Storage) -> None:
    writer = storage.writer(KEY)
    writer.write(os.urandom(PART_SIZE + 1))  # an S3 part was uploaded
    writer.abort()
    assert storage.stat(KEY) is None
    assert storage.sweep(older_than=0) == 0  # nothing abandoned either


def test_open_at_offset(storage: Storage) -> None:
    _write(storage, KEY, [bytes(range(256))])
    assert _read(storage, KEY, 200, 10) == bytes(range(200, 210))


def test_delete(storage: Storage) -> None:
    _write(storage, KEY, [b"x"])
    storage.delete(KEY)
    assert storage.stat(KEY) is None


def test_sweep_removes_abandoned_writes(storage: Storage) -> None:
    writer = storage.writer(KEY)
    writer.write(os.urandom(PART_SIZE + 1))  # then the process "dies": no commit, no abort
    if isinstance(storage, LocalStorage):
        # (moto reports every multipart upload as initiated in 2010, so on S3 only the
        # "abandoned" half of this contract can be shown against it.)
        assert storage.sweep(older_than=3600) == 0  # too young to be abandoned
    assert storage.sweep(older_than=-1) == 1
    assert storage.stat(KEY) is None


def test_overwrite_same_key_is_atomic(storage: Storage) -> None:
    """Content-addressed keys can be filled twice (two instances); the last commit wins whole."""
    _write(storage, KEY, [b"a" * 10])
    _write(storage, KEY, [b"a" * 10])
    assert _read(storage, KEY) == b"a" * 10


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "/abs", "a/../../b", "a//b", "", "a\x00b", "x" * 600]
)
def test_keys_cannot_escape(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        storage.stat(key)


def test_sweep_spares_live_fills(storage: Storage) -> None:
    """A fill with a live lease may be older than the sweep's age (a long fill, or moto's
    fixed 2010 start times): its upload is kept."""
    live = storage.writer(KEY)
    live.write(os.urandom(PART_SIZE + 1))
    assert (
        storage.sweep(older_than=3600 if isinstance(storage, LocalStorage) else -1, live={KEY}) == 0
    )
    live.write(b"more")
    live.commit()
    assert storage.stat(KEY) == PART_SIZE + 5


def test_s3_sweep_stays_in_its_own_folder(s3_endpoint: str) -> None:
    """`entrepot` must not sweep `entrepot-staging/`, a prefix that merely starts alike."""
    bucket = f"sweep-{os.urandom(4).hex()}"
    mine = _s3(s3_endpoint, bucket, "entrepot")
    staging = _s3(s3_endpoint, bucket, "entrepot-staging")
    other = staging.writer(KEY)
    other.write(os.urandom(PART_SIZE + 1))
    abandoned = mine.writer(KEY)
    abandoned.write(os.urandom(PART_SIZE + 1))
    assert mine.sweep(older_than=-1) == 1
    other.write(b"x")
    other.commit()  # its upload survived
    assert staging.stat(KEY) == PART_SIZE + 2 and mine.stat(KEY) is None


def test_check_writable(storage: Storage) -> None:
    storage.check_writable(0)
    if isinstance(storage, LocalStorage):
        with pytest.raises(StorageFull, match="floor"):
            storage.check_writable(1 << 62)
        assert list(storage.tmp.iterdir()) == []  # the probe is gone


def test_check_writable_refuses_unwritable_storage(tmp_path: Path, s3_endpoint: str) -> None:
    local = LocalStorage(tmp_path / "store")
    local.tmp.rmdir()
    local.tmp.write_bytes(b"")  # (root ignores permissions: no folder at all, then)
    with pytest.raises(StorageFull, match="not writable"):
        local.check_writable(0)
    missing = S3Storage(
        prefix="x",
        bucket_name="no-such-bucket",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        access_key="test",
        secret_key="test",
    )
    with pytest.raises(StorageFull, match="not writable"):
        missing.check_writable(0)


def test_threads_asking_at_once_share_one_backend(settings, tmp_path, monkeypatch) -> None:
    """Request threads of a fresh worker ask for the storage together: one backend (one S3
    client) for all of them. Making one is slowed down here so that they surely overlap
    (with functools.cache each thread made its own, 15-20 MiB apiece with S3)."""
    import threading
    import time

    from mirror import storage

    settings.AWS_STORAGE_BUCKET_NAME = ""
    settings.MIRROR_STORAGE_DIR = tmp_path
    real = storage._make
    made: list[Storage] = []

    def slow_make() -> Storage:
        time.sleep(0.05)
        made.append(real())
        return made[-1]

    monkeypatch.setattr(storage, "_make", slow_make)
    storage.forget()
    start = threading.Barrier(16)
    got: list[Storage] = []

    def ask() -> None:
        start.wait()
        got.append(storage.get_storage())

    threads = [threading.Thread(target=ask) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        storage.forget()
    assert len(made) == 1 and len(got) == 16 and all(s is made[0] for s in got)


def _heads(storage: S3Storage) -> list[object]:
    """The HeadObject calls `storage`'s client makes from now on (botocore's event hooks)."""
    calls: list[object] = []
    storage._client.meta.events.register(
        "before-call.s3.HeadObject", lambda **kwargs: calls.append(kwargs)
    )
    return calls


def test_s3_sizes_are_kept_briefly_and_forgotten_when_the_object_goes(
    s3_endpoint: str, settings
) -> None:
    """A warm hit costs S3 its GET alone (no HEAD) within MIRROR_UPSTREAM_CACHE_SECONDS; an
    object deleted here is gone at once, one deleted by another process once a GET misses."""
    settings.MIRROR_UPSTREAM_CACHE_SECONDS = 60
    bucket = f"memo-{os.urandom(4).hex()}"
    here, elsewhere = _s3(s3_endpoint, bucket), _s3(s3_endpoint, bucket)
    heads = _heads(here)
    _write(here, KEY, [b"x" * 10])
    assert [here.stat(KEY) for _ in range(3)] == [10, 10, 10] and len(heads) == 1
    elsewhere.delete(KEY)
    assert here.stat(KEY) == 10  # not asked again yet
    with pytest.raises(ObjectNotFound):
        here.open(KEY)
    assert here.stat(KEY) is None and len(heads) == 2
    _write(here, KEY, [b"y" * 4])
    assert here.stat(KEY) == 4
    here.delete(KEY)
    assert here.stat(KEY) is None and len(heads) == 4


def test_s3_sizes_are_not_kept_without_a_cache_time(s3_endpoint: str, settings) -> None:
    settings.MIRROR_UPSTREAM_CACHE_SECONDS = 0
    storage = _s3(s3_endpoint, f"memo-{os.urandom(4).hex()}")
    heads = _heads(storage)
    _write(storage, KEY, [b"x"])
    assert [storage.stat(KEY) for _ in range(2)] == [1, 1] and len(heads) == 2
