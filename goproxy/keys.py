"""Cache keys of Go answers: readable where they can be, hashed where they cannot.

A module's files are stored under `go/<scope><escaped module>/@v/<escaped version>.<ext>`,
where the scope is empty for public modules and `_private/<upstreams>/` for modules that
private upstreams own (see chain.Route), so a private module never shares a cache entry with a
public one of the same path. Module paths are valid up to 500 characters and a version up to
128, and an element may start with `-`: keys longer than storage and lease keys may be (512),
with an element longer than a file name may be (255 bytes), or otherwise not accepted by
storage are named by their SHA-256 instead.

A version's `.info` and `.mod` are documents (mirror/documents.py) keyed `<scope><module>@<version>`
in their own namespaces; lists and `@latest` are keyed `<scope><module>`. Document keys longer
than MAX_DOCUMENT_KEY are named by their SHA-256.
"""

from __future__ import annotations

import hashlib

from mirror.storage.base import check_key

from .paths import escape

MAX_DOCUMENT_KEY = 1000  # CachedDocument.key holds 1024
MAX_ELEMENT = 255  # NAME_MAX of local file systems


def file_key(scope: str, module: str, version: str, ext: str) -> str:
    key = f"go/{scope}{escape(module)}/@v/{escape(version)}.{ext}"
    try:
        if max(map(len, key.split("/"))) <= MAX_ELEMENT:
            return check_key(key)
    except ValueError:
        pass
    return f"go/_hashed/{hashlib.sha256(key.encode()).hexdigest()}.{ext}"


def small_file_key(scope: str, module: str, version: str) -> str:
    """The document key of a version's `.info` and `.mod` (service.SMALL_FILES), scoped
    like its files. A module path holds no `@`, so the key names one version."""
    return document_key(f"{scope}{module}@{version}")


def document_key(key: str) -> str:
    if len(key) <= MAX_DOCUMENT_KEY:
        return key
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"
