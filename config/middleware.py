"""Response rules for the whole site, in one middleware kept cheap for the protocol paths
(two comparisons per warm manifest or blob answer).

- An answer to HEAD carries no body (error answers, and pages such as the admin's that
  Django renders the same for HEAD as for GET). Its Content-Length stays what the GET would have
  (RFC 9110 9.3.2 allows it; Go's, containerd's and Python's clients read no body after a HEAD
  whatever it says). gunicorn drops such bytes itself, but logs a warning for each answer.
- The admin may not be framed and runs under a Content-Security-Policy (Django 5.2 has no CSP
  middleware). `X-Content-Type-Options: nosniff` on every answer comes from Django's
  SecurityMiddleware (SECURE_CONTENT_TYPE_NOSNIFF, on by default).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

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
