"""Domain errors of the core; each protocol app maps them to its own error format."""

import logging
import time

from django.db import InterfaceError, OperationalError

log = logging.getLogger(__name__)


class MirrorError(Exception):
    """Base of the core's errors."""


class UpstreamError(MirrorError):
    """The upstream could not give us the object."""


class UpstreamNotFound(UpstreamError):
    """The upstream answered 404 or 410: it does not have the object."""


class UpstreamDenied(UpstreamError):
    """The upstream refused our credentials (401/403 after authenticating)."""


class UpstreamUnavailable(UpstreamError):
    """The upstream is down, timed out, answered 5xx, or is rate-limiting us (429)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DigestMismatch(MirrorError):
    """The bytes received do not match the expected digest or size: nothing is committed."""


class InvalidContent(MirrorError):
    """Content failed a protocol's validity rules and is not cached."""


class UpstreamInvalid(UpstreamError):
    """The upstream answered, but not with something we accept: a body over its cap, a
    malformed or wrong-typed answer (JSON shape, media type, token answer), broken
    compression, a redirect loop. Maps to 502, or STALE where a cached answer exists."""


class StorageFull(MirrorError):
    """Storage has no room for the object (ENOSPC, or below the free-space floor): 507."""


class Overloaded(MirrorError):
    """Too many fills run in this process right now: 503 with Retry-After."""

    def __init__(self, message: str, retry_after: float = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(MirrorError):
    """A service the mirror itself stands on (its database, its storage) failed or did not
    answer in time: 503 with Retry-After in every protocol. Nothing was committed; the
    request may be retried as it is, and works again once the service is back."""

    def __init__(self, message: str, retry_after: float = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached, or lost the connection mid-query."""


class StorageUnavailable(ServiceUnavailable):
    """The object storage (S3) could not be reached, timed out, or answered an error."""


#: What Django raises when the database is unreachable or the connection broke (the driver's
#: errors wrapped): an outage, not a bug. Other DatabaseErrors (integrity, programming) are
#: left to surface as the bugs they are.
DATABASE_DOWN = (OperationalError, InterfaceError)


LOG_EVERY = 10.0
_outages: dict[str, tuple[float, int]] = {}  # service -> (last logged at, failures since)


def log_outage(service: str, reason: str) -> None:
    """Log a failure of `service` (the database, storage) as one warning line, without a
    traceback (the cause is the service's, not a code path's), at most every LOG_EVERY
    seconds per process with the count of those not logged: an outage fails every request."""
    now = time.monotonic()
    logged_at, unlogged = _outages.get(service, (-LOG_EVERY, 0))
    if now - logged_at < LOG_EVERY:
        _outages[service] = (logged_at, unlogged + 1)
        return
    _outages[service] = (now, 0)
    log.warning("%s unavailable: %s (%d more since the last line)", service, reason, unlogged)


def database_unavailable(e: Exception) -> DatabaseUnavailable:
    """The domain error for a DATABASE_DOWN error, logged by `log_outage`."""
    text = str(e).strip()
    log_outage("database", text.splitlines()[0][:300] if text else type(e).__name__)
    return DatabaseUnavailable("the mirror's database is unavailable")
