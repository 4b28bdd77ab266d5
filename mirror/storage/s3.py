"""S3 storage through django-storages/boto3.

A fill streams into a multipart upload for the final key; the object stays invisible until
`CompleteMultipartUpload`, which is sent only on commit (`AbortMultipartUpload` otherwise).
Memory per writer is bounded by one part.

S3 unreachable, timing out or answering an error (other than "no such key") is
StorageUnavailable, which every protocol answers 503: on any call, and on reading a body
already opened. Each call is bounded (AWS_S3_CONNECT_TIMEOUT, AWS_S3_READ_TIMEOUT,
AWS_S3_MAX_ATTEMPTS; botocore's defaults, 60 s reads and up to 5 attempts, held a request
for minutes), and the client's pooled connections are retried by botocore after an outage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import uuid
from collections.abc import Container, Iterator
from typing import Any, BinaryIO

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from storages.backends.s3 import S3Storage as DjangoS3Storage

from ..errors import StorageFull, StorageUnavailable, log_outage
from ..memo import Memo
from .base import ObjectNotFound, Storage, Writer, check_key

PART_SIZE = 8 * 1024 * 1024  # S3 needs >= 5 MiB for every part but the last
STAT_MEMO_KEYS = 10_000  # object sizes a process keeps (S3Storage.stat)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _threads() -> int:
    """Request threads per process (config/gunicorn.py reads the same variable)."""
    return int(os.environ.get("GUNICORN_THREADS") or 64)


@contextlib.contextmanager
def _unavailable(what: str, key: str) -> Iterator[None]:
    """S3's failures inside the block as StorageUnavailable (logged as one line)."""
    try:
        yield
    except (BotoCoreError, ClientError) as e:
        if isinstance(e, ClientError):
            error = e.response.get("Error", {})
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            reason = f"{error.get('Code', '?')} (HTTP {status})"
        else:
            reason = type(e).__name__
        log_outage("storage", f"S3 {what} of {key} failed: {reason}")
        raise StorageUnavailable(f"the mirror's storage is unavailable ({what}: {reason})") from e


class _Body:
    """An object's body being read from S3 (`read`, `close`, `with`); a failure mid-read is
    StorageUnavailable."""

    def __init__(self, body: Any, key: str) -> None:
        self._body, self._key = body, key

    def read(self, size: int = -1) -> bytes:
        with _unavailable("read", self._key):
            return self._body.read(None if size < 0 else size)

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3Writer(Writer):
    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) >= PART_SIZE:
            self._flush_part()

    def _flush_part(self) -> None:
        with _unavailable("upload", self._key):
            self._upload_part()

    def _upload_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key
            )["UploadId"]
        number = len(self._parts) + 1
        answer = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=self._buffer,  # not a copy: the part is cleared only once it is sent
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self._buffer.clear()

    def commit(self) -> None:
        if self._upload_id is None:
            # Small object: one PUT is as atomic as a completed upload, and cheaper.
            with _unavailable("upload", self._key):
                self._client.put_object(
                    Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer)
                )
        else:
            if self._buffer:
                self._flush_part()
            with _unavailable("commit", self._key):
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        self._done = True

    def abort(self) -> None:
        """An abort that fails (S3 away) leaves an incomplete upload, invisible, which
        `S3Storage.sweep` aborts later."""
        try:
            if self._upload_id is not None and not self._done:
                with _unavailable("abort", self._key):
                    self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                    )
        finally:
            self._done = True
            self._buffer.clear()


class S3Storage(Storage):
    """Objects under `prefix` in an S3 bucket; settings as django-storages reads them."""

    def __init__(self, prefix: str = "", **options: Any) -> None:
        self._storage = DjangoS3Storage(**options)
        # Bounded calls, added to what django-storages configured (addressing style, etc.).
        self._storage.client_config = self._storage.client_config.merge(
            Config(
                connect_timeout=settings.AWS_S3_CONNECT_TIMEOUT,
                read_timeout=settings.AWS_S3_READ_TIMEOUT,
                retries={"mode": "standard", "max_attempts": settings.AWS_S3_MAX_ATTEMPTS},
                # Every request thread and fill thread may hold one at once.
                max_pool_connections=_threads() + settings.MIRROR_MAX_FILLS,
            )
        )
        self._prefix = prefix.strip("/")
        self._shared_client: Any = None
        self._client_lock = threading.Lock()
        self._sizes = Memo(STAT_MEMO_KEYS)  # key -> size, recently seen in S3

    @property
    def _client(self) -> Any:
        """One boto3 client for every thread (clients are thread-safe). django-storages'
        `connection` makes a session and a resource per thread, 13-16 MiB each: with 64
        request threads, most of a worker's memory (measured with bench/multi.py)."""
        if (client := self._shared_client) is None:
            with self._client_lock:
                if self._shared_client is None:
                    self._shared_client = self._storage.connection.meta.client
                client = self._shared_client
        return client

    @property
    def _bucket(self) -> str:
        return self._storage.bucket_name

    @property
    def _root(self) -> str:
        """The folder of this storage in the bucket, with its trailing slash."""
        return f"{self._prefix}/" if self._prefix else ""

    def _key(self, key: str) -> str:
        return f"{self._root}objects/{check_key(key)}"

    def stat(self, key: str) -> int | None:
        """The object's size, or None. A size S3 gave is kept for
        MIRROR_UPSTREAM_CACHE_SECONDS: a warm GET then costs S3 one request (the GET), not
        a HEAD before it. An object does not change under its key, it can only go: one
        deleted here is forgotten at once; one deleted by another process fails the GET
        (ObjectNotFound, then forgotten here) until the size expires."""
        if (size := self._sizes.get(key)) is not None:
            return size
        with _unavailable("stat", key):
            try:
                head = self._client.head_object(Bucket=self._bucket, Key=self._key(key))
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                    return None
                raise
        size = int(head["ContentLength"])
        self._sizes.put(key, size, settings.MIRROR_UPSTREAM_CACHE_SECONDS)
        return size

    def open(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._key(key)}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        with _unavailable("read", key):
            try:
                body = self._client.get_object(**kwargs)["Body"]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                    self._sizes.forget(key)
                    raise ObjectNotFound(key) from e
                raise
        return _Body(body, key)  # type: ignore[return-value]  # read() and close() only

    def writer(self, key: str) -> S3Writer:
        return S3Writer(self._client, self._bucket, self._key(key))

    def delete(self, key: str) -> None:
        self._sizes.forget(key)
        with _unavailable("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=self._key(key))

    def presigned_url(self, key: str) -> str | None:
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self._bucket, "Key": self._key(key)}, ExpiresIn=300
        )

    def check_writable(self, min_free: int) -> None:
        """S3 has no free-space figure: `min_free` does not apply."""
        probe = f"{self._root}tmp/probe-{uuid.uuid4().hex}"
        try:
            self._client.put_object(Bucket=self._bucket, Key=probe, Body=b"probe")
            self._client.delete_object(Bucket=self._bucket, Key=probe)
        except (BotoCoreError, ClientError) as e:
            raise StorageFull(f"storage not writable: {e}") from e

    def sweep(self, older_than: float, live: Container[str] = frozenset()) -> int:
        """Abort multipart uploads older than `older_than` under this storage's own objects
        folder (`Initiated` is the upload's start: a long fill's upload is old but alive,
        which is what `live` tells)."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than)
        folder = f"{self._root}objects/"
        removed = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=folder):
            for upload in page.get("Uploads", []):
                if upload["Key"].removeprefix(folder) in live:
                    continue
                if upload["Initiated"] < cutoff:
                    self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        return removed
