from django.contrib import admin
from django.urls import path, re_path

from mirror import health
from registries.views import v2

urlpatterns = [
    re_path(r"^v2/(?P<path>.*)$", v2),
    re_path(r"^v2$", v2),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
]
