"""The REST API's URLs: /api/v1/ (each app registers its endpoints on one router),
/api/schema/ (OpenAPI 3), /api/docs/ (Swagger UI, its scripts and styles served from this
host by whitenoise after `collectstatic`), and the API's own 404 for any other /api/ path.

config/urls.py includes these under `^api`, lazily: each pattern matches the rest of the path,
from its "/" on (a path such as /apix matches none of them, and goes on to the others)."""

from django.urls import include, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from goproxy import api as goproxy_api
from mirror.api import errors
from mirror.api import views as mirror_api
from registries import api as registries_api

router = DefaultRouter()
for app in (mirror_api, registries_api, goproxy_api):
    app.register(router)

urlpatterns = [
    re_path(r"^/v1/", include(router.urls)),
    re_path(r"^/schema/$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^/docs/$", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    re_path(r"^(?:/(?P<path>.*))?$", errors.not_found),
]
