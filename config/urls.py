from django.contrib import admin
from django.urls import path, re_path

from config import api, observability
from config.errors import bad_request, server_error
from config.frontpage import frontpage
from goproxy.views import goproxy, sumdb_proxy
from mirror import health
from registries.auth import token
from registries.views import not_found, v2

urlpatterns = [
    path("", frontpage),
    re_path(r"^v2/(?P<path>.*)$", v2),
    re_path(r"^v2$", v2),
    path("token", token),  # the OCI token endpoint (registries/auth.py)
    path("admin/", admin.site.urls),
    *api.urlpatterns,
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", observability.metrics),
    re_path(r"^sumdb/(?P<name>[^/]+)/(?P<path>.+)$", sumdb_proxy),
    # GOPROXY=https://mirror: module paths start with a domain, so they cannot clash with the
    # fixed paths above.
    re_path(r"^(?P<path>.+/(?:@v/[^/]+|@latest))$", goproxy),
]

# Everything this service answers is an API: unknown paths get a JSON error, not HTML.
handler404 = not_found
handler400 = bad_request
handler500 = server_error
