"""One error shape for the API: `{"detail": "...", "code": "..."}` (DRF's, with a code), also
for the core's errors a view lets through (upstream down, storage full) and for the services
the API stands on (the database, the task queue): those are 503s, never 500s. A 400 keeps
DRF's messages by field (always an object: a bare list becomes `non_field_errors`).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from ..errors import MirrorError, StorageFull, UpstreamNotFound

log = logging.getLogger(__name__)

_STATUS = [
    (UpstreamNotFound, status.HTTP_404_NOT_FOUND, "not_found"),
    (StorageFull, status.HTTP_507_INSUFFICIENT_STORAGE, "storage_full"),
    (MirrorError, status.HTTP_503_SERVICE_UNAVAILABLE, "unavailable"),
]
# Services down: logged with their traceback, answered 503 with a short reason.
_SERVICES = [
    ((OperationalError, InterfaceError), "the database is unavailable"),
    (BrokerError, "the task queue is unavailable"),
]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = drf_handler(exc, context)
    if response is not None:
        if isinstance(response.data, dict) and "detail" in response.data:
            response.data = {
                "detail": str(response.data["detail"]),
                "code": getattr(response.data["detail"], "code", "error"),
            }
        elif isinstance(response.data, list):
            response.data = {"non_field_errors": response.data}
        return response
    for kind, code, name in _STATUS:
        if isinstance(exc, kind):
            return Response({"detail": str(exc), "code": name}, status=code)
    for kind, reason in _SERVICES:
        if isinstance(exc, kind):
            log.error("API request failed: %s", reason, exc_info=exc)
            return Response(
                {"detail": reason, "code": "unavailable"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": "5"},
            )
    return None


@csrf_exempt  # a 404 whatever the method: nothing here to protect
def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other path under /api/: the API's 404 (not the OCI error the rest of the site
    answers for unknown paths)."""
    return JsonResponse({"detail": "no such API endpoint", "code": "not_found"}, status=404)
