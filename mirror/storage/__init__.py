"""Content storage: one interface (`base.Storage`), a local-folder and an S3 backend."""

from functools import cache

from django.conf import settings

from .base import ObjectNotFound, Storage, Writer, check_key

__all__ = ["ObjectNotFound", "Storage", "Writer", "check_key", "get_storage"]


@cache
def get_storage() -> Storage:
    """The configured backend: S3 when a bucket is set, else the local folder."""
    if settings.AWS_STORAGE_BUCKET_NAME:
        from .s3 import S3Storage

        return S3Storage(prefix=settings.MIRROR_S3_PREFIX)
    from .local import LocalStorage

    return LocalStorage(settings.MIRROR_STORAGE_DIR)
