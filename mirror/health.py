"""Liveness (the process answers) and readiness (database reachable, storage writable with room).

`/readyz` writes and removes a small probe in storage on every call (an S3 PUT and DELETE, or
a local file with an fsync): probe it every few seconds, not in a tight loop.
"""

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from .errors import StorageFull
from .storage import get_storage


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _unavailable(reason: str) -> JsonResponse:
    return JsonResponse({"status": "unavailable", "reason": reason}, status=503)


def readyz(request: HttpRequest) -> JsonResponse:
    # Any failure means "not ready"; the reason tells the operator which part failed.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as e:
        return _unavailable(f"database: {type(e).__name__}")
    try:
        get_storage().check_writable(settings.MIRROR_MIN_FREE_BYTES)
    except StorageFull as e:
        return _unavailable(str(e))
    except OSError as e:  # the local folder cannot even be set up in this process
        return _unavailable(f"storage not writable: {e}")
    except Exception as e:
        return _unavailable(f"storage: {type(e).__name__}")
    return JsonResponse({"status": "ok"})
