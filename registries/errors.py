"""OCI distribution error codes, declared once, and the error envelope.

Every error answer carries `{"errors": [{"code", "message", "detail"}]}` and the
`Docker-Distribution-API-Version` header.
"""

from __future__ import annotations

import math
from typing import Any

from django.http import JsonResponse

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

# code -> HTTP status
CODES = {
    "BLOB_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "MANIFEST_INVALID": 400,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "TAG_INVALID": 400,
    "PAGINATION_NUMBER_INVALID": 400,
    "RANGE_INVALID": 416,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    # Not in the spec; distribution uses it for "upstream unreachable" in proxy mode. The
    # mirror also answers it with 502 (the upstream's answer was refused) and 507 (no room).
    "UNAVAILABLE": 503,
}


class RegistryError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        detail: Any = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.status = status or CODES[code]
        self.retry_after = retry_after

    def response(self) -> JsonResponse:
        body = {"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]}
        response = JsonResponse(body, status=self.status)
        response[API_VERSION[0]] = API_VERSION[1]
        if self.retry_after is not None:
            response["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return response
