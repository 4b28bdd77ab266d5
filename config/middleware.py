"""Response rules for the whole site, in one middleware kept cheap for the protocol paths
(two comparisons per warm manifest or blob answer).

- An answer to HEAD carries no body (error answers, and pages such as the admin's that
  Django renders the same for HEAD as for GET). Its Content-Length stays what the GET would have
  (RFC 9110 9.3.2 allows it; Go's, containerd's and Python's clients read no body after a HEAD
  whatever it says). gunicorn drops such bytes itself, but logs a warning for each answer.
- An outage of the database or storage that reaches no protocol's own error mapping (the
  admin, the front page) is a plain 503 with Retry-After, not a 500 (`OutageAnswers`).
- The admin may not be framed and runs under a Content-Security-Policy (Django 5.2 has no CSP
  middleware). `X-Content-Type-Options: nosniff` on every answer comes from Django's
  SecurityMiddleware (SECURE_CONTENT_TYPE_NOSNIFF, on by default).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBase

from mirror.errors import DATABASE_DOWN, ServiceUnavailable, database_unavailable

ADMIN_CSP = (
    "default-src 'self'; frame-ancestors 'none'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'self'"
)


def site_rules(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        if request.method == "HEAD" and not response.streaming and response.content:
            response.setdefault("Content-Length", str(len(response.content)))
            response.content = b""
        if request.path_info.startswith("/admin/"):
            response["X-Frame-Options"] = "DENY"
            response["Content-Security-Policy"] = ADMIN_CSP
        return response

    return middleware


class OutageAnswers:
    """503 for a database or storage outage a view did not answer itself (see above)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_DOWN):
            exception = database_unavailable(exception)
        if not isinstance(exception, ServiceUnavailable):
            return None
        response = HttpResponse(
            f"service unavailable: {exception}\n", status=503, content_type="text/plain"
        )
        response["Retry-After"] = str(max(1, round(exception.retry_after)))
        return response
