"""The REST API's URLs: /api/v1/ (each app registers its endpoints on one router),
/api/schema/ (OpenAPI 3), /api/docs/ (Swagger UI, its scripts and styles served from this
host by whitenoise after `collectstatic`), and the API's own 404 for any other /api/ path."""

from django.urls import include, path, re_path
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
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    re_path(r"^api(?:/(?P<path>.*))?$", errors.not_found),
]
