"""One error shape for the API: `{"detail": "...", "code": "..."}` (DRF's, with a code),
also for the core's errors a view lets through (upstream down, storage full)."""

from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from ..errors import MirrorError, StorageFull, UpstreamNotFound

_STATUS = [
    (UpstreamNotFound, status.HTTP_404_NOT_FOUND, "not_found"),
    (StorageFull, status.HTTP_507_INSUFFICIENT_STORAGE, "storage_full"),
    (MirrorError, status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable"),
]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_handler(exc, context)
    if response is not None:
        if isinstance(response.data, dict) and "detail" in response.data:
            response.data = {
                "detail": str(response.data["detail"]),
                "code": getattr(response.data["detail"], "code", "error"),
            }
        return response
    for kind, code, name in _STATUS:
        if isinstance(exc, kind):
            return Response({"detail": str(exc), "code": name}, status=code)
    return None
