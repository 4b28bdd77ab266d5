"""Liveness (the process answers) and readiness (database and storage reachable)."""

from django.db import connection
from django.http import HttpRequest, JsonResponse

from .storage import get_storage


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        get_storage().stat("health/probe")
    except Exception as e:  # any failure means "not ready"; the reason helps the operator
        return JsonResponse({"status": "unavailable", "reason": type(e).__name__}, status=503)
    return JsonResponse({"status": "ok"})
