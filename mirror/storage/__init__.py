"""Content storage: one interface (`base.Storage`), a local-folder and an S3 backend."""

import threading

from django.conf import settings

from .base import ObjectNotFound, Storage, Writer, check_key

__all__ = ["ObjectNotFound", "Storage", "Writer", "check_key", "forget", "get_storage"]

_storage: Storage | None = None
_lock = threading.Lock()


def get_storage() -> Storage:
    """The configured backend, one per process: S3 when a bucket is set, else the local
    folder.

    Made under a lock (functools.cache lets threads that call together each make one): a
    worker's request threads asking for it at once each made an S3 backend with its own
    boto3 session and client, 15-20 MiB apiece, and the worker kept the memory (bench step
    9: fresh workers went from ~100 to 190-234 MiB in their first second of blob requests).
    """
    global _storage
    if (storage := _storage) is None:
        with _lock:
            if _storage is None:
                _storage = _make()
            storage = _storage
    return storage


def forget() -> None:
    """The next `get_storage()` makes the backend anew, from the settings as they are then
    (for tests that change them)."""
    global _storage
    with _lock:
        _storage = None


def _make() -> Storage:
    if settings.AWS_STORAGE_BUCKET_NAME:
        from .s3 import S3Storage

        return S3Storage(prefix=settings.MIRROR_S3_PREFIX)
    from .local import LocalStorage

    return LocalStorage(settings.MIRROR_STORAGE_DIR)
