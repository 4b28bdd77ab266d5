from django.contrib import admin
from django.urls import URLResolver, path, re_path
from django.urls.resolvers import RegexPattern

from config import observability
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
    # The REST API (config/api.py), imported by the first request under /api (or the first
    # reverse()): Django REST framework and the OpenAPI generator are ~20 MiB of a worker's
    # memory, which workers that only serve the protocols never need. (`include` would import
    # it now.) Its patterns match what follows "api", from the "/" on.
    URLResolver(RegexPattern(r"^api"), "config.api"),
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
