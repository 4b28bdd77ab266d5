"""Domain errors of the core; each protocol app maps them to its own error format."""


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
